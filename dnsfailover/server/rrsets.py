"""One record set as the server serves it: a `RecordSet`'s values parsed into dnslib RRs.

A snapshot build parses every set of a zone; a publish only the managed sets it changed,
and those cheaply: a managed name's labels are parsed once, its values come from a cache of
their own, and a set keeps the RRs of the values it already served (an endpoint gone from
ten thousand sets is a subset of each, made of RRs that exist).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from dnslib import CLASS, QTYPE, RR, DNSBuffer, DNSLabel

from dnsfailover.model import RecordSet
from dnsfailover.rdata import Labels, ZoneBuildError, name_labels, parse_rdata, qtype_code

MAX_TTL = 2**31 - 1
SetKey = tuple[Labels, int]

_CNAME = int(QTYPE.CNAME)
_A = int(QTYPE.A)
_AAAA = int(QTYPE.AAAA)
_IN = int(CLASS.IN)


def dotted(labels: Labels) -> str:
    return ".".join(label.decode("ascii", "backslashreplace") for label in labels) + "."


def checked(rr: RR, where: str) -> RR:
    """Pack the RR once so a value that cannot be encoded fails the build, not every query."""
    try:
        rr.pack(DNSBuffer())
    except Exception as e:  # dnslib raises several unrelated types here
        raise ZoneBuildError(f"{where}: cannot be encoded: {e}") from e
    return rr


def _wire(rd: Any) -> bytes | None:
    """An rdata's wire form (None: it cannot be encoded; `checked` reports it)."""
    buffer = DNSBuffer()
    try:
        rd.pack(buffer)
    except Exception:  # dnslib raises several unrelated types here
        return None
    return bytes(buffer.data)


def _parse(rtype: str, value: str) -> tuple[Any, bytes | None]:
    rd = parse_rdata(rtype, value)
    return rd, _wire(rd)


# Parsed values, shared (dnslib's rdata objects are never changed once made): an outage
# re-publishes the same endpoint addresses in thousands of sets.  Managed sets have a cache
# of their own, with the values' wire form, so that building a big static part does not
# push their few values out: a managed set's RRs are taken over from its previous version
# by their (shared) rdata.  Static values are shared within one build only (`Parsed`): a
# cache of 100k mostly distinct values would keep its keys and links for nothing.
_managed_rdata = functools.lru_cache(maxsize=65_536)(_parse)
_code = functools.lru_cache(maxsize=64)(qtype_code)


@functools.lru_cache(maxsize=65_536)
def _owner(name: str) -> tuple[Labels, DNSLabel]:
    """A managed name's labels and owner, parsed once: every publish that changes the name
    would parse them again (dnspython's name parser costs more than the rest of the set).
    An RR's owner is never changed once made."""
    labels = name_labels(name)
    return labels, DNSLabel(labels)


def labels_of(name: str) -> Labels:
    """`name_labels` of a managed name (see `_owner`)."""
    return _owner(name)[0]


def _unique(rds: Sequence[tuple[Any, bytes | None]]) -> tuple[list[Any], list[int]]:
    """The rdata without duplicates (RFC 2181 §5: an RRset is a set), compared by their
    wire form, and for each value the index of the one kept for it.

    A value may be written several ways (``dup`` and ``"dup"``, ``2001:db8::5`` and
    ``2001:DB8:0:0::5``); names in rdata are lower-cased when parsed, so equal wire bytes are
    what BIND compares too.
    """
    unique: list[Any] = []
    seen: dict[bytes, int] = {}
    kept: list[int] = []
    for rd, wire in rds:
        if wire is None:  # cannot be encoded: `checked` reports it
            kept.append(len(unique))
            unique.append(rd)
            continue
        index = seen.setdefault(wire, len(unique))
        if index == len(unique):
            unique.append(rd)
        kept.append(index)
    return unique, kept


Parsed = dict[tuple[str, str], Any]
"""A build's static values parsed so far, by (type, value): equal values share one rdata."""


def build_rrset(
    rs: RecordSet,
    origin: Labels,
    owner: tuple[Labels, DNSLabel] | None = None,
    reuse: Sequence[RR] = (),
    parsed_before: Parsed | None = None,
) -> tuple[Labels, int, tuple[RR, ...], list[int]]:
    """The set's owner, type, RRs (duplicates removed) and which RR each value became.

    `owner`: a managed set's labels and owner (`_owner`); `reuse`: RRs of the same owner and
    type (the set's previous version) that a value may take as they are; `parsed_before`:
    the static values this build has parsed (added to).
    """
    try:
        if owner is None:
            name, label = name_labels(rs.name), None
            memo = {} if parsed_before is None else parsed_before
            parsed = []
            for value in rs.values:
                rd = memo.get((rs.rtype, value))
                if rd is None:
                    rd = memo[rs.rtype, value] = parse_rdata(rs.rtype, value)
                parsed.append((rd, _wire(rd)))
        else:
            (name, label), rtype = owner, rs.rtype
            parsed = [_managed_rdata(rtype, value) for value in rs.values]
        code = _code(rs.rtype)
        rds, kept = _unique(parsed)
    except ZoneBuildError as e:
        raise ZoneBuildError(f"{rs.name} {rs.rtype}: {e}") from e
    depth = len(origin)
    if depth and name[-depth:] != origin:
        raise ZoneBuildError(f"{rs.name} {rs.rtype}: name is outside the zone {dotted(origin)}")
    if depth and owner is None:
        # the origin's labels, not a copy per name: two bytes objects fewer for each of
        # 100k static names
        name = name[:-depth] + origin
    if code == _CNAME and (len(rds) > 1 or name == origin):
        raise ZoneBuildError(
            f"{rs.name} {rs.rtype}: a CNAME must have one value and not be at the apex"
        )
    ttl = rs.ttl
    if not 0 <= ttl <= MAX_TTL:
        raise ZoneBuildError(f"{rs.name} {rs.rtype}: TTL {ttl} is outside 0-{MAX_TTL}")
    if label is None:
        label = DNSLabel(name)
    rrs: list[RR] = []
    for rd in rds:
        # An RR is the same when its rdata is (parsed values are shared: `_managed_rdata`)
        # and its TTL is: a set that lost one value keeps the RRs of the others.
        for rr in reuse:
            if rr.rdata is rd and rr.ttl == ttl:
                break
        else:
            rr = RR(label, code, _IN, ttl, rd)
            if code not in (_A, _AAAA):  # an address always encodes: no need to pack it
                checked(rr, f"{rs.name} {rs.rtype}")
        rrs.append(rr)
    return name, code, tuple(rrs), kept


def build_managed(
    rs: RecordSet,
    origin: Labels,
    rrsets: Mapping[SetKey, tuple[RR, ...]],
    before: RecordSet | None = None,
) -> tuple[SetKey, tuple[RR, ...], list[int]]:
    """`build_rrset` for a managed set a publish replaces, from its previous version
    `before` (served as `rrsets` has it): its name parsed once per name, and the RRs of its
    values that it served before taken as they are.  A set that only lost values (an
    endpoint gone: most of a failover) is made of its old RRs alone."""
    try:
        labels, label = _owner(rs.name)
        code = _code(rs.rtype)
    except ZoneBuildError as e:
        raise ZoneBuildError(f"{rs.name} {rs.rtype}: {e}") from e
    at = (labels, code)
    served = rrsets.get(at, ())
    # One RR per old value, in order (no duplicates), same TTL: the values still there keep
    # theirs, and a subset of a valid set is valid (same owner, type and TTL; fewer values).
    if before is not None and before.ttl == rs.ttl and len(served) == len(before.values):
        where = {v: i for i, v in enumerate(before.values)}
        if all(v in where for v in rs.values) and len(set(rs.values)) == len(rs.values):
            return at, tuple(served[where[v]] for v in rs.values), list(range(len(rs.values)))
    _, _, rrs, kept = build_rrset(rs, origin, (labels, label), served)
    return at, rrs, kept


def rotation_weights(rs: RecordSet, code: int, kept: Sequence[int]) -> tuple[int, ...] | None:
    """A set's weights when it rotates: only address sets do, and all-zero weights mean no
    preference (Route 53 too).  ``kept[i]`` is the RR that value ``i`` became (duplicates
    share one, and their weights add up)."""
    if not (rs.weights and code in (_A, _AAAA) and any(rs.weights)):
        return None
    if min(rs.weights) < 0 or len(rs.weights) != len(kept):
        raise ZoneBuildError(f"{rs.name} {rs.rtype}: weights must be one >= 0 per value")
    summed = [0] * (max(kept) + 1 if kept else 0)
    for index, weight in zip(kept, rs.weights, strict=True):
        summed[index] += weight
    return tuple(summed)
