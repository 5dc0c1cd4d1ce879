"""Signatures per second and CPU per signature of the signer (`dnsfailover.dnssec.sign`).

    .venv/bin/python bench/dnssec_sign.py [--sizes 1000,10000] [--algorithms 13,15]

For each algorithm and size N: N A RRsets (`hN.bench.test.`, two addresses each, as a
failover answer), one key (a CSK), signed one by one with `sign.sign` as a failover
re-signs the RRsets it changed; reports wall time, signatures per second and process CPU
per signature, then the same N names' NSEC and NSEC3 chains (built, not signed: a reload's
cost on top of the signatures).  Figures: docs/dnssec.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dns.name
import dns.rrset

from dnsfailover.dnssec import denial, keys, sign


def _rrsets(n: int) -> list[dns.rrset.RRset]:
    return [
        dns.rrset.from_text(
            f"h{i}.bench.test.", 30, "IN", "A", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            f"10.200.{i >> 8 & 255}.{i & 255}",
        )
        for i in range(n)
    ]  # fmt: skip


def run(algorithm: int, n: int, directory: Path) -> None:
    keyset = keys.ensure(directory / f"k{algorithm}", "bench.test.", algorithm, "csk")
    rrsets = _rrsets(n)
    policy = sign.Policy()
    now = time.time()
    wall, cpu = time.perf_counter(), time.process_time()
    for rrset in rrsets:
        sign.sign(rrset, keyset.zsks, now, policy)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    origin = dns.name.from_text("bench.test.")
    names = denial.authoritative(origin, denial.owner_types(rrsets))
    started = time.perf_counter()
    denial.nsec_chain(origin, names, 30)
    nsec = time.perf_counter() - started
    started = time.perf_counter()
    denial.nsec3_chain(origin, names, 30)
    nsec3 = time.perf_counter() - started
    print(
        f"alg {algorithm:>2} {keys.ALGORITHMS[algorithm]:<16} {n:>6} RRsets: "
        f"{wall:6.2f} s, {n / wall:7.0f} sig/s, {cpu / n * 1e6:6.1f} us CPU/sig; "
        f"chain nsec {nsec:5.2f} s, nsec3 {nsec3:5.2f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--algorithms", default="13,15")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm in (int(a) for a in args.algorithms.split(",")):
            for n in (int(s) for s in args.sizes.split(",")):
                run(algorithm, n, Path(tmp))


if __name__ == "__main__":
    main()
