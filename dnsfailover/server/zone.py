"""Immutable zone snapshots: building them, and answering a parsed request from one.

A :class:`ZoneSnapshot` is built once per publish: every record value is parsed into dnslib
``RR`` objects and indexed by (name, type), delegation cuts and their referrals are found
and occluded names left out, so answering a query is a few dict look-ups
(:mod:`dnsfailover.server.lookup`).
The server swaps whole snapshots, so a query sees one snapshot from start to finish.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from dnslib import CLASS, OPCODE, QTYPE, RCODE, RR, SOA, DNSHeader, DNSLabel, DNSRecord

from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.rdata import Labels, ZoneBuildError, name_labels, qtype_code
from dnsfailover.server.lookup import (
    REFUSED,
    WILDCARD,
    Answer,
    Placer,
    Referral,
    SteeredRRs,
    ZoneData,
    lookup,
)
from dnsfailover.server.rrsets import (
    MAX_TTL,
    Parsed,
    SetKey,
    build_managed,
    build_rrset,
    checked,
    dotted,
    rotation_weights,
)
from dnsfailover.server.secure import Secure, Served, ZoneSigner, secure_zone, update_secure
from dnsfailover.server.steered import build_steered, check_steered, set_key, update_steered
from dnsfailover.server.versions import Delta
from dnsfailover.server.weighted import Pick, Rotor, advance

_CNAME = int(QTYPE.CNAME)
_SOA = int(QTYPE.SOA)
_NS = int(QTYPE.NS)
_DS = int(QTYPE.DS)
_A = int(QTYPE.A)
_AAAA = int(QTYPE.AAAA)
_IN = int(CLASS.IN)
_QUERY = int(OPCODE.QUERY)

# Meta types that are never looked up as data.  Zone transfers come with a later issue.
_REFUSED_QTYPES = frozenset({int(QTYPE.AXFR), int(QTYPE.IXFR)})
_NOTIMP_QTYPES = frozenset({int(QTYPE.TKEY), int(QTYPE.TSIG), 253, 254})  # 253/254: MAILB/MAILA
_FORMERR_QTYPES = frozenset({int(QTYPE.OPT)})


def _soa(content: ZoneContent, origin: Labels) -> tuple[RR, RR]:
    """The SOA record and the one negative answers carry (TTL = min(ttl, minimum))."""
    soa = content.soa
    times = (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum)
    if any(not 0 <= t < 2**32 for t in times) or not 0 <= soa.ttl <= MAX_TTL:
        raise ZoneBuildError(
            f"{content.origin}: SOA values must be 32-bit unsigned, TTL at most {MAX_TTL}"
        )
    soa_rd = SOA(DNSLabel(name_labels(soa.mname)), DNSLabel(name_labels(soa.rname)), times)
    soa_rr = checked(RR(DNSLabel(origin), _SOA, _IN, soa.ttl, soa_rd), content.origin)
    return soa_rr, RR(DNSLabel(origin), _SOA, _IN, min(soa.ttl, soa.minimum), soa_rd)


def _build_zone(content: ZoneContent, signer: ZoneSigner | None = None) -> ZoneData:
    origin = name_labels(content.origin)
    soa_rr, negative = _soa(content, origin)
    built: dict[tuple[Labels, int], tuple[RR, ...]] = {(origin, _SOA): (soa_rr,)}
    weights: dict[tuple[Labels, int], tuple[int, ...]] = {}
    owners: set[Labels] = {origin}
    managed_keys = content.managed
    parsed: Parsed = {}
    for rs in content.records:
        if (rs.name, rs.rtype) in managed_keys:
            (name, code), rrs, kept = build_managed(rs, origin, {})
        else:
            name, code, rrs, kept = build_rrset(rs, origin, parsed_before=parsed)
        if (name, code) in built:
            raise ZoneBuildError(f"{rs.name} {rs.rtype}: record set given twice")
        if (w := rotation_weights(rs, code, kept)) is not None:
            weights[name, code] = w
        # No values (e.g. all_down=serve_none): the name exists and answers NODATA.
        built[name, code] = rrs
        owners.add(name)
    if signer is not None:  # the signer's own sets at the apex: DNSKEY, CDS, ...
        for code, rrs in signer.apex_sets(origin):
            built[origin, code] = rrs

    with_cname = {name for name, code in built if code == _CNAME}
    for name, code in built:
        if name in with_cname and code != _CNAME and built[name, code]:
            raise ZoneBuildError(f"{dotted(name)}: a CNAME cannot coexist with other records")

    cuts = _cuts(origin, built)
    occluded = {name for name in owners if _below(name, origin, cuts)}
    rrsets: dict[tuple[Labels, int], tuple[RR, ...]] = {}
    for (name, code), rrs in built.items():
        if name in occluded or (name in cuts and code == _NS):
            continue  # served as a referral, or not at all
        if rrs:
            rrsets[name, code] = rrs
    names: set[Labels] = set(cuts)
    for name in owners - occluded:
        # Every ancestor up to the origin exists too (empty non-terminals).
        for cut in range(len(name) - len(origin) + 1):
            names.add(name[cut:])
    referrals = {cut: _referral(cut, origin, built) for cut in cuts}
    managed = {(name_labels(name), qtype_code(rtype)) for name, rtype in content.managed}
    steered: dict[SetKey, SteeredRRs] = {}
    for key, st in content.steered.items():
        check_steered(key, st, content)
        at, served = build_steered(st, origin, built.get(set_key(key), ()))
        if at[0] not in occluded and at[0] not in cuts:
            steered[at] = served
    data = ZoneData(
        origin=origin,
        serial=content.soa.serial,
        rrsets=rrsets,
        cname_targets={
            name: tuple(label.lower() for label in rrs[0].rdata.label.label)
            for (name, code), rrs in rrsets.items()
            if code == _CNAME
        },
        codes=tuple(sorted({code for _name, code in built})),  # managed sets too
        names=frozenset(names),
        cuts=referrals,
        negative=(negative,),
        # A weighted set at a cut is never answered (the referral is), so it needs no rotor.
        weighted={
            key: Rotor(rrsets[key], w)
            for key, w in weights.items()
            if key in rrsets and key[0] not in cuts
        },
        managed_names=frozenset(name for name, _code in managed if name not in occluded),
        glue_names=frozenset(
            tuple(label.lower() for label in rr.rname.label)
            for referral in referrals.values()
            for rr in referral.glue
        ),
        steered=steered,
    )
    if signer is None:
        return data
    types: dict[Labels, set[int]] = {}
    for (name, code), rrs in built.items():
        if name not in occluded:
            here = types.setdefault(name, set())
            if rrs and (name not in cuts or code in (_NS, _DS)):
                here.add(code)
    owner_types = {name: frozenset(t) for name, t in types.items()}
    return replace(data, secure=secure_zone(signer, _served(data, managed, owner_types)))


def _served(
    data: ZoneData,
    managed: frozenset[SetKey] | set[SetKey],
    owner_types: dict[Labels, frozenset[int]] | None = None,
) -> Served:
    """What the signer reads of a zone (`secure.Served`)."""
    return Served(
        origin=data.origin,
        rrsets=data.rrsets,
        cuts=frozenset(data.cuts),
        weighted=frozenset(data.weighted),
        steered={at: (st.groups, frozenset(st.rotors)) for at, st in data.steered.items()},
        managed=frozenset(managed),
        negative_ttl=data.negative[0].ttl,
        owner_types=owner_types or {},
    )


def _update_zone(
    data: ZoneData,
    old: ZoneContent,
    new: ZoneContent,
    differ: Sequence[RecordSet] | None = None,
) -> ZoneData | None:
    """`data` (built from `old`) for `new`, parsing only the managed sets that differ:
    the cost of a publish is that of its change.  None when `new` differs in more than its
    managed sets' values and the serial (then the zone is built anew).

    `differ`: the sets of `new` that differ from `old`'s, in `new`'s order, when already
    known (a publish's `Delta.added`); else they are found here.
    """
    a, b = old.soa, new.soa
    if (
        new.static is not old.static
        or new.origin != old.origin
        or (a.mname, a.rname, a.refresh, a.retry, a.expire, a.minimum, a.ttl)
        != (b.mname, b.rname, b.refresh, b.retry, b.expire, b.minimum, b.ttl)
        or new.managed.keys() != old.managed.keys()
    ):
        return None
    origin = data.origin
    # First everything a changed set needs, then the copies of the zone's big tables, changed
    # in one go: while they are young, every collection of the young generation walks them,
    # and building ten thousand sets next to them would run hundreds of those.
    if differ is None:
        differ = [
            rs
            for key, rs in new.managed.items()
            if (before := old.managed[key]) is not rs and before != rs
        ]
    changes: list[tuple[SetKey, tuple[RR, ...], Rotor | None]] = []
    was = old.managed
    for rs in differ:
        at, rrs, kept = build_managed(rs, origin, data.rrsets, was.get((rs.name, rs.rtype)))
        name, code = at
        if name not in data.managed_names:
            continue  # occluded by a delegation: not served
        if name in data.glue_names:
            return None  # its addresses are glue in a referral
        w = rotation_weights(rs, code, kept)
        rotor = Rotor(rrs, w) if w is not None and rrs else None
        changes.append((at, rrs, rotor))
    rrsets, weighted = dict(data.rrsets), dict(data.weighted)
    for at, rrs, rotor in changes:
        if rrs:
            rrsets[at] = rrs
        else:
            rrsets.pop(at, None)  # the name stays: NODATA
        if rotor is not None:
            weighted[at] = rotor
        elif weighted:
            weighted.pop(at, None)
    steered = update_steered(data, old, new, rrsets)
    soa_rr, negative = _soa(new, origin)
    rrsets[origin, _SOA] = (soa_rr,)
    updated = replace(
        data,
        serial=new.soa.serial,
        rrsets=rrsets,
        weighted=weighted,
        negative=(negative,),
        steered=steered,
    )
    if data.secure is None:
        return updated
    served = _served(updated, data.secure.managed)
    moved = [at for at, st in steered.items() if data.steered.get(at) is not st]
    moved += [at for at in data.steered if at not in steered]
    secure = update_secure(data.secure, served, [c[0] for c in changes], moved)
    return None if secure is None else replace(updated, secure=secure)


def _below(name: Labels, origin: Labels, cuts: Iterable[Labels]) -> bool:
    """True if ``name`` is strictly below one of ``cuts`` (and so not ours to serve)."""
    return any(name[cut:] in cuts for cut in range(1, len(name) - len(origin)))


def _cuts(origin: Labels, built: Mapping[tuple[Labels, int], tuple[RR, ...]]) -> frozenset[Labels]:
    """The topmost names below the apex that have NS records: delegations (RFC 1034 §4.2.1)."""
    delegated = {name for (name, code), rrs in built.items() if code == _NS and rrs}
    delegated.discard(origin)
    for name in delegated:
        if name[0] == WILDCARD:
            raise ZoneBuildError(f"{dotted(name)}: a wildcard cannot be a delegation")
    return frozenset(name for name in delegated if not _below(name, origin, delegated))


def _referral(
    cut: Labels, origin: Labels, built: Mapping[tuple[Labels, int], tuple[RR, ...]]
) -> Referral:
    """The NS set at ``cut`` and, as glue, the addresses of its nameservers inside the zone."""
    ns = built[cut, _NS]
    glue: list[RR] = []
    depth = len(origin)
    for rr in ns:
        target = tuple(label.lower() for label in rr.rdata.label.label)
        if len(target) >= depth and (depth == 0 or target[-depth:] == origin):
            glue.extend(built.get((target, _A), ()))
            glue.extend(built.get((target, _AAAA), ()))
    return Referral(ns, tuple(glue), cut)


class ZoneSnapshot:
    """Every zone the server answers for, frozen; build a new one to change anything.

    ``signers``: the zones signed (origin as served, e.g. ``example.test.``), each with its
    `ZoneSigner`; a zone whose signer changes is built anew.  ``refreshed``: this version
    re-made signatures of data that did not change (so every name's answers may differ).
    """

    __slots__ = ("_pick", "_zones", "refreshed", "signers")

    def __init__(
        self,
        zones: Iterable[ZoneData] = (),
        pick: Pick = advance,
        signers: Mapping[str, ZoneSigner] | None = None,
        refreshed: bool = False,
    ) -> None:
        self._zones: Mapping[Labels, ZoneData] = {z.origin: z for z in zones}
        self._pick = pick
        self.signers: Mapping[str, ZoneSigner] = signers or {}
        self.refreshed = refreshed

    @classmethod
    def build(
        cls, zones: Sequence[ZoneContent], signers: Mapping[str, ZoneSigner] | None = None
    ) -> ZoneSnapshot:
        """Parse and index every zone.

        :raises ZoneBuildError: if a zone is given twice or any record cannot be served.
        """
        signers = signers or {}
        built = [_build_zone(z, signers.get(z.origin)) for z in zones]
        origins = [z.origin for z in built]
        if len(set(origins)) != len(origins):
            raise ZoneBuildError("a zone is given more than once")
        return cls(built, signers=signers)

    def signed_by(self, signers: Mapping[str, ZoneSigner]) -> ZoneSnapshot:
        """The same zones, to be signed by `signers` from the next update of each zone on."""
        return ZoneSnapshot(self._zones.values(), self._pick, signers)

    def update(
        self,
        versions: Sequence[tuple[ZoneContent | None, ZoneContent]],
        deltas: Sequence[Delta | None] = (),
    ) -> ZoneSnapshot:
        """A snapshot with these zones replaced: (what the zone was, what it is now).  A zone
        whose static part is the same is updated in place of a rebuild, parsing only the
        managed sets that changed; the other zones are shared.

        :param deltas: when given, one per version: `diff(old, new)` (or None), so that the
            changed sets need not be found again.
        :raises ZoneBuildError: if a new zone cannot be served (nothing changes then).
        """
        zones = dict(self._zones)
        refreshed = False
        for i, (old, new) in enumerate(versions):
            origin = name_labels(new.origin)
            current = zones.get(origin)
            signer = self.signers.get(new.origin)
            updated = None
            if (
                old is not None
                and current is not None
                and (current.secure.signer if current.secure else None) is signer
            ):
                delta = deltas[i] if deltas else None
                differ = delta.added if delta is not None and not delta.full else None
                updated = _update_zone(current, old, new, differ)
            zones[origin] = updated if updated is not None else _build_zone(new, signer)
            secure = zones[origin].secure
            refreshed = refreshed or (secure is not None and secure.refreshed)
        return ZoneSnapshot(zones.values(), self._pick, self.signers, refreshed)

    def heavy(self, origin: str) -> bool:
        """Whether the next update of `origin` signs much: its signer changed (every RRset
        anew) or its signatures are due for refresh."""
        zone = self._zones.get(name_labels(origin))
        signer = self.signers.get(origin)
        if zone is None or signer is None:
            return False
        secure = zone.secure
        return secure is None or secure.signer is not signer or signer.clock() >= secure.refresh_at

    def secured(self) -> dict[str, Secure]:
        """Each signed zone's signatures (origin as served → `Secure`)."""
        return {dotted(o): z.secure for o, z in self._zones.items() if z.secure is not None}

    def zone(self, origin: str) -> ZoneData | None:
        """The zone `origin` (absolute) as served, or None."""
        return self._zones.get(name_labels(origin))

    @property
    def weighted(self) -> bool:
        """Whether any zone has a weighted record set (answers that rotate)."""
        return any(
            z.weighted or any(st.rotors for st in z.steered.values()) for z in self._zones.values()
        )

    def pinned(self, pick: Pick) -> ZoneSnapshot:
        """The same zones, with ``pick`` choosing each weighted set's record instead of the
        rotation (the fast path builds one reply per choice with it)."""
        return ZoneSnapshot(self._zones.values(), pick, self.signers)

    @property
    def origins(self) -> tuple[str, ...]:
        """The zones served, as absolute lower-case names."""
        return tuple(sorted(dotted(origin) for origin in self._zones))

    def serial(self, origin: str) -> int | None:
        """The SOA serial served for ``origin``, or None if that zone is not served."""
        try:
            zone = self._zones.get(name_labels(origin if origin.endswith(".") else origin + "."))
        except ZoneBuildError:
            return None
        return None if zone is None else zone.serial

    def find_zone(self, qname: Labels) -> ZoneData | None:
        """The most specific zone that contains ``qname`` (lower-case labels)."""
        for cut in range(len(qname) + 1):
            zone = self._zones.get(qname[cut:])
            if zone is not None:
                return zone
        return None

    def lookup(
        self, qname: Labels, qtype: int, where: Placer | None = None, do: bool = False
    ) -> Answer:
        """Answer one IN-class question; ``qname`` must be lower-case labels.  ``where``
        places the client for steered sets (None: the default answers); ``do``: the query
        asks for DNSSEC records (a signed zone adds signatures and proofs)."""
        zone = self.find_zone(qname)
        return REFUSED if zone is None else lookup(zone, qname, qtype, self._pick, where, do)

    def resolve(
        self, request: DNSRecord, where: Placer | None = None, do: bool = False
    ) -> DNSRecord:
        """Build the reply to a parsed request: a pure function of the request, the snapshot
        and, for steered names, where ``where`` places the client.

        EDNS and truncation are left to the caller (see :mod:`dnsfailover.server.wire`).
        """
        header = request.header
        reply = DNSRecord(
            DNSHeader(id=header.id, bitmap=0, qr=1, opcode=header.opcode, rd=header.rd)
        )
        reply.header.cd = header.cd
        questions = list(request.questions)
        if int(header.opcode) != _QUERY:
            reply.header.rcode = int(RCODE.NOTIMP)
            reply.add_question(*questions)
            return reply
        if len(questions) != 1:
            reply.header.rcode = int(RCODE.FORMERR)
            return reply
        question = questions[0]
        qtype = int(question.qtype)
        if qtype in _FORMERR_QTYPES:
            reply.header.rcode = int(RCODE.FORMERR)
            return reply
        reply.add_question(question)
        if int(question.qclass) != _IN or qtype in _REFUSED_QTYPES:
            reply.header.rcode = int(RCODE.REFUSED)
            return reply
        if qtype in _NOTIMP_QTYPES:
            reply.header.rcode = int(RCODE.NOTIMP)
            return reply
        qname = tuple(bytes(label).lower() for label in question.qname.label)
        found = self.lookup(qname, qtype, where, do)
        reply.header.rcode = found.rcode
        reply.header.aa = int(found.authoritative)
        reply.add_answer(*found.answer)
        reply.add_auth(*found.authority)
        reply.add_ar(*found.additional)
        return reply
