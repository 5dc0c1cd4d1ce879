"""Failover at scale in a cluster: `bench/scale.py`'s zone served by several nodes on one etcd.

    .venv/bin/python bench/scale_cluster.py [--nodes 3] [--interval 300ms] [--cycles 10]
        [--static 100000] [--names 10000] [--endpoints 1000]

A real etcd and `--nodes` real `dnsfailover serve` processes (regions r0, r1, …, each
probing from its own 127.0.0.x source), all with the zone of `bench/scale.py`: `--static`
static records in a zone file and `--names` active-active names over `--endpoints` TCP
listeners (tcp check, timeout 100ms, fall 3, rise 2, quorum majority).  Each cycle kills one
endpoint and sweeps every node over UDP until all of them answer its names without it.

Reported once the nodes run: each process's CPU over 5 s with nothing changing. Per change:
the time until the *last* node serves the new answers (median, p99), the spread between the
first and the last node, whether all nodes serve one SOA serial, and the bytes written to
etcd for it (what etcd holds with a newer revision afterwards: the decision's name entries
and head, and the regions' health reports).

Every node probes every endpoint, so N nodes on one machine probe N times as much as one:
three nodes each probing 1,000 endpoints every 100ms take three quarters of a 2-core machine
(each probe process ~48% of a core).  `--interval` sets the check interval (the issue's
figure is at 100ms; at 300ms detection takes about 2 x 200ms longer).  The endpoints cost
next to nothing (see `scale.listen`): they stand in for servers on other machines.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from etcd_support import Etcd
from scale import (
    HZ,
    ORIGIN,
    Listeners,
    Resolver,
    address,
    children,
    machine,
    packed,
    percentile,
    rss_mb,
    serve,
    until,
    users,
    write_config,
)

PREFIX = "/dnsfailover/scale"


def etcd_range(endpoint: str, min_revision: int = 0) -> tuple[int, list[tuple[str, int]]]:
    """etcd's revision, and the (key, bytes) under PREFIX modified at or after
    `min_revision` (its JSON gateway: no client library needed)."""
    start = PREFIX.encode()
    end = start[:-1] + bytes([start[-1] + 1])
    body = {
        "key": base64.b64encode(start).decode(),
        "range_end": base64.b64encode(end).decode(),
        "min_mod_revision": str(min_revision),
        "keys_only": False,
    }
    req = urllib.request.Request(
        f"http://{endpoint}/v3/kv/range", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc = json.load(resp)
    kvs = [
        (base64.b64decode(kv["key"]).decode(), len(base64.b64decode(kv.get("value", ""))))
        for kv in doc.get("kvs", [])
    ]
    return int(doc["header"]["revision"]), kvs


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def own_cpu(pid: int) -> float:
    """CPU seconds of `pid` alone (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def steady_cpu(procs: list[subprocess.Popen[str]], etcd_pid: int | None, seconds: float) -> str:
    """% of a core over `seconds` with nothing changing: each node, its probe process, etcd."""
    nodes = [p.pid for p in procs]
    probes = [
        next(c for c in children(pid) if b"resource_tracker" not in cmdline(c)) for pid in nodes
    ]  # (multiprocessing's resource tracker is the other child)
    assert etcd_pid is not None
    every = [*nodes, *probes, etcd_pid]
    before = [own_cpu(pid) for pid in every]
    time.sleep(seconds)
    use = [(own_cpu(pid) - b) / seconds * 100 for pid, b in zip(every, before, strict=True)]
    n = len(nodes)
    return (
        f"nodes {', '.join(f'{u:.0f}' for u in use[:n])}; their probe processes "
        f"{', '.join(f'{u:.0f}' for u in use[n : 2 * n])}; etcd {use[-1]:.0f}"
    )


def soa_serial(resolver: Resolver) -> int:
    q = dns.message.make_query(ORIGIN, "SOA")
    reply = dns.query.udp(q, "127.0.0.1", port=resolver.port, timeout=2)
    return int(reply.answer[0][0].serial)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--interval", default="300ms")
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--static", type=int, default=100_000)
    ap.add_argument("--names", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=1_000)
    args = ap.parse_args()
    args.yaml = False
    print(f"machine: {machine()}")
    print(
        f"zone: {args.static} static records (zone file), {args.names} failover names over "
        f"{args.endpoints} endpoints; tcp {args.interval}/100ms fall 3; {args.nodes} nodes"
    )
    listeners = Listeners(args.endpoints)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        etcd = Etcd(tmp / "etcd")
        etcd.start()
        regions = {f"r{i}": f"127.0.0.{101 + i}" for i in range(args.nodes)}
        head = (
            f"cluster:\n  etcd: {{endpoints: ['{etcd.endpoint}'], prefix: {PREFIX}}}\n"
            "  lease_ttl: 2\nregions:\n"
            + "".join(f"  {r}: {{source_address: {a}}}\n" for r, a in regions.items())
        )
        cfg = write_config(tmp, args, head)
        procs: list[subprocess.Popen[str]] = []
        try:
            started = time.perf_counter()
            resolvers = []
            for i, region in enumerate(regions):
                proc, port = serve(
                    cfg, tmp / f"{region}.db", "--region", region, "--node-id", f"n{i}"
                )
                procs.append(proc)
                resolvers.append(Resolver(port))
            first = f"f0.{ORIGIN}"
            for r in resolvers:
                until(r, [first], lambda x: x[3] & 0xF == 0 and x[6:8] != b"\0\0", 600)
            print(
                f"start-up to every node's first answer: {time.perf_counter() - started:.1f} s;"
                f" RSS per node {', '.join(f'{rss_mb(p.pid):.0f}' for p in procs)} MB"
            )
            time.sleep(3)
            print(f"steady CPU, % of a core over 5 s: {steady_cpu(procs, etcd.pid, 5.0)}")
            last: list[float] = []
            spread: list[float] = []
            decision_bytes: list[int] = []
            report_bytes: list[int] = []
            serials_agree = 0
            rng = random.Random(11)
            for _ in range(args.cycles):
                e = rng.randrange(args.endpoints)
                names, gone = users(e, args), packed(address(e))
                time.sleep(1.0 + rng.random() * 0.2)
                revision, _ = etcd_range(etcd.endpoint)
                t0 = time.perf_counter()
                listeners.command("kill", [e])
                done = []
                for r in resolvers:
                    until(r, names, lambda x, g=gone: g not in x)
                    done.append(time.perf_counter() - t0)
                last.append(max(done))
                spread.append(max(done) - min(done))
                time.sleep(0.5)  # reports of the slower regions, a publish in flight
                serials = [soa_serial(r) for r in resolvers]
                serials_agree += len(set(serials)) == 1
                if len(set(serials)) > 1:
                    print(f"  serials differ: {serials}", flush=True)
                _, kvs = etcd_range(etcd.endpoint, revision + 1)
                decision_bytes.append(
                    sum(n + len(k) for k, n in kvs if "/names/" in k or k.endswith("/decision"))
                )
                report_bytes.append(sum(n + len(k) for k, n in kvs if "/reports/" in k))
                listeners.command("start", [e])
                for r in resolvers:
                    until(r, names, lambda x, g=gone: g in x)
            print(
                f"one endpoint killed -> its {len(users(0, args))} names changed on all "
                f"{args.nodes} nodes: median {statistics.median(last) * 1000:.0f} ms, p99 "
                f"{percentile(last, 99) * 1000:.0f} ms; first-to-last node spread median "
                f"{statistics.median(spread) * 1000:.0f} ms; one serial on every node in "
                f"{serials_agree}/{args.cycles} changes"
            )
            print(
                f"etcd bytes per change: decision (names + head) median "
                f"{statistics.median(decision_bytes):.0f} B, max {max(decision_bytes)} B; "
                f"health reports median {statistics.median(report_bytes):.0f} B"
            )
            print(f"RSS at the end: {', '.join(f'{rss_mb(p.pid):.0f}' for p in procs)} MB")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            listeners.close()
            etcd.close()


if __name__ == "__main__":
    main()
