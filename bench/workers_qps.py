"""CPU per query of each process of `dnsfailover serve --workers N`, as users run it.

    .venv/bin/python bench/workers_qps.py [--workers 2] [--rounds 3] [--seconds 8]

`serve --workers N` (`bench/dns_qps.py`'s zone and health-checked `www`, the processes
pinned to cores 0-1, the HTTP API on) answers dnsperf (closed loop, `-c 8 -q 100` from
core 1: eight client sockets, which the kernel spreads over the processes by their ports).
Each round reads every process's CPU time (/proc) and what it answered (the status'
`workers.responses` for the workers, `/metrics`' `dnsfailover_dns_responses_total` minus
those for the main process) before the run and once the workers wrote their last counts
after it (`COUNTS_PERIOD`), and prints per process: queries answered, CPU per query, and
the kernel's share; and whether the processes' answers add up to dnsperf's.  The main
process's CPU includes its engine and API, not its probe process (`bench/dns_qps.py` counts
every process together).  Needs `dnsperf`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import qps_servers
from dns_qps import QUERY_SETS, cpu_times, dnsperf, machine, wait_ready

from dnsfailover.server.worker_process import COUNTS_PERIOD


def api(server: qps_servers.Running, path: str) -> str:
    assert server.api is not None
    with urllib.request.urlopen(f"{server.api}{path}", timeout=5) as r:
        body: bytes = r.read()
    return body.decode()


def answered(server: qps_servers.Running) -> dict[int, int]:
    """Responses sent so far, by process id (the main process's pid, then the workers')."""
    workers = json.loads(api(server, "/api/v1/status"))["workers"]
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in api(server, "/metrics").splitlines()
        if line.startswith("dnsfailover_dns_responses_total{")
    )
    each = dict(zip(workers["pids"], workers["responses"], strict=True))
    return {server.proc.pid: int(total) - sum(each.values()), **each}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    variant: qps_servers.Variant = (
        f"dnsfailover --workers {args.workers}",
        "0,1",
        ["--workers", str(args.workers), "--api", "127.0.0.1:0"],
        {},
    )
    listeners = qps_servers.Listeners()
    per_query: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            for r in range(1, args.rounds + 1):
                where = Path(d) / f"round-{r}"
                with qps_servers.started(
                    "workers", where, listeners.port, variant=variant
                ) as server:
                    wait_ready(server)
                    before = answered(server)
                    cpu0 = {pid: cpu_times([pid]) for pid in before}
                    qps, done, _lost, _ms = dnsperf(
                        server.port, QUERY_SETS["health"], args.seconds, where,
                        ("-c", "8"), strict=True,
                    )  # fmt: skip
                    time.sleep(COUNTS_PERIOD + 0.2)  # the workers' last counts written
                    after = answered(server)
                    counted = sum(after.values()) - sum(before.values())
                    print(
                        f"round {r}: {qps:,.0f} QPS, {done:,} queries; the processes counted "
                        f"{counted:,} answers",
                        flush=True,
                    )
                    for i, pid in enumerate(before):
                        user, system = (
                            a - b for a, b in zip(cpu_times([pid]), cpu0[pid], strict=True)
                        )
                        n = after[pid] - before[pid]
                        who = "main" if i == 0 else f"worker {i}"
                        us = (user + system) / n * 1e6 if n else float("nan")
                        share = system / (user + system) if user + system else 0.0
                        if n:
                            per_query.setdefault(who, []).append(us)
                        print(
                            f"  {who:<9} pid {pid}: {n:>9,} answered, {us:6.2f} us/query, "
                            f"{share:.0%} in the kernel",
                            flush=True,
                        )
    finally:
        listeners.close()
    print("median CPU per query by process (rounds it answered in):")
    for who, values in per_query.items():
        print(f"  {who:<9} {statistics.median(values):6.2f} us/query ({len(values)} rounds)")


if __name__ == "__main__":
    main()
