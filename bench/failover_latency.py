"""Endpoint killed → DNS answer changed, measured against the real `dnsfailover serve`.

    .venv/bin/python bench/failover_latency.py [--cycles 20] [--interval 100ms] [--fall 3]

Two HTTP endpoints on 127.0.0.x back an active-active name checked every --interval.
Each cycle stops one endpoint's listener (probes see connection refused), polls the server
over UDP every 2 ms until the answer drops it, then restores it and waits for it to return.
Reports the median and p99 of kill → answer changed and of restore → answer back.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import HttpEndpoints, Server

NAME = "www.example.test."


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def wait(server: Server, want: tuple[str, ...], limit: float) -> float:
    start = time.perf_counter()
    while server.answer(NAME) != want:
        if time.perf_counter() - start > limit:
            raise SystemExit(f"answer did not become {want} within {limit}s")
        time.sleep(0.002)
    return time.perf_counter() - start


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every failover benchmark takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--interval", default="100ms")
    ap.add_argument("--timeout", default="100ms")
    ap.add_argument("--fall", type=int, default=3)
    ap.add_argument("--rise", type=int, default=2)
    return ap


def two_endpoint_config(
    args: argparse.Namespace, a: str, b: str, ports: dict[str, int], head: str = ""
) -> str:
    """An active-active www over endpoints a and b, checked as the options say; `head` is
    YAML put before it (regions, cluster)."""
    return f"""{head}checks:
  web: {{type: http, path: /healthz, interval: {args.interval}, timeout: {args.timeout},
        rise: {args.rise}, fall: {args.fall}}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www:
        policy: active-active
        check: web
        endpoints:
          - {{address: {a}, check_port: {ports[a]}}}
          - {{address: {b}, check_port: {ports[b]}}}
"""


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()

    endpoints = HttpEndpoints()
    a, b = "127.0.0.51", "127.0.0.52"
    ports = {addr: endpoints.start(addr) for addr in (a, b)}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(two_endpoint_config(args, a, b, ports))
        server = Server(cfg, Path(tmp) / "state.db", "--log-level", "WARNING")
        try:
            wait(server, (a, b), 10)
            down: list[float] = []
            back: list[float] = []
            for i in range(args.cycles):
                victim = (a, b)[i % 2]
                survivor = b if victim == a else a
                time.sleep(0.05 + (i * 0.037) % 0.1)  # vary the phase against the probe timer
                endpoints.stop(victim)
                down.append(wait(server, (survivor,), 10))
                endpoints.start(victim)
                back.append(wait(server, (a, b), 10))
        finally:
            server.stop()
            endpoints.close()

    print(f"machine: {machine()}")
    print(
        f"config: interval {args.interval}, timeout {args.timeout}, fall {args.fall}, "
        f"rise {args.rise}; {args.cycles} cycles"
    )
    for label, values in (("killed -> answer changed", down), ("restored -> answer back", back)):
        print(
            f"{label:<26} median {statistics.median(values) * 1000:6.0f} ms   "
            f"p99 {percentile(values, 99) * 1000:6.0f} ms   "
            f"min {min(values) * 1000:5.0f} ms   max {max(values) * 1000:5.0f} ms"
        )


if __name__ == "__main__":
    main()
