"""Fuzz the C hit path (`_mmsg.HitTable.reply` and `_mmsg.UdpLoop`) under ASan and UBSan.

    .venv/bin/python bench/fuzz_hits.py [--inputs 1000000] [--udp 50000] [--swaps 50000]
        [--seed N] [--no-asan]

The extension's sources (dnsfailover/server/_mmsg.c and _hits.c) are compiled with
``-fsanitize=address,undefined -fno-sanitize-recover=all`` into a temporary directory, and a
child Python runs with libasan preloaded (``PYTHONMALLOC=malloc``, so ASan sees every
allocation), that build imported as ``dnsfailover.server._mmsg`` in place of the installed
one.  The child fills a HitTable from a real FastTable that learnt a varied zone (plain
answers, weighted sets with their Cycle, NXDOMAIN, NODATA, DO, large payloads, ECS; the
zone, queries and mutations are in bench/hits_inputs.py), then:

- feeds ``--inputs`` inputs to ``HitTable.reply``: mutations of valid queries (bit flips,
  truncation, header counts and flags, label lengths, compression pointers, OPT fields and
  RDLEN, ECS fields, sizes up to 65535, 0x20 case, splices) and random bytes, each in a
  buffer of exactly its size (a read past the end is an ASan report).  Every reply the C
  path gives must be byte for byte the full path's (`wire.respond` on a twin snapshot whose
  weighted sets take the same turns);
- sends ``--udp`` of those inputs (at most 65507 bytes) from a client socket to a UdpLoop on
  127.0.0.1, in bursts: every hit's reply must arrive, in order, equal to a twin table's,
  and the misses the loop returns must be exactly the inputs the twin misses (those over the
  loop's 4096-byte buffer are dropped by it: neither);
- sends ``--swaps`` valid queries to a UdpLoop while a thread swaps its table all the time
  (the served one, carried copies it drops at once, None): each query is answered exactly
  as the twin answers it or returned as a miss, exactly once (tables freed by the loop's
  thread without the GIL while another thread swaps: ASan sees any use after free).

A differing reply fails the run (exit 1), a crash (ASan/UBSan abort, or any other death of
the child) too (exit 2), and the input that crashed is written to ``--crash-file``.
``--no-asan`` runs the installed build in-process.

Figures (2 cores shared with other work, load 2 to 4; gcc 12, ASan and UBSan on):

- seed 1: 1,000,000 inputs to HitTable.reply in 237 s (4,221/s), 182,754 of them hits, each
  byte for byte the full path's; 50,014 datagrams through a UdpLoop (9,044 replies checked,
  36,914 misses returned, 4,056 over its buffer dropped); 0 crashes, 0 differing replies.
- seed 2 (with the table swaps): 1,000,000 inputs in 245 s (4,075/s), 181,748 hits; 50,014
  UdpLoop datagrams (9,127 replies, 36,782 misses, 4,105 dropped); 50,016 queries while the
  loop's table was swapped 37,363 times (27,387 answered in C, the rest misses); 0 crashes,
  0 differing replies.

The harness was checked against planted bugs: a one-byte over-read in `hit()` (``pos > end``
for ``pos >= end`` in the label walk) is an ASan heap-buffer-overflow on an 18-byte input
within 20,000 inputs (the input saved to ``--crash-file``); accepting an OPT of EDNS version
1 in C makes tests/test_fuzz_hits.py fail with differing replies.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import mmap
import os
import random
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hits_inputs import Mutator, Seed, seeds, zone

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "dnsfailover/server/_mmsg.c", ROOT / "dnsfailover/server/_hits.c"]
MODULE = "dnsfailover.server._mmsg"
UDP_BUFSIZE = 4096  # the loop's buffer: longer datagrams are dropped by it (MSG_TRUNC)
UDP_MAX = 65507  # the largest IPv4 UDP payload
BURST = 32
MISMATCH = 3  # the child's exit status when a reply differed (anything else but 0: a crash)


def exact(data: bytes) -> Any:
    """`data` in a buffer of exactly its size (a ctypes array: malloc'ed past 16 bytes)."""
    return (ctypes.c_char * len(data)).from_buffer_copy(data)


@dataclass
class Figures:
    inputs: int = 0
    hits: int = 0
    seconds: float = 0.0
    udp_inputs: int = 0
    udp_hits: int = 0
    udp_misses: int = 0
    udp_dropped: int = 0
    udp_seconds: float = 0.0
    swap_inputs: int = 0
    swap_hits: int = 0
    swaps: int = 0
    mismatches: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        udp_rate = self.udp_inputs / self.udp_seconds if self.udp_seconds else 0.0
        return [
            f"HitTable.reply: {self.inputs} inputs in {self.seconds:.1f} s ({rate:.0f}/s), "
            f"{self.hits} hits compared byte for byte with wire.respond",
            f"UdpLoop: {self.udp_inputs} datagrams in {self.udp_seconds:.1f} s ({udp_rate:.0f}/s):"
            f" {self.udp_hits} replies checked, {self.udp_misses} misses returned,"
            f" {self.udp_dropped} over the {UDP_BUFSIZE}-byte buffer dropped",
            f"UdpLoop with its table swapped {self.swaps} times: {self.swap_inputs} queries,"
            f" {self.swap_hits} answered in C, the others returned as misses",
            f"differing replies: {len(self.mismatches)}",
        ]


class Tables:
    """A FastTable taught every seed twice (its HitTable filled), and the twin snapshot the
    full path answers from (its weighted sets have taken the same turns)."""

    def __init__(self, seed_list: list[Seed]) -> None:
        from dnsfailover.server.fast import FastTable
        from dnsfailover.server.wire import respond
        from dnsfailover.server.zone import ZoneSnapshot

        self.respond = respond
        self.served = ZoneSnapshot.build([zone()])
        self.reference = ZoneSnapshot.build([zone()])
        self.table = FastTable(self.served, c_hits=True)
        for _ in range(2):
            for s in seed_list:
                reply = self.table.answer(s.data, tcp=False)
                if reply != respond(self.reference, s.data, tcp=False):
                    raise AssertionError(f"the fast path differs for {s.data.hex()}")
        hits = self.table.hits
        if hits is None:
            raise SystemExit("the FastTable has no C HitTable: is the extension built?")
        self.hits = hits

    def expected(self, data: bytes) -> bytes | None:
        return self.respond(self.reference, data, tcp=False)


def fuzz_reply(
    figures: Figures, inputs: int, rng_seed: int, progress: Callable[[int], None] | None = None
) -> None:
    """`inputs` mutated queries through HitTable.reply; every hit checked with the full path."""
    seed_list = seeds()
    tables = Tables(seed_list)
    reply, expected = tables.hits.reply, tables.expected
    mutator = Mutator(seed_list, random.Random(rng_seed))
    start = time.perf_counter()
    for i, data in zip(range(inputs), mutator, strict=False):
        if progress is not None:
            progress(i)
        got = reply(exact(data))
        figures.inputs += 1
        if got is None:
            continue
        figures.hits += 1
        want = expected(data)
        if got != want and len(figures.mismatches) < 20:
            figures.mismatches.append(f"reply: query {data.hex()} C {got.hex()} full {want!r}")
    figures.seconds = time.perf_counter() - start


def fuzz_udp(figures: Figures, inputs: int, rng_seed: int) -> None:
    """`inputs` mutated queries sent to a UdpLoop over 127.0.0.1, in bursts of `BURST`."""
    from dnsfailover.server import _mmsg

    seed_list = seeds()
    served, twin = Tables(seed_list), Tables(seed_list)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client.bind(("127.0.0.1", 0))
    for s in (server, client):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    client.settimeout(10)
    loop = _mmsg.UdpLoop(server.fileno(), 64, UDP_BUFSIZE)
    loop.set_table(served.hits, "owner")
    misses: list[bytes] = []
    arrived = threading.Condition()
    stopping = False
    owners: set[object] = set()

    def run() -> None:
        while not stopping:
            try:
                owner, batch = loop.run()
            except OSError:
                continue
            with arrived:
                owners.add(owner)
                misses.extend(data for data, _host, _addr in batch)
                arrived.notify_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    address = server.getsockname()
    mutator = Mutator(seed_list, random.Random(rng_seed))
    want_misses: list[bytes] = []
    start = time.perf_counter()
    try:
        sent = 0
        while sent < inputs:
            burst = [d for d in (mutator.one() for _ in range(BURST)) if len(d) <= UDP_MAX]
            want: list[bytes] = []
            for data in burst:
                if len(data) > UDP_BUFSIZE:
                    figures.udp_dropped += 1
                    continue
                expected = twin.hits.reply(data)
                if expected is None:
                    want_misses.append(data)
                else:
                    want.append(expected)
            for data in burst:
                client.sendto(data, address)
            sent += len(burst)
            figures.udp_inputs += len(burst)
            got = [client.recv(0xFFFF) for _ in want]  # a lost reply times out: a failure
            figures.udp_hits += len(got)
            if got != want and len(figures.mismatches) < 20:
                figures.mismatches.append(f"udp: burst of {len(burst)}: replies differ")
            with arrived:
                if not arrived.wait_for(lambda: len(misses) >= len(want_misses), timeout=10):
                    figures.mismatches.append("udp: misses not returned")
                    break
        with arrived:
            if misses != want_misses:
                figures.mismatches.append("udp: the misses returned differ")
            if owners != {"owner"}:
                figures.mismatches.append(f"udp: run() returned owners {owners!r}")
        figures.udp_misses = len(misses)
        client.settimeout(0.2)
        try:  # nothing more may come back
            extra = client.recv(0xFFFF)
            figures.mismatches.append(f"udp: an unexpected datagram {extra.hex()}")
        except TimeoutError:
            pass
    finally:
        figures.udp_seconds = time.perf_counter() - start
        stopping = True
        loop.stop()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        thread.join(10)
        server.close()
        client.close()


def fuzz_swaps(figures: Figures, inputs: int, rng_seed: int) -> None:
    """`inputs` valid queries (weighted names aside) sent to a UdpLoop in bursts while
    another thread swaps its table all the time (the served table, carried copies of it that
    it then drops, None): every query is answered with the expected reply or returned as a
    miss, exactly once, and a table dropped while the loop answers from it is not used
    after it is freed (what ASan checks here)."""
    from dnsfailover.server import _mmsg

    seed_list = [s for s in seeds() if not s.data[12:].startswith(b"\x01w\x04fuzz")]
    served, twin = Tables(seed_list), Tables(seed_list)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client.bind(("127.0.0.1", 0))
    client.settimeout(10)
    loop = _mmsg.UdpLoop(server.fileno(), 64, UDP_BUFSIZE)
    loop.set_table(served.hits, "owner")
    misses: list[bytes] = []
    arrived = threading.Condition()
    stopping = threading.Event()

    def run() -> None:
        while not stopping.is_set():
            try:
                _owner, batch = loop.run()
            except OSError:
                continue
            with arrived:
                misses.extend(data for data, _host, _addr in batch)
                arrived.notify_all()

    def swap() -> None:
        rng = random.Random(rng_seed)
        while not stopping.is_set():
            roll = rng.random()
            if roll < 0.4:
                loop.set_table(served.hits, "owner")
            elif roll < 0.8:  # a copy sharing the entries, dropped at the next swap
                copy = served.table.carried(served.served, frozenset()).hits
                loop.set_table(copy, "owner")
                del copy
            else:
                loop.set_table(None, "owner")
            figures.swaps += 1
            time.sleep(rng.choice([0, 0, 0.0002, 0.001]))

    threads = [threading.Thread(target=run, daemon=True), threading.Thread(target=swap)]
    for t in threads:
        t.start()
    address = server.getsockname()
    rng = random.Random(rng_seed + 1)
    try:
        sent = 0
        while sent < inputs:
            burst = []
            for qid in range(BURST):  # IDs 0..BURST-1: which reply or miss is whose
                query = bytearray(rng.choice(seed_list).data)
                query[0:2] = struct.pack("!H", qid)
                burst.append(bytes(query))
            expected = [twin.hits.reply(q) for q in burst]
            with arrived:
                del misses[:]
            for data in burst:
                client.sendto(data, address)
            sent += len(burst)
            answered: dict[int, bytes] = {}
            deadline = time.monotonic() + 30  # (a lost reply or miss: a failure)
            with arrived:
                missed = {struct.unpack_from("!H", m)[0] for m in misses}
            while len(answered) + len(missed) < len(burst):
                try:
                    client.settimeout(0.05)
                    reply = client.recv(0xFFFF)
                except TimeoutError:
                    with arrived:
                        missed = {struct.unpack_from("!H", m)[0] for m in misses}
                    if time.monotonic() > deadline:
                        figures.mismatches.append("swaps: replies and misses missing")
                        return
                    continue
                qid = struct.unpack_from("!H", reply)[0]
                if qid in answered or reply != expected[qid]:
                    figures.mismatches.append(f"swaps: reply {reply.hex()} to {burst[qid].hex()}")
                answered[qid] = reply
                with arrived:
                    missed = {struct.unpack_from("!H", m)[0] for m in misses}
            with arrived:
                if len(misses) != len(missed) or missed & answered.keys():
                    figures.mismatches.append("swaps: a query both answered and missed")
            figures.swap_inputs += len(burst)
            figures.swap_hits += len(answered)
    finally:
        stopping.set()
        loop.stop()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(10)
        server.close()
        client.close()


def build_asan(into: Path) -> Path:
    """The extension compiled with ASan and UBSan; the path of the shared object."""
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = into / f"_mmsg{suffix}"
    cmd = ["gcc", "-shared", "-fPIC", "-O1", "-g", "-std=gnu11", "-fno-omit-frame-pointer"]
    cmd += ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", f"-I{include}"]
    cmd += [str(s) for s in SOURCES] + ["-o", str(target)]
    subprocess.run(cmd, check=True)
    return target


def load_as_extension(path: Path) -> ModuleType:
    """Import the shared object at `path` as ``dnsfailover.server._mmsg`` (before anything of
    the package imports the installed one)."""
    if any(name.startswith("dnsfailover.server") for name in sys.modules):
        raise RuntimeError("dnsfailover.server was imported before the ASan build")
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    return module


def child(args: argparse.Namespace) -> int:
    """The run inside the sanitized process (or in-process with --no-asan)."""
    mark: mmap.mmap | None = None
    if args.extension:
        module = load_as_extension(Path(args.extension))
        with open(args.mark, "r+b") as f:
            mark = mmap.mmap(f.fileno(), 8)
    # the package's modules take the extension from sys.modules
    from dnsfailover.server import fast, weighted

    loaded = sys.modules[MODULE]
    if args.extension and (
        loaded is not module
        or getattr(fast, "HitTable", None) is not module.HitTable
        or getattr(weighted, "Cycle", None) is not module.Cycle
    ):
        raise SystemExit("the ASan build is not the one in use")
    print(f"extension: {loaded.__file__}", flush=True)
    figures = Figures()

    def progress(i: int) -> None:
        if mark is not None:
            struct.pack_into("<q", mark, 0, i)
        if i and i % 100_000 == 0:
            print(f"  {i} inputs", flush=True)

    fuzz_reply(figures, args.inputs, args.seed, progress)
    if mark is not None:
        struct.pack_into("<q", mark, 0, -1)
    fuzz_udp(figures, args.udp, args.seed + 1)
    fuzz_swaps(figures, args.swaps, args.seed + 2)
    for line in figures.lines():
        print(line)
    for m in figures.mismatches:
        print(m)
    return MISMATCH if figures.mismatches else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--udp", type=int, default=50_000, help="inputs sent to a UdpLoop")
    parser.add_argument("--swaps", type=int, default=50_000, help="queries while tables swap")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-asan", action="store_true", help="the installed build, no ASan")
    parser.add_argument("--crash-file", type=Path, default=Path("fuzz_hits_crash.bin"))
    parser.add_argument("--extension", help=argparse.SUPPRESS)  # (the child's)
    parser.add_argument("--mark", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.extension or args.no_asan:
        if args.no_asan:
            print("ASan: off (the installed build)")
        return child(args)
    with tempfile.TemporaryDirectory(prefix="fuzz_hits-") as tmp:
        started = time.perf_counter()
        so = build_asan(Path(tmp))
        mark = Path(tmp) / "mark"
        mark.write_bytes(struct.pack("<q", -1))
        asan = subprocess.run(
            ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
        ).stdout.strip()
        env = dict(os.environ, LD_PRELOAD=asan, PYTHONMALLOC="malloc")
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:exitcode=86"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        print(f"ASan+UBSan: on ({asan}), build {so.name}, seed {args.seed}", flush=True)
        cmd = [sys.executable, __file__, "--extension", str(so), "--mark", str(mark)]
        cmd += ["--inputs", str(args.inputs), "--udp", str(args.udp), "--seed", str(args.seed)]
        cmd += ["--swaps", str(args.swaps)]
        code = subprocess.run(cmd, env=env).returncode
        print(f"wall time with the build: {time.perf_counter() - started:.1f} s")
        if code in (0, MISMATCH):
            print("crashes: 0")
            return 0 if code == 0 else 1
        (index,) = struct.unpack("<q", mark.read_bytes())
        print(f"crashes: 1 (exit {code}), input #{index} of seed {args.seed}")
        if index >= 0:
            mutator = Mutator(seeds(), random.Random(args.seed))
            for _ in range(index):
                mutator.one()
            args.crash_file.write_bytes(mutator.one())
            print(f"the input is in {args.crash_file}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
