"""Endpoint killed → every node of a three-region cluster serves the new answer.

    .venv/bin/python bench/cluster_failover.py [--cycles 20] [--interval 100ms] [--fall 3]
                                               [--takeovers 5]

Starts a real etcd, three `dnsfailover serve` nodes (regions us, eu, ap, each probing from
its own 127.0.0.x source address), and two HTTP endpoints behind an active-active name
voted by majority.  Each cycle stops one endpoint's listener and polls all three nodes over
UDP every 2 ms until each of them answers without it (the time is the slowest node's),
then restores it and waits until all three answer it again.  Reports median and p99.

With --takeovers N it then kills the leader N times (SIGKILL): the time until another
node says it leads (the lease TTL is 2 s), and how many of the queries sent to the
surviving nodes meanwhile went unanswered; the killed node is restarted each time.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from etcd_support import Etcd
from failover_latency import arguments, machine, percentile, two_endpoint_config
from support import HttpEndpoints, Server

NAME = "www.example.test."
REGIONS = {"us": "127.0.0.101", "eu": "127.0.0.102", "ap": "127.0.0.103"}


def wait_all(servers: list[Server], want: tuple[str, ...], limit: float) -> float:
    start = time.perf_counter()
    pending = list(servers)
    while pending:
        pending = [s for s in pending if s.answer(NAME) != want]
        if time.perf_counter() - start > limit:
            raise SystemExit(f"{len(pending)} node(s) did not answer {want} within {limit}s")
        if pending:
            time.sleep(0.002)
    return time.perf_counter() - start


def leads(server: Server) -> bool:
    """What the node's own API says about its leadership."""
    assert server.api is not None
    try:
        with urllib.request.urlopen(f"{server.api}/api/v1/status", timeout=2) as resp:
            return bool(json.load(resp)["cluster"]["leader"])
    except OSError:
        return False


def takeover(servers: list[Server], start: Callable[[int], Server]) -> tuple[float, int, int]:
    """Kill the leader; return (seconds until another leads, queries asked, unanswered)."""
    alive = [s for s in servers if s.proc.poll() is None]
    leader = next(s for s in alive if leads(s))
    others = [s for s in alive if s is not leader]
    leader.proc.kill()
    leader.proc.wait()
    started = time.perf_counter()
    asked = unanswered = 0
    took = None
    while time.perf_counter() - started < 15:
        for s in others:
            asked += 1
            try:
                if not s.answer(NAME):
                    unanswered += 1
            except Exception:
                unanswered += 1
        if took is None and any(leads(s) for s in others):
            took = time.perf_counter() - started
        if took is not None and time.perf_counter() - started > took + 0.5:
            break
        time.sleep(0.01)
    if took is None:
        raise SystemExit("no new leader within 15 s")
    index = servers.index(leader)
    leader.stop()
    servers[index] = start(index)
    return took, asked, unanswered


def main() -> None:
    ap = arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--takeovers", type=int, default=0)
    args = ap.parse_args()

    endpoints = HttpEndpoints()
    a, b = "127.0.0.51", "127.0.0.52"
    ports = {addr: endpoints.start(addr) for addr in (a, b)}
    with tempfile.TemporaryDirectory() as tmp:
        etcd = Etcd(Path(tmp) / "etcd")
        etcd.start()
        regions = "\n".join(f"  {r}: {{source_address: {s}}}" for r, s in REGIONS.items())
        cfg = Path(tmp) / "bench.yaml"
        head = f"""regions:
{regions}
cluster:
  etcd: {{endpoints: ["{etcd.endpoint}"], prefix: /dnsfailover/bench}}
  lease_ttl: 2
"""
        # the check's quorum is the default, majority
        cfg.write_text(two_endpoint_config(args, a, b, ports, head))

        def start(index: int) -> Server:
            region = list(REGIONS)[index]
            return Server(
                cfg,
                Path(tmp) / f"{region}.db",
                "--region",
                region,
                "--node-id",
                f"node-{region}",
                "--log-level",
                "WARNING",
            )

        servers = [start(i) for i in range(len(REGIONS))]
        try:
            wait_all(servers, (a, b), 15)
            down: list[float] = []
            back: list[float] = []
            for i in range(args.cycles):
                victim = (a, b)[i % 2]
                survivor = b if victim == a else a
                time.sleep(0.05 + (i * 0.037) % 0.1)  # vary the phase against the probe timer
                endpoints.stop(victim)
                down.append(wait_all(servers, (survivor,), 10))
                endpoints.start(victim)
                back.append(wait_all(servers, (a, b), 10))
            takeovers: list[tuple[float, int, int]] = []
            for _ in range(args.takeovers):
                takeovers.append(takeover(servers, start))
                wait_all(servers, (a, b), 15)
        finally:
            for s in servers:
                s.stop()
            etcd.stop()
            endpoints.close()

    print(f"machine: {machine()}")
    print(
        f"config: 3 nodes (us, eu, ap) on one etcd, interval {args.interval}, timeout "
        f"{args.timeout}, fall {args.fall}, rise {args.rise}, quorum majority; "
        f"{args.cycles} cycles"
    )
    for label, values in (
        ("killed -> all 3 changed", down),
        ("restored -> all 3 back", back),
    ):
        print(
            f"{label:<26} median {statistics.median(values) * 1000:6.0f} ms   "
            f"p99 {percentile(values, 99) * 1000:6.0f} ms   "
            f"min {min(values) * 1000:5.0f} ms   max {max(values) * 1000:5.0f} ms"
        )
    if takeovers:
        times = [t for t, _, _ in takeovers]
        print(
            f"leader killed -> new leader median {statistics.median(times):.2f} s   "
            f"max {max(times):.2f} s ({len(times)} kills, lease TTL 2 s); queries to the "
            f"survivors meanwhile: {sum(q for _, q, _ in takeovers)}, unanswered "
            f"{sum(u for _, _, u in takeovers)}"
        )


if __name__ == "__main__":
    main()
