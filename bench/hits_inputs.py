"""The inputs of bench/fuzz_hits.py: the zone its tables learn, the valid queries (seeds)
and the mutations made of them.  Imports nothing of dnsfailover.server at import time (the
fuzzer imports its ASan build of the extension first)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

ORIGIN = "fuzz.test."
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
