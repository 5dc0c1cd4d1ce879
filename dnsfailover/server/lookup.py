"""The authoritative look-up of one name in one zone (RFC 1034 §4.3.2, RFC 4592, RFC 2181 §6).

Everything a look-up needs is precomputed when a snapshot is built (see
:mod:`dnsfailover.server.zone`): the names that exist (empty non-terminals included, names
below a delegation excluded), the delegation cuts with their referral, and the negative SOA.
A look-up is then a few set and dict probes per label of the query name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dnslib import QTYPE, RCODE, RR, DNSLabel

from dnsfailover.rdata import Labels
from dnsfailover.server import proofs
from dnsfailover.server.proofs import Sigs
from dnsfailover.server.secure import Secure, owned
from dnsfailover.server.weighted import Pick, Rotor, advance

MAX_CNAME_CHAIN = 8
"""How many CNAMEs one answer follows before it stops (loops stop earlier)."""

WILDCARD = b"*"

_CNAME = int(QTYPE.CNAME)
_ANY = int(QTYPE.ANY)
_DS = int(QTYPE.DS)
_SOA = int(QTYPE.SOA)
_NS = int(QTYPE.NS)
_A = int(QTYPE.A)
_AAAA = int(QTYPE.AAAA)
_NOERROR = int(RCODE.NOERROR)
_NXDOMAIN = int(RCODE.NXDOMAIN)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a look-up found: rcode, AA flag and the answer, authority and additional sections."""

    rcode: int
    authoritative: bool
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()


REFUSED = Answer(int(RCODE.REFUSED), authoritative=False)


@dataclass(frozen=True, slots=True)
class Referral:
    """A delegation cut: its NS set and the glue for its in-zone nameservers."""

    ns: tuple[RR, ...]
    glue: tuple[RR, ...]
    at: Labels = ()
    """The cut's name."""


@dataclass(frozen=True, slots=True)
class SteeredRRs:
    """A steered set's answers as served, per location group (see `model.SteeredSet`).

    ``groups``: group id → its RRs (empty: that group's clients get NODATA); ``rotors``:
    the groups whose set is weighted; ``targets``: a CNAME set's target per group.
    """

    name: str  # the absolute lower-case name steering knows it by
    groups: Mapping[str, tuple[RR, ...]]
    rotors: Mapping[str, Rotor] = field(default_factory=dict)
    targets: Mapping[str, Labels] = field(default_factory=dict)


class Placer(Protocol):
    """Where one query's client goes for each steered name its answer meets."""

    def place(self, name: str) -> str | None:
        """The client's group id for steered `name`; None: answer as if not steered."""


@dataclass(frozen=True, slots=True)
class ZoneData:
    """One zone, indexed for look-ups; only authoritative data (occluded names are left out)."""

    origin: Labels
    serial: int
    rrsets: Mapping[tuple[Labels, int], tuple[RR, ...]]
    cname_targets: Mapping[Labels, Labels]
    codes: tuple[int, ...]
    """Every type the zone can hold a set of, ascending (what ANY looks for at a name)."""
    names: frozenset[Labels]
    """Every name that exists: owners, empty non-terminals and the cuts themselves."""
    cuts: Mapping[Labels, Referral]
    """The topmost delegation points below the apex; nothing below them is served."""
    negative: tuple[RR, ...]
    """The SOA for the authority section of NXDOMAIN/NODATA, TTL = min(ttl, minimum)."""
    weighted: Mapping[tuple[Labels, int], Rotor] = field(default_factory=dict)
    """Weighted A/AAAA sets: a query gets one record of ``rrsets`` (ANY still gets all)."""
    managed_names: frozenset[Labels] = frozenset()
    """The served names that have a managed set (an update of another is not served)."""
    glue_names: frozenset[Labels] = frozenset()
    """Names whose addresses are glue in a referral (an update there rebuilds the zone)."""
    steered: Mapping[tuple[Labels, int], SteeredRRs] = field(default_factory=dict)
    """Steered sets, by (name, type): answered per location group when a `Placer` is given."""
    secure: Secure | None = None
    """A signed zone's signatures and denial chain (None: the zone is not signed)."""

    def contains(self, name: Labels) -> bool:
        depth = len(self.origin)
        return len(name) >= depth and (depth == 0 or name[-depth:] == self.origin)


def _any(zone: ZoneData, name: Labels) -> tuple[RR, ...] | None:
    """ANY gets one RRset (RFC 8482): the CNAME if there is one, else the lowest type."""
    rrsets = zone.rrsets
    found = rrsets.get((name, _CNAME))
    if found:
        return found
    for code in zone.codes:
        found = rrsets.get((name, code))
        if found:
            return found
    return None


def _node(zone: ZoneData, name: Labels, qtype: int) -> Labels | Referral | None:
    """Where the data for ``name`` lives: ``name`` itself or the wildcard that covers it.

    A :class:`Referral` when ``name`` is at or below a cut (DS at the cut is the parent's,
    RFC 4035 §3.1.4.1); None when the name does not exist and no wildcard applies.
    """
    if name in zone.names:
        cut = zone.cuts.get(name)
        return name if cut is None or qtype == _DS else cut
    # Walk down from the apex: the first missing ancestor ends the closest encloser, and a
    # cut on the way turns the answer into a referral (RFC 4592 §3.3.1 step 1).
    encloser = len(zone.origin)
    for depth in range(len(zone.origin) + 1, len(name)):
        ancestor = name[len(name) - depth :]
        if ancestor not in zone.names:
            break
        cut = zone.cuts.get(ancestor)
        if cut is not None:
            return cut
        encloser = depth
    wildcard = (WILDCARD, *name[len(name) - encloser :])
    return wildcard if wildcard in zone.names else None


def _as(owner: DNSLabel, rrs: tuple[RR, ...]) -> tuple[RR, ...]:
    """Wildcard-synthesised copies of ``rrs`` owned by the query name (RFC 4592 §3.3.1)."""
    return tuple(RR(owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata) for rr in rrs)


def _addresses(zone: ZoneData, ns: tuple[RR, ...]) -> tuple[RR, ...]:
    """The in-zone addresses of these nameservers, for the additional section of an NS
    answer (RFC 1034 §4.3.2 step 6; BIND adds them even with `minimal-responses yes`)."""
    out: list[RR] = []
    for rr in ns:
        target = tuple(bytes(label).lower() for label in rr.rdata.label.label)
        if zone.contains(target) and _node(zone, target, _A) == target:
            out.extend(zone.rrsets.get((target, _A), ()))
            out.extend(zone.rrsets.get((target, _AAAA), ()))
    return tuple(out)


def _negative(zone: ZoneData, qtype: int) -> tuple[RR, ...]:
    """The authority section of an NXDOMAIN.  To an SOA query its SOA has TTL 0, as BIND
    9.18 gives it (`zero-no-soa-ttl`, default yes; NODATA keeps the TTL there too)."""
    if qtype != _SOA:
        return zone.negative
    return tuple(RR(rr.rname, rr.rtype, rr.rclass, 0, rr.rdata) for rr in zone.negative)


def _steered(
    zone: ZoneData, node: Labels, qtype: int, where: Placer
) -> tuple[str, SteeredRRs] | None:
    """The client's group and the steered set at (node, qtype), if it is steered for it."""
    steered = zone.steered.get((node, qtype))
    if steered is None:
        return None
    group = where.place(steered.name)
    if group is None or group not in steered.groups:
        return None  # not steered now, or a group the engine has no answer for: the default
    return group, steered


def _encloser(zone: ZoneData, name: Labels) -> int:
    """How many labels `name`'s closest encloser has (the longest ancestor that exists)."""
    encloser = len(zone.origin)
    for depth in range(len(zone.origin) + 1, len(name)):
        if name[len(name) - depth :] not in zone.names:
            break
        encloser = depth
    return encloser


def _sigs(sec: Secure, key: tuple[Labels, int], group: str | None, choice: int | None) -> Sigs:
    """The signatures of the set at `key` as answered: a location group's, one record's."""
    signed = sec.sets.get(key) if group is None else sec.groups.get(key, {}).get(group)
    if signed is None:
        return ()
    return signed.choices[choice] if choice is not None and signed.choices else signed.whole


def _delegation(zone: ZoneData, sec: Secure, cut: Labels) -> tuple[RR, ...]:
    """A referral's DS and its signatures, or the proof that the cut has no DS."""
    ds = zone.rrsets.get((cut, _DS))
    if ds:
        return (*ds, *_sigs(sec, (cut, _DS), None, None))
    return proofs.nodata(sec.chain, cut)


def lookup(
    zone: ZoneData,
    qname: Labels,
    qtype: int,
    pick: Pick = advance,
    where: Placer | None = None,
    do: bool = False,
) -> Answer:
    """Answer one IN-class question for a name inside ``zone`` (lower-case labels).

    ``pick`` chooses the one record a weighted set answers with (a CNAME may lead there);
    ``where`` places the client for the steered sets the answer meets (None: every client
    gets the default answers, the zone's plain sets); ``do``: a signed zone answers with
    signatures and the NSEC/NSEC3 proofs (RFC 4035 §3.1).
    """
    answer: list[RR] = []
    shown: list[RR] = []  # proofs for answers synthesised from a wildcard
    sec = zone.secure if do else None
    name = qname
    seen = {name}
    placer = where if zone.steered else None
    for _ in range(MAX_CNAME_CHAIN + 1):
        node = _node(zone, name, qtype)
        if node is None:
            authority = _negative(zone, qtype)
            if sec is not None:
                soa = sec.negative if qtype != _SOA else owned(sec.negative, None, 0)
                denied = proofs.nxdomain(sec.chain, name, _encloser(zone, name))
                authority = (*authority, *soa, *shown, *denied)
            return Answer(_NXDOMAIN, True, tuple(answer), authority)
        if isinstance(node, Referral):
            # After a CNAME the answer so far is ours (AA); a direct query gets a plain referral.
            ns = node.ns if sec is None else (*node.ns, *_delegation(zone, sec, node.at))
            return Answer(_NOERROR, bool(answer), tuple(answer), ns, node.glue)
        rotor: Rotor | None = None
        group: str | None = None
        key = (node, qtype)
        if qtype == _ANY:
            found = _any(zone, node)
            if found:
                key = (node, int(found[0].rtype))
        else:
            found = zone.rrsets.get(key)
            placed = _steered(zone, node, qtype, placer) if placer is not None else None
            if placed is not None:
                group, steered = placed
                found = steered.groups[group]
                rotor = steered.rotors.get(group)
                if not found and qtype == _CNAME:  # this group has no CNAME: NODATA
                    return _nodata(zone, sec, answer, shown, name, node)
            elif zone.weighted:
                rotor = zone.weighted.get(key)
        if found:
            choice = None
            if rotor is not None:
                choice = pick(rotor)
                found = rotor.choices[choice]
            owner = None if node == name else DNSLabel(name)
            answer.extend(found if owner is None else _as(owner, found))
            if sec is not None:
                answer.extend(owned(_sigs(sec, key, group, choice), owner))
                if owner is not None:
                    shown.extend(proofs.wildcard_answer(sec.chain, name, _encloser(zone, name)))
            if qtype == _NS:
                return Answer(_NOERROR, True, tuple(answer), tuple(shown), _addresses(zone, found))
            break
        target = zone.cname_targets.get(node)
        cname = zone.rrsets.get((node, _CNAME), ())
        cname_group: str | None = None
        if placer is not None and qtype not in (_ANY, _CNAME):
            placed = _steered(zone, node, _CNAME, placer)
            if placed is not None:
                cname_group, steered = placed
                cname, target = steered.groups[cname_group], steered.targets.get(cname_group)
        if target is None or not cname:
            return _nodata(zone, sec, answer, shown, name, node)
        owner = None if node == name else DNSLabel(name)
        answer.extend(cname if owner is None else _as(owner, cname))
        if sec is not None:
            answer.extend(owned(_sigs(sec, (node, _CNAME), cname_group, None), owner))
            if owner is not None:
                shown.extend(proofs.wildcard_answer(sec.chain, name, _encloser(zone, name)))
        if target in seen or not zone.contains(target):
            break  # a loop, or a target we are not authoritative for: stop here
        seen.add(target)
        name = target
    return Answer(_NOERROR, True, tuple(answer), tuple(shown))


def _nodata(
    zone: ZoneData,
    sec: Secure | None,
    answer: list[RR],
    shown: list[RR],
    name: Labels,
    node: Labels,
) -> Answer:
    """NODATA for `name` (found at `node`: itself, or the wildcard that covers it)."""
    if sec is None:
        return Answer(_NOERROR, True, tuple(answer), zone.negative)
    if node == name:
        denied = proofs.nodata(sec.chain, name)
    else:
        denied = proofs.wildcard_nodata(sec.chain, name, _encloser(zone, name))
    authority = (*zone.negative, *sec.negative, *shown, *denied)
    return Answer(_NOERROR, True, tuple(answer), authority)
