"""Memory and build time of a big zone: the snapshot, then the fast path's templates.

    .venv/bin/python bench/zone_memory.py [--records 100000]

Builds a zone of --records record sets (A, AAAA, TXT and MX in turn), reports the build
time of ``ZoneSnapshot.build`` and the process RSS after it; then queries every name twice
through a :class:`FastTable` (the second query of a key builds its template) up to the
table's bound, and reports the time per query and the RSS with the full table.
Target: RSS < 300 MB for 100k records.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import struct
import time
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    args = ap.parse_args()
    print(f"machine: {machine()}")
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
