"""Memory and build time of a big zone: the snapshot, then the fast path's templates.

    .venv/bin/python bench/zone_memory.py [--records 100000]

Builds a zone of --records record sets (A, AAAA, TXT and MX in turn), reports the build
time of ``ZoneSnapshot.build`` and the process RSS after it; then queries every name twice
through a :class:`FastTable` (the second query of a key builds its template) up to the
table's bound, and reports the time per query and the RSS with the full table.
Target: RSS < 300 MB for 100k records.

`--dnssec` measures instead `dnsfailover serve` (a subprocess, as users run it) with the same
zone in a zone file, signed (`dnssec: {}`: ECDSA P-256 CSK, NSEC) and unsigned, in `--rounds`
interleaved start-ups (the order alternates): start-up to the first answer of the last
record (with an RRSIG when signed), the node's RSS then, and its RSS after every name was
asked twice (DO=1 when signed: the fast path's templates).  Reported per start-up and as the
median of the per-round ratios signed/unsigned (target <= 2x).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dns_qps import BIN, stop
from scale import rss_mb as rss_of

from dnsfailover.model import RecordSet, Soa, ZoneContent
from dnsfailover.server.fast import MAX_ENTRIES, FastTable
from dnsfailover.server.zone import ZoneSnapshot

ORIGIN = "big.test."
TYPES = {"A": 1, "AAAA": 28, "TXT": 16, "MX": 15}


def machine() -> str:
    """Cores, CPU model and Python version, for the report."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def record(i: int) -> RecordSet:
    name = f"host{i}.{ORIGIN}"
    kind = i % 4
    if kind == 0:
        return RecordSet(name, "A", 300, (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",))
    if kind == 1:
        return RecordSet(name, "AAAA", 300, (f"2001:db8::{i >> 16:x}:{i & 0xFFFF:x}",))
    if kind == 2:
        return RecordSet(name, "TXT", 300, (f'"record {i} of the big zone"',))
    return RecordSet(name, "MX", 300, (f"10 mail{i % 100}.{ORIGIN}",))


def query(name: str, qtype: int, qid: int) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", qtype, 1)


OPT_DO = b"\0" + struct.pack("!HHIH", 41, 4096, 0x8000, 0)


RRSIG_IN = struct.pack("!HH", 46, 1)


def ask_all(port: int, records: list[RecordSet], dnssec: bool) -> tuple[int, int]:
    """Every record asked twice (DO=1 when `dnssec`), 100 queries in flight at most; returns
    how many second answers came back, and how many of them carried an RRSIG."""
    answered = signed = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        for start in range(0, len(records), 100):
            batch = records[start : start + 100]
            for qid in (1, 2):
                for i, rs in enumerate(batch):
                    wire = query(rs.name, TYPES[rs.rtype], qid * 1000 + i)
                    if dnssec:
                        wire = wire[:10] + b"\0\1" + wire[12:] + OPT_DO
                    sock.sendto(wire, ("127.0.0.1", port))
                for _ in batch:
                    try:
                        reply = sock.recv(65535)
                    except TimeoutError:
                        break
                    if qid == 2:
                        answered += 1
                        signed += RRSIG_IN in reply
    return answered, signed


def serve_once(records: list[RecordSet], signed: bool, tmp: Path) -> tuple[float, float, float]:
    """`serve` of the zone: (start-up s, node RSS MB at start, node RSS after `ask_all`)."""
    lines = [f"$ORIGIN {ORIGIN}", "$TTL 300"]
    lines += [f"{r.name} {r.ttl} {r.rtype} {r.values[0]}" for r in records]
    (tmp / "big.zone").write_text("\n".join(lines) + "\n")
    (tmp / "big.yaml").write_text(
        f"zones:\n  {ORIGIN}:\n    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}\n"
        f"    nameservers: [ns1.{ORIGIN}]\n    zone_file: big.zone\n"
        + ("    dnssec: {}\n" if signed else "")
    )
    state = tmp / f"{'signed' if signed else 'unsigned'}-{time.monotonic_ns()}.db"
    cmd = [str(BIN), "serve", str(tmp / "big.yaml"), "--dns", "127.0.0.1:0", "--api", "off"]
    cmd += ["--state", str(state), "--log-level", "WARNING"]
    started = time.perf_counter()
    with (tmp / "serve.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if " on " not in line:
            raise SystemExit(f"serve did not start: {line!r} {(tmp / 'serve.log').read_text()}")
        port = int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
        last = records[-3]  # the last record made (ns1 and the apex NS follow)
        while ask_all(port, [last], signed)[signed] == 0:
            if time.perf_counter() - started > 900:
                raise SystemExit(f"{last.name} not answered{' signed' if signed else ''}")
            time.sleep(0.1)
        startup = time.perf_counter() - started
        time.sleep(2)
        at_start = rss_of(proc.pid)
        answered, with_rrsig = ask_all(port, records[:-1], signed)
        if answered < len(records) - 1 or (signed and with_rrsig < answered):
            raise SystemExit(
                f"{answered} of {len(records) - 1} names answered, {with_rrsig} with an RRSIG"
            )
        time.sleep(2)
        return startup, at_start, rss_of(proc.pid)
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def dnssec_main(args: argparse.Namespace) -> None:
    soa_ns = RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",))
    ns1 = RecordSet(f"ns1.{ORIGIN}", "A", 300, ("127.0.0.1",))
    records = [record(i) for i in range(args.records)] + [ns1, soa_ns]
    print(f"zone: {args.records:,} record sets (A/AAAA/TXT/MX) in a zone file, `serve` started")
    print(f"{'round':<7}{'zone':<10}{'start-up s':>11}{'RSS MB':>8}{'after asking all':>18}")
    rounds = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            got = {}
            for signed in [r % 2 == 1, r % 2 == 0]:
                got[signed] = serve_once(records, signed, Path(d))
                startup, rss, asked = got[signed]
                label = "signed" if signed else "unsigned"
                print(f"{r + 1:<7}{label:<10}{startup:>11.1f}{rss:>8.0f}{asked:>18.0f}", flush=True)
            rounds.append(got)
    for i, what in ((1, "RSS at start"), (2, "RSS after asking every name twice")):
        ratio = statistics.median(g[True][i] / g[False][i] for g in rounds)
        print(f"{what}: signed/unsigned x{ratio:.2f} (median of per-round ratios; target <= 2)")
    ratio = statistics.median(g[True][0] / g[False][0] for g in rounds)
    print(f"start-up: signed/unsigned x{ratio:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--dnssec", action="store_true", help="serve signed vs unsigned (see above)")
    ap.add_argument("--rounds", type=int, default=3, help="with --dnssec: start-ups of each")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    if args.dnssec:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop `serve` on the way out
        dnssec_main(args)
        return
    base = rss_mb()
    soa = Soa(f"ns1.{ORIGIN}", f"hostmaster.{ORIGIN}", 1, 7200, 900, 1209600, 300, 3600)
    records = [record(i) for i in range(args.records)]
    records.append(RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)))
    content = ZoneContent(ORIGIN, soa, tuple(sorted(records, key=lambda r: (r.name, r.rtype))))
    gc.collect()
    with_content = rss_mb()

    start = time.perf_counter()
    snapshot = ZoneSnapshot.build([content])
    build = time.perf_counter() - start
    gc.collect()
    with_snapshot = rss_mb()

    table = FastTable(snapshot)
    keys = min(len(records) - 1, MAX_ENTRIES)
    start = time.perf_counter()
    for i in range(keys):
        rs = records[i]
        for qid in (1, 2):
            table.answer(query(rs.name, TYPES[rs.rtype], qid), tcp=False)
    learn = time.perf_counter() - start
    gc.collect()
    with_table = rss_mb()

    print(f"zone: {args.records:,} record sets (A/AAAA/TXT/MX)")
    print(f"RSS at start (interpreter + imports)   {base:8.1f} MB")
    print(f"RSS with the ZoneContent               {with_content:8.1f} MB")
    print(f"ZoneSnapshot.build                     {build:8.2f} s")
    print(f"RSS with the snapshot                  {with_snapshot:8.1f} MB")
    print(
        f"fast table: {len(table):,} templates learnt in {learn:.2f} s "
        f"({learn / (2 * keys) * 1e6:.0f} us per query while learning)"
    )
    print(f"RSS with snapshot + full fast table    {with_table:8.1f} MB")


if __name__ == "__main__":
    main()
