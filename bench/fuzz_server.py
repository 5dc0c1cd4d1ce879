"""Run the atheris fuzzer on the DNS answer path and report inputs run and crashes found.

    .venv/bin/python bench/fuzz_server.py --runs 1000000 [--max-time 1800] [--keep DIR]

Needs ``pip install atheris``.  The corpus is generated at start from valid queries (every
code path of the server: answers, wildcards, referrals, EDNS options, well-formed and
malformed Client Subnet options, other opcodes), and crash files go to a temporary
directory (or ``--keep DIR``), never into the repository.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.opcode
import dns.update

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "fuzz" / "fuzz_respond.py"

NAMES = [
    ("www.example.test.", "A"),
    ("alias.example.test.", "A"),
    ("chain1.example.test.", "AAAA"),
    ("loop1.example.test.", "A"),
    ("big.example.test.", "A"),
    ("huge.example.test.", "A"),
    ("nope.example.test.", "TXT"),
    ("b.example.test.", "A"),
    ("example.test.", "ANY"),
    ("example.test.", "CAA"),
    ("_sip._udp.example.test.", "SRV"),
    ("1.2.0.192.in-addr.arpa.", "PTR"),
    ("host.sub.example.test.", "A"),
    ("anything.wild.test.", "A"),
    ("*.wild.test.", "TXT"),
    ("x.alias.wild.test.", "A"),
    ("y.loop.wild.test.", "A"),
    ("x.ent.wild.test.", "A"),
    ("sub.wild.test.", "NS"),
    ("sub.wild.test.", "DS"),
    ("www.sub.wild.test.", "A"),
    ("into-sub.wild.test.", "A"),
    ("www.example.test.", "TYPE666"),
    ("outside.invalid.", "A"),
    ("w.weighted.test.", "A"),
    ("w.weighted.test.", "AAAA"),
    ("alias.weighted.test.", "A"),
    ("w.weighted.test.", "ANY"),
]

ECS_SEEDS = [
    dns.edns.ECSOption("192.0.2.0", 24),
    dns.edns.ECSOption("2001:db8::", 56),
    dns.edns.ECSOption("0.0.0.0", 0),
    dns.edns.ECSOption("203.0.113.128", 25),
]
ECS_MALFORMED = [  # option data: bad family, prefix too long, address long/short, bits, scope
    b"\x00\x03\x18\x00\xc0\x00\x02",
    b"\x00\x01\x21\x00\xc0\x00\x02\x00\x00",
    b"\x00\x01\x18\x00\xc0\x00\x02\x00",
    b"\x00\x01\x18\x00\xc0\x00",
    b"\x00\x01\x17\x00\xc0\x00\x03",
    b"\x00\x01\x18\x18\xc0\x00\x02",
    b"",
]


def corpus() -> list[bytes]:
    """Valid queries, each prefixed with the transport byte the harness reads."""
    queries: list[bytes] = []
    for name, rdtype in NAMES:
        queries.append(dns.message.make_query(name, rdtype).to_wire())
        queries.append(
            dns.message.make_query(
                name,
                rdtype,
                use_edns=0,
                payload=512,
                want_dnssec=True,
                options=[dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"\x00\x01")],
            ).to_wire()
        )
    queries.append(dns.message.make_query("www.example.test.", "A", use_edns=1).to_wire())
    # EDNS Client Subnet (RFC 7871): well-formed (echoed) and malformed (FORMERR) options
    for option in ECS_SEEDS:
        for name, rdtype in NAMES[:3] + NAMES[6:7] + NAMES[13:14]:
            queries.append(
                dns.message.make_query(name, rdtype, use_edns=0, options=[option]).to_wire()
            )
    plain = dns.message.make_query("www.example.test.", "A", use_edns=0).to_wire()
    for data in ECS_MALFORMED:
        rdata = struct.pack("!HH", 8, len(data)) + data
        queries.append(plain[:-2] + struct.pack("!H", len(rdata)) + rdata)
    queries.append(dns.message.make_query("www.example.test.", "A", rdclass="CH").to_wire())
    notify = dns.message.make_query("example.test.", "SOA", use_edns=0)
    notify.set_opcode(dns.opcode.NOTIFY)
    queries.append(notify.to_wire())
    update = dns.update.UpdateMessage("example.test.")
    update.use_edns(0)
    update.delete("www")
    update.add("new", 300, "A", "192.0.2.9")
    queries.append(update.to_wire())
    return [bytes([tcp]) + query for query in queries for tcp in (0, 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs to run")
    parser.add_argument("--max-time", type=int, default=3600, help="seconds, at most")
    parser.add_argument("--max-len", type=int, default=1024, help="longest input, bytes")
    parser.add_argument("--keep", type=Path, help="directory for the corpus and crash files")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fuzz-server-") as tmp:
        work = args.keep or Path(tmp)
        seeds, artifacts = work / "corpus", work / "artifacts"
        seeds.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(exist_ok=True)
        for index, seed in enumerate(corpus()):
            (seeds / f"seed-{index:03d}").write_bytes(seed)
        command = [
            sys.executable,
            str(HARNESS),
            str(seeds),
            f"-runs={args.runs}",
            f"-max_total_time={args.max_time}",
            f"-max_len={args.max_len}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
        started = time.monotonic()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", done.stderr)
        crashes = sorted(p.name for p in artifacts.iterdir())
        print(f"inputs run: {runs[-1] if runs else '?'} in {elapsed:.0f}s (exit {done.returncode})")
        print(f"crashes: {len(crashes)} {' '.join(crashes)}")
        if done.returncode != 0 or crashes:
            print(done.stderr[-4000:], file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
