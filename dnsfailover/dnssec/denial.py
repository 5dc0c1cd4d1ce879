"""Authenticated denial of existence: the NSEC or NSEC3 chain of a zone's names.

The chain depends only on the zone's names and their types, never on the data, so it is
built when the name set changes (a reload) and a failover, which changes data only, keeps
it.  `authoritative` turns every owner's types into what the chain covers: at a delegation
only NS and DS (the child's data is not ours), and nothing below it (glue is unsigned and
not in the chain).  NSEC3 uses RFC 9276's parameters: SHA-1, no extra iterations, an empty
salt, no opt-out.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Literal

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.NSEC3
import dns.rdtypes.ANY.NSEC3PARAM
import dns.rrset
from dns.rdtypes.util import Bitmap

Denial = Literal["nsec", "nsec3"]
Names = Mapping[dns.name.Name, frozenset[int]]
"""Owner name → the types it holds (before the chain's own types are added)."""

NS, DS, SOA = dns.rdatatype.NS, dns.rdatatype.DS, dns.rdatatype.SOA
RRSIG, NSEC, NSEC3 = dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3
NSEC3PARAM, DNSKEY = dns.rdatatype.NSEC3PARAM, dns.rdatatype.DNSKEY
_B32 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHIJKLMNOPQRSTUV")


def owner_types(rrsets: Iterable[dns.rrset.RRset]) -> dict[dns.name.Name, frozenset[int]]:
    """Every owner name of `rrsets` → its types (empty sets skipped)."""
    found: dict[dns.name.Name, set[int]] = {}
    for rrset in rrsets:
        if len(rrset):
            found.setdefault(rrset.name, set()).add(int(rrset.rdtype))
    return {name: frozenset(types) for name, types in found.items()}


def cuts(origin: dns.name.Name, names: Names) -> frozenset[dns.name.Name]:
    """The delegation points: names below the apex with NS records."""
    return frozenset(n for n, types in names.items() if NS in types and n != origin)


def authoritative(origin: dns.name.Name, names: Names) -> dict[dns.name.Name, frozenset[int]]:
    """What the zone is authoritative for: a delegation keeps NS and DS (signed: DS only),
    names below a delegation (glue, occluded data) are dropped."""
    delegations = cuts(origin, names)
    out: dict[dns.name.Name, frozenset[int]] = {}
    for name, types in names.items():
        if not name.is_subdomain(origin):
            continue
        if any(name != cut and name.is_subdomain(cut) for cut in delegations):
            continue  # below a cut: glue or occluded
        out[name] = types & {NS, DS} if name in delegations else types
    return out


def signed(origin: dns.name.Name, name: dns.name.Name, rdtype: int, names: Names) -> bool:
    """Whether the RRset `name`/`rdtype` gets an RRSIG: authoritative data, not the NS of a
    delegation (`names` as `authoritative` returns them)."""
    types = names.get(name)
    if types is None or rdtype not in types:
        return False
    return not (rdtype == NS and name != origin)


def _bitmap(types: Iterable[int]) -> list[tuple[int, bytes]]:
    return Bitmap.from_rdtypes([dns.rdatatype.RdataType.make(t) for t in types]).windows


def nsec_chain(origin: dns.name.Name, names: Names, ttl: int) -> list[dns.rrset.RRset]:
    """The NSEC RRsets of `names` (authoritative, as `authoritative` returns them), in
    canonical order; the last points back to the apex (RFC 4034 §4)."""
    ordered = sorted(names)
    chain: list[dns.rrset.RRset] = []
    for index, name in enumerate(ordered):
        types = set(names[name]) | {NSEC, RRSIG}
        nxt = ordered[(index + 1) % len(ordered)]
        rdata = dns.rdtypes.ANY.NSEC.NSEC(dns.rdataclass.IN, NSEC, nxt, _bitmap(types))  # type: ignore[no-untyped-call]
        chain.append(dns.rrset.from_rdata(name, ttl, rdata))
    return chain


def nsec3_hash(name: dns.name.Name, salt: bytes = b"", iterations: int = 0) -> bytes:
    """RFC 5155 §5's hash of `name` (SHA-1), raw."""
    wire = name.to_digestable()  # lower case, uncompressed
    digest = hashlib.sha1(wire + salt).digest()
    for _ in range(iterations):
        digest = hashlib.sha1(digest + salt).digest()
    return digest


def nsec3_label(digest: bytes) -> str:
    """A hash as the owner label: base32 with the extended hex alphabet, lower case."""
    return base64.b32encode(digest).translate(_B32).decode().lower()


def nsec3_names(origin: dns.name.Name, names: Names) -> dict[dns.name.Name, frozenset[int]]:
    """`names` with the empty non-terminals between each name and the apex added (each
    gets an NSEC3 with no types: RFC 5155 §7.1)."""
    out = dict(names)
    for name in names:
        parent = name
        while parent != origin and parent.is_subdomain(origin):
            parent = parent.parent()
            out.setdefault(parent, frozenset())
    return out


def nsec3param(origin: dns.name.Name, ttl: int = 0) -> dns.rrset.RRset:
    """The apex NSEC3PARAM of RFC 9276's parameters (SHA-1, 0 iterations, no salt)."""
    rdata = dns.rdtypes.ANY.NSEC3PARAM.NSEC3PARAM(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN, NSEC3PARAM, 1, 0, 0, b""
    )
    return dns.rrset.from_rdata(origin, ttl, rdata)


def nsec3_chain(origin: dns.name.Name, names: Names, ttl: int) -> list[dns.rrset.RRset]:
    """The NSEC3 RRsets of `names` (authoritative, as `authoritative` returns them; the
    apex is given NSEC3PARAM here), in hash order, each pointing at the next hash."""
    full = nsec3_names(origin, names)
    delegations = cuts(origin, full)
    hashed = sorted((nsec3_hash(name), name) for name in full)
    chain: list[dns.rrset.RRset] = []
    for index, (digest, name) in enumerate(hashed):
        types = set(full[name])
        if name == origin:
            types.add(NSEC3PARAM)
        # signatures exist at the name unless it holds nothing signed (an empty
        # non-terminal, an insecure delegation's NS)
        if types and not (name in delegations and DS not in types):
            types.add(RRSIG)
        nxt = hashed[(index + 1) % len(hashed)][0]
        rdata = dns.rdtypes.ANY.NSEC3.NSEC3(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, NSEC3, 1, 0, 0, b"", nxt, _bitmap(types)
        )
        owner = dns.name.Name((nsec3_label(digest).encode(), *origin.labels))
        chain.append(dns.rrset.from_rdata(owner, ttl, rdata))
    return chain


def chain(origin: dns.name.Name, names: Names, ttl: int, denial: Denial) -> list[dns.rrset.RRset]:
    """The zone's denial chain (plus the NSEC3PARAM RRset for NSEC3): `names` must already
    be `authoritative` and hold the apex DNSKEY."""
    if denial == "nsec":
        return nsec_chain(origin, names, ttl)
    return [nsec3param(origin), *nsec3_chain(origin, names, ttl)]
