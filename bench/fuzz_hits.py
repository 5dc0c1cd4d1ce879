"""Fuzz the C hit path (`_mmsg.HitTable.reply` and `_mmsg.UdpLoop`) under ASan and UBSan.

    .venv/bin/python bench/fuzz_hits.py [--inputs 1000000] [--udp 50000] [--swaps 50000]
        [--seed N] [--no-asan]

The extension's sources (dnsfailover/server/_mmsg.c and _hits.c) are compiled with
``-fsanitize=address,undefined -fno-sanitize-recover=all`` into a temporary directory, and a
child Python runs with libasan preloaded (``PYTHONMALLOC=malloc``, so ASan sees every
allocation), that build imported as ``dnsfailover.server._mmsg`` in place of the installed
one.  The child fills a HitTable from a real FastTable that learnt a varied zone (plain
answers, weighted sets with their Cycle, NXDOMAIN, NODATA, DO, large payloads, ECS), then:

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "dnsfailover/server/_mmsg.c", ROOT / "dnsfailover/server/_hits.c"]
MODULE = "dnsfailover.server._mmsg"
ORIGIN = "fuzz.test."
UDP_BUFSIZE = 4096  # the loop's buffer: longer datagrams are dropped by it (MSG_TRUNC)
UDP_MAX = 65507  # the largest IPv4 UDP payload
BURST = 32
MISMATCH = 3  # the child's exit status when a reply differed (anything else but 0: a crash)

NAMES: list[tuple[str, int]] = [
    (ORIGIN, 6),  # SOA
    (ORIGIN, 2),  # NS
    (f"www.{ORIGIN}", 1),
    (f"www.{ORIGIN}", 28),  # NODATA
    (f"www.{ORIGIN}", 255),
    (f"w.{ORIGIN}", 1),  # weighted
    (f"w.{ORIGIN}", 28),  # weighted
    (f"txt.{ORIGIN}", 16),
    (f"big.{ORIGIN}", 16),  # over 512 bytes: only a large payload is a hit
    (f"mx.{ORIGIN}", 15),
    (f"alias.{ORIGIN}", 1),  # CNAME to www
    (f"x.wild.{ORIGIN}", 1),  # wildcard
    (f"nope.{ORIGIN}", 1),  # NXDOMAIN
    (f"a.b.c.d.e.f.g.h.i.j.k.l.m.{ORIGIN}", 1),  # NXDOMAIN, long name
    ("elsewhere.invalid.", 1),  # REFUSED
]
FLAGS = [0, 0x0100, 0x0120, 0x0110, 0x0030, 0x0020]
ECS = [  # (family, source, address): plain options the hit path echoes
    (1, 24, bytes([192, 0, 2])),
    (2, 56, bytes.fromhex("20010db800000000")[:7]),
    (1, 0, b""),
    (1, 25, bytes([203, 0, 113, 128])),
    (1, 32, bytes([198, 51, 100, 7])),
]
EDNS: list[tuple[int, int, int] | None] = [  # (payload, DO, ECS index or -1)
    None,
    (1232, 0, -1),
    (1232, 1, -1),
    (4096, 0, -1),
    (4096, 1, -1),
    (512, 0, -1),
    (1232, 0, 0),
    (1232, 1, 1),
    (4096, 0, 2),
    (1232, 0, 3),
    (1400, 1, 4),
]
INTERESTING = [0, 1, 2, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFE, 0xFF]
INTERESTING16 = [0, 1, 2, 3, 8, 11, 41, 0x7FFF, 0x8000, 0xFFFF]


def zone() -> Any:
    """The zone the tables learn (imported late: the child imports the ASan build first)."""
    from dnsfailover.model import RecordSet, Soa, ZoneContent

    soa = Soa(f"ns1.{ORIGIN}", f"hostmaster.{ORIGIN}", 7, 7200, 900, 1209600, 300, 3600)
    sets = [
        RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
        RecordSet(f"*.wild.{ORIGIN}", "A", 60, ("192.0.2.99",)),
        RecordSet(f"alias.{ORIGIN}", "CNAME", 60, (f"www.{ORIGIN}",)),
        RecordSet(f"big.{ORIGIN}", "TXT", 300, tuple(f'"{i}{"x" * 200}"' for i in range(4))),
        RecordSet(f"mx.{ORIGIN}", "MX", 300, (f"10 www.{ORIGIN}", f"20 w.{ORIGIN}")),
        RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)),
        RecordSet(f"txt.{ORIGIN}", "TXT", 300, ('"hello"', '"v=spf1 -all"')),
        RecordSet(f"w.{ORIGIN}", "A", 30, ("192.0.2.1", "192.0.2.2", "192.0.2.3"), (5, 1, 2)),
        RecordSet(f"w.{ORIGIN}", "AAAA", 30, ("2001:db8::1", "2001:db8::2"), (1, 3)),
        RecordSet(f"www.{ORIGIN}", "A", 300, ("192.0.2.10", "192.0.2.11")),
    ]
    sets.sort(key=lambda r: (r.name, r.rtype))
    return ZoneContent(ORIGIN, soa, tuple(sets))


def wire_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def ecs_option(family: int, source: int, address: bytes, scope: int = 0) -> bytes:
    data = struct.pack("!HBB", family, source, scope) + address
    return struct.pack("!HH", 8, len(data)) + data


@dataclass(frozen=True)
class Seed:
    """A valid query and where its fields are (for the field mutations)."""

    data: bytes
    qend: int  # end of the question
    labels: tuple[int, ...]  # offsets of the question's label length bytes


def seeds() -> list[Seed]:
    """Every name and type with every flag set and EDNS kind the hit path knows."""
    out = []
    rng = random.Random(0)
    for name, qtype in NAMES:
        qname = wire_name(name)
        labels, at = [], 12
        while qname[at - 12]:
            labels.append(at)
            at += qname[at - 12] + 1
        for flags in FLAGS:
            for edns in EDNS:
                header = struct.pack("!6H", rng.getrandbits(16), flags, 1, 0, 0, edns is not None)
                body = qname + struct.pack("!HH", qtype, 1)
                opt = b""
                if edns is not None:
                    payload, do, ecs = edns
                    option = ecs_option(*ECS[ecs]) if ecs >= 0 else b""
                    opt = struct.pack("!BHHBBHH", 0, 41, payload, 0, 0, do << 15, len(option))
                    opt += option
                data = header + body + opt
                out.append(Seed(data, 12 + len(body), tuple(labels)))
    return out


def _set16(data: bytearray, at: int, value: int) -> None:
    if at + 2 <= len(data):
        data[at : at + 2] = struct.pack("!H", value & 0xFFFF)


def _set8(data: bytearray, at: int, value: int) -> None:
    if at < len(data):
        data[at] = value


class Mutator:
    """Inputs from `seeds`: one or more mutations of a valid query, or random bytes."""

    def __init__(self, seed_list: list[Seed], rng: random.Random) -> None:
        self.seeds, self.rng = seed_list, rng

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield self.one()

    def one(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.03:  # random bytes, mostly small, sometimes up to 65535
            size = rng.randrange(65536) if rng.random() < 0.05 else rng.randrange(600)
            return rng.randbytes(size)
        seed = rng.choice(self.seeds)
        data = bytearray(seed.data)
        if roll < 0.13:  # a valid query in another spelling and ID: must be a hit if learnt
            self.case(data, seed)
            _set16(data, 0, rng.getrandbits(16))
            return bytes(data)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            data = rng.choice(self.ops)(self, data, seed)
        return bytes(data)

    def case(self, data: bytearray, seed: Seed) -> bytearray:
        for i in range(12, min(seed.qend - 4, len(data))):
            if 97 <= data[i] <= 122 and self.rng.random() < 0.5:
                data[i] -= 32
        return data

    def flip(self, data: bytearray, seed: Seed) -> bytearray:
        for _ in range(self.rng.randint(1, 4)):
            if data:
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        return data

    def byte(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            data[self.rng.randrange(len(data))] = self.rng.choice(INTERESTING)
        return data

    def truncate(self, data: bytearray, seed: Seed) -> bytearray:
        return data[: self.rng.randrange(len(data) + 1)]

    def extend(self, data: bytearray, seed: Seed) -> bytearray:
        return data + self.rng.randbytes(self.rng.randint(1, 64))

    def resize(self, data: bytearray, seed: Seed) -> bytearray:
        size = self.rng.randrange(65536)
        if size <= len(data):
            return data[:size]
        more = size - len(data)
        return data + (bytes(more) if self.rng.random() < 0.5 else self.rng.randbytes(more))

    def counts(self, data: bytearray, seed: Seed) -> bytearray:
        _set16(data, 4 + 2 * self.rng.randrange(4), self.rng.choice(INTERESTING16))
        return data

    def flags(self, data: bytearray, seed: Seed) -> bytearray:
        flags = self.rng.choice([self.rng.getrandbits(16), 1 << self.rng.randrange(16)])
        _set16(data, 2, flags)
        return data

    def label(self, data: bytearray, seed: Seed) -> bytearray:
        at = self.rng.choice((*seed.labels, seed.qend - 5))  # a length, or the root label
        _set8(data, at, self.rng.choice([*INTERESTING, self.rng.randrange(256)]))
        return data

    def pointer(self, data: bytearray, seed: Seed) -> bytearray:
        at = self.rng.choice(seed.labels)
        target = self.rng.choice([12, at, self.rng.randrange(0x4000)])
        return data[:at] + struct.pack("!H", 0xC000 | target) + data[seed.qend - 4 :]

    def qtype(self, data: bytearray, seed: Seed) -> bytearray:
        _set16(data, seed.qend - 4 + 2 * self.rng.randrange(2), self.rng.choice(INTERESTING16))
        return data

    def opt(self, data: bytearray, seed: Seed) -> bytearray:
        """An OPT field: owner, type, payload, extended rcode, version, flags or RDLEN."""
        at = seed.qend
        if len(data) <= at:  # no OPT: add one (ARCOUNT may or may not say so)
            data += struct.pack("!BHHBBHH", 0, 41, 1232, 0, 0, 0, 0)
            return data
        field_at = self.rng.choice([0, 1, 3, 5, 6, 7, 9])
        if field_at in (0, 5, 6):
            _set8(data, at + field_at, self.rng.choice(INTERESTING))
        else:
            _set16(data, at + field_at, self.rng.choice([*INTERESTING16, self.rng.getrandbits(16)]))
        return data

    def ecs(self, data: bytearray, seed: Seed) -> bytearray:
        """An ECS option's code, length, family, source, scope or address bytes."""
        at = seed.qend + 11
        if len(data) <= at:  # no option: add one
            option = ecs_option(*self.rng.choice(ECS))
            data[seed.qend + 9 : seed.qend + 11] = struct.pack("!H", len(option))
            return data + option
        which = self.rng.randrange(7)
        if which == 0:
            _set16(data, at, self.rng.choice([8, 10, 0, 0xFFFF]))
        elif which == 1:
            _set16(data, at + 2, self.rng.choice(INTERESTING16))
        elif which == 2:
            _set16(data, at + 4, self.rng.choice([0, 1, 2, 3, 0xFFFF]))
        elif which in (3, 4):  # SOURCE or SCOPE
            _set8(data, at + 3 + which, self.rng.choice([0, 1, 7, 8, 9, 24, 25, 32, 33, 128, 255]))
        elif which == 5:  # an address byte more or less (RDLEN follows, or not)
            data = data + b"\x00" if self.rng.random() < 0.5 else data[:-1]
            if self.rng.random() < 0.5:
                _set16(data, seed.qend + 9, len(data) - at)
                _set16(data, at + 2, len(data) - at - 4)
        else:  # a second option
            data += struct.pack("!HH", self.rng.choice([8, 10]), 0)
            _set16(data, seed.qend + 9, len(data) - at)
        return data

    def splice(self, data: bytearray, seed: Seed) -> bytearray:
        other = self.rng.choice(self.seeds).data
        cut = self.rng.randrange(len(data) + 1)
        return data[:cut] + other[self.rng.randrange(len(other) + 1) :]

    ops: ClassVar[list[Callable[[Mutator, bytearray, Seed], bytearray]]] = [
        flip, byte, truncate, extend, resize, counts, flags, label, pointer, qtype, opt, ecs,
        ecs, opt, splice, case,
    ]  # fmt: skip


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
