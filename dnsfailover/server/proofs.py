"""Authenticated denial of existence as the server serves it: the NSEC or NSEC3 records of
a signed zone, indexed for look-ups, and the proofs an answer to a DO query carries.

`dnsfailover.dnssec.denial` is the reference (dnspython values, a whole chain at a time);
this module holds the same chain as wire records in dnslib RRs, with an index that finds
the record matching or covering any name in O(log n): the NSEC owners in canonical order
(RFC 4034 §6.1: labels compared right to left, as lower-case octet strings, which is how
Python compares reversed tuples of lower-case `bytes`), or the NSEC3 hashes in order.

The chain's names change only when the zone's name set does (a reload builds a new one);
a failover that empties or fills a name's managed set changes that name's type bitmap,
and so only that one record and its signature (`Chain.retyped`).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dnslib import RD, RR, DNSLabel

from dnsfailover.rdata import Labels

NSEC, NSEC3, NSEC3PARAM, RRSIG, NS, DS = 47, 50, 51, 46, 2, 43
_IN = 1
_B32 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghijklmnopqrstuv")

Sigs = tuple[RR, ...]
Record = tuple[RR, Sigs]
"""One NSEC/NSEC3 RR and its RRSIGs."""
SignRecord = Callable[[Labels, int, int, bytes], Record]
"""Makes one NSEC/NSEC3 RR from (owner, type, TTL, rdata), with its signatures."""


def wire(labels: Labels) -> bytes:
    """A name's uncompressed wire form (lower-case labels in: canonical)."""
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\0"


def bitmap(types: Iterable[int]) -> bytes:
    """The type bit maps field of NSEC/NSEC3 (RFC 4034 §4.1.2)."""
    windows: dict[int, bytearray] = {}
    for t in sorted(set(types)):
        window, bit = divmod(t, 256)
        octets = windows.setdefault(window, bytearray())
        index = bit // 8
        if len(octets) <= index:
            octets.extend(bytes(index + 1 - len(octets)))
        octets[index] |= 0x80 >> (bit % 8)
    return b"".join(bytes((w, len(o))) + bytes(o) for w, o in sorted(windows.items()))


def nsec3_hash(labels: Labels) -> bytes:
    """RFC 5155 §5's hash with RFC 9276's parameters (SHA-1, no extra iteration, no salt)."""
    return hashlib.sha1(wire(labels)).digest()


def hash_label(digest: bytes) -> bytes:
    """A hash as an owner label: base32 with the extended hex alphabet, lower case."""
    return base64.b32encode(digest).translate(_B32)


NSEC3PARAM_RDATA = struct.pack("!BBHB", 1, 0, 0, 0)
"""SHA-1, no flags, 0 extra iterations, an empty salt (RFC 9276)."""


@dataclass(frozen=True, slots=True)
class Chain:
    """A zone's NSEC (`hashed` False) or NSEC3 chain: `order` the sort keys (reversed owner
    labels, or hashes), `owners` the owner names of the data (in the same order), and
    `records` each key's record with its signatures.  `types` is what each name's bitmap
    shows (the data's types, before NSEC/RRSIG are added)."""

    origin: Labels
    hashed: bool
    ttl: int
    order: list[Any]  # sorted: reversed owner labels (NSEC) or hashes (NSEC3)
    owners: list[Labels]
    records: Mapping[Any, Record]
    types: Mapping[Labels, frozenset[int]]
    cuts: frozenset[Labels] = field(default_factory=frozenset)

    def key(self, name: Labels) -> Any:
        return nsec3_hash(name) if self.hashed else name[::-1]

    def find(self, name: Labels) -> tuple[Record, bool]:
        """The record matching `name` (True) or covering it (False)."""
        key = self.key(name)
        index = bisect.bisect_right(self.order, key) - 1
        found = self.order[index]  # index -1 (before the first hash) wraps to the last
        return self.records[found], found == key

    def retyped(self, changed: Mapping[Labels, frozenset[int]], sign: SignRecord) -> Chain | None:
        """This chain with the bitmaps of `changed` names (name → its types now) remade and
        re-signed; None when a name is not in the chain (the chain must be rebuilt)."""
        records = dict(self.records)
        types = dict(self.types)
        for name, now in changed.items():
            if name not in types:
                return None
            if types[name] == now:
                continue
            types[name] = now
            key = self.key(name)
            index = None if self.hashed else bisect.bisect_left(self.order, key)
            records[key] = self._record(name, now, index, sign)
        return Chain(
            self.origin, self.hashed, self.ttl, self.order, self.owners, records, types, self.cuts
        )

    def _record(
        self, name: Labels, types: frozenset[int], index: int | None, sign: SignRecord
    ) -> Record:
        if self.hashed:
            digest = nsec3_hash(name)
            at = bisect.bisect_left(self.order, digest)
            nxt = self.order[(at + 1) % len(self.order)]
            assert isinstance(nxt, bytes)
            shown = set(types)
            if name == self.origin:
                shown.add(NSEC3PARAM)
            if shown and not (name in self.cuts and DS not in shown):
                shown.add(RRSIG)
            rdata = NSEC3PARAM_RDATA[:4] + b"\0" + bytes((len(nxt),)) + nxt + bitmap(shown)
            owner = (hash_label(digest), *self.origin)
            return sign(owner, NSEC3, self.ttl, rdata)
        assert index is not None
        nxt_owner = self.owners[(index + 1) % len(self.owners)]
        rdata = wire(nxt_owner) + bitmap(set(types) | {NSEC, RRSIG})
        return sign(name, NSEC, self.ttl, rdata)


def build_chain(
    origin: Labels,
    names: Mapping[Labels, frozenset[int]],
    cuts: frozenset[Labels],
    ttl: int,
    hashed: bool,
    sign: SignRecord,
) -> Chain:
    """The chain of `names` (every authoritative owner → its types; for NSEC3 the empty
    non-terminals are added here)."""
    if not hashed:
        owners = sorted(names, key=lambda n: n[::-1])
        chain = Chain(origin, False, ttl, [n[::-1] for n in owners], owners, {}, names, cuts)
        records = {n[::-1]: chain._record(n, names[n], i, sign) for i, n in enumerate(owners)}
        return Chain(origin, False, ttl, chain.order, owners, records, names, cuts)
    full = dict(names)
    for name in names:
        for cut in range(1, len(name) - len(origin) + 1):
            full.setdefault(name[cut:], frozenset())
    by_hash = sorted((nsec3_hash(n), n) for n in full)
    order = [h for h, _ in by_hash]
    chain = Chain(origin, True, ttl, order, [n for _, n in by_hash], {}, full, cuts)
    by_digest = {h: chain._record(n, full[n], None, sign) for h, n in by_hash}
    return Chain(origin, True, ttl, order, chain.owners, by_digest, full, cuts)


def raw_rr(owner: DNSLabel, rtype: int, ttl: int, rdata: RD) -> RR:
    """An IN-class RR made without dnslib's checks (a third of a signature's cost at 10k
    signatures): every caller passes a DNSLabel, a type and TTL in range and an RD."""
    rr: RR = RR.__new__(RR)
    rr.__dict__.update(_rname=owner, _rtype=rtype, _rclass=_IN, _ttl=ttl, rdata=rdata)
    return rr


def record_rr(owner: Labels, rtype: int, ttl: int, rdata: bytes) -> RR:
    return raw_rr(DNSLabel(owner), rtype, ttl, RD(rdata))


# -- proofs (RFC 4035 §3.1.3, RFC 5155 §7.2) ----------------------------------------------------


def _flat(found: Iterable[Record]) -> tuple[RR, ...]:
    out: list[RR] = []
    seen: set[int] = set()
    for rr, sigs in found:
        if id(rr) not in seen:
            seen.add(id(rr))
            out.append(rr)
            out.extend(sigs)
    return tuple(out)


def _next_closer(name: Labels, encloser: int) -> Labels:
    return name[len(name) - encloser - 1 :]


def nxdomain(chain: Chain, name: Labels, encloser: int) -> tuple[RR, ...]:
    """No `name`, and no wildcard at its closest encloser (`encloser` labels long)."""
    closest = name[len(name) - encloser :]
    wildcard = (b"*", *closest)
    if not chain.hashed:
        return _flat([chain.find(name)[0], chain.find(wildcard)[0]])
    return _flat(
        [
            chain.find(closest)[0],
            chain.find(_next_closer(name, encloser))[0],
            chain.find(wildcard)[0],
        ]
    )


def nodata(chain: Chain, name: Labels) -> tuple[RR, ...]:
    """`name` exists without the type asked (an empty non-terminal too)."""
    return _flat([chain.find(name)[0]])


def wildcard_answer(chain: Chain, name: Labels, encloser: int) -> tuple[RR, ...]:
    """An answer synthesised from the wildcard at `name`'s closest encloser: no closer
    match exists."""
    if not chain.hashed:
        return _flat([chain.find(name)[0]])
    return _flat([chain.find(_next_closer(name, encloser))[0]])


def wildcard_nodata(chain: Chain, name: Labels, encloser: int) -> tuple[RR, ...]:
    """The wildcard matching `name` exists without the type asked: the same records as an
    NXDOMAIN's (no `name`; the wildcard's own record now matches instead of covering)."""
    return nxdomain(chain, name, encloser)
