"""Signed zones in the embedded server: the signatures a snapshot serves beside its data.

A zone with `dnssec:` has a `ZoneSigner` (its keys, signature policy and denial method).
Building the zone signs every authoritative RRset, its weighted sets' single-record answers
and its steered groups (each group's answer is an RRset of its own), adds the DNSKEY (and
CDS/CDNSKEY, NSEC3PARAM) RRsets at the apex and builds the NSEC/NSEC3 chain
(`proofs.build_chain`).  A publish re-signs only the sets it changed, the SOA, and the
chain records whose type bitmaps changed, in the same new snapshot as the data: a reader
sees an answer with its signature or the previous answer with its own, never a mix.

Signatures are cached by content (owner, type, TTL, rdatas): a failback re-serves the
signatures the previous state had, at no cost.  The signing time is the clock rounded down
to `QUANTUM`, so that nodes with the same keys (ECDSA with RFC 6979 nonces and Ed25519 are
deterministic) make byte-identical signatures for the same data.  A signature that has less
than `refresh` of its validity left is re-made at the next publish after that point (the
node publishes then: `refresh_at`).
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from dnslib import RD, RR, DNSBuffer, DNSLabel

from dnsfailover.dnssec import sign as signer_core
from dnsfailover.dnssec.keys import KeySet, SigningKey
from dnsfailover.dnssec.sign import Policy
from dnsfailover.model import RecordSet
from dnsfailover.rdata import Labels
from dnsfailover.server.proofs import (
    NSEC3PARAM,
    NSEC3PARAM_RDATA,
    Chain,
    Record,
    Sigs,
    build_chain,
    raw_rr,
    record_rr,
    wire,
)
from dnsfailover.server.rrsets import build_rrset, rotation_weights

SetKey = tuple[Labels, int]
QUANTUM = 3600
"""Signing times are rounded down to this (seconds): see the module's docstring."""
SOA, NS, DS, DNSKEY, CDS, CDNSKEY, RRSIG = 6, 2, 43, 48, 59, 60, 46
KSK_SIGNED = frozenset({DNSKEY, CDS, CDNSKEY})
SIGNER_SETS = (DNSKEY, CDS, CDNSKEY, NSEC3PARAM)
"""The apex RRsets the signer adds to a zone's data."""
_IN = 1
_CACHE = 131_072


class _Canonical(DNSBuffer):  # type: ignore[misc]  # dnslib is untyped
    """Packs rdata in canonical form (RFC 4034 §6.2): names uncompressed, lower case."""

    def encode_name(self, name: object) -> None:
        label = name if isinstance(name, DNSLabel) else DNSLabel(name)
        self.encode_name_nocompress(DNSLabel([part.lower() for part in label.label]))


_canonical: dict[int, tuple[object, bytes]] = {}
"""Canonical wire forms by rdata object: a managed set's values are shared objects (see
`rrsets._managed_rdata`), so a failover of ten thousand sets packs each address once.  The
object is kept beside its wire form, so its id is not reused while the entry lives."""


def canonical(rr: RR) -> bytes:
    rdata = rr.rdata
    found = _canonical.get(id(rdata))
    if found is not None and found[0] is rdata:
        return found[1]
    buffer = _Canonical()
    rdata.pack(buffer)
    wire_form = bytes(buffer.data)
    if len(_canonical) >= _CACHE:
        _canonical.clear()
    _canonical[id(rdata)] = (rdata, wire_form)
    return wire_form


def expiration(sig: RR) -> int:
    """When an RRSIG RR expires (POSIX seconds)."""
    return int(struct.unpack_from("!I", sig.rdata.data, 8)[0])


@dataclass(frozen=True, slots=True)
class Signed:
    """The signatures of one served set: the whole RRset's, and for a weighted set one per
    single-record answer (a query gets one record, so its signature must cover that one)."""

    whole: Sigs
    choices: tuple[Sigs, ...] = ()

    def sigs(self) -> Iterable[Sigs]:
        yield self.whole
        yield from self.choices


@dataclass(frozen=True, slots=True)
class Secure:
    """What a signed zone serves beside its data (see the module's docstring)."""

    signer: ZoneSigner
    managed: frozenset[SetKey]
    """The zone's managed sets (their signatures are cached: see `ZoneSigner.sign`)."""
    sets: Mapping[SetKey, Signed]
    """Every authoritative RRset's signatures, DS at delegations included."""
    groups: Mapping[SetKey, Mapping[str, Signed]]
    """Steered sets: each location group's answer's signatures."""
    chain: Chain
    negative: Sigs
    """The SOA's signatures with the TTL of the negative answers' SOA."""
    refresh_at: float
    """When the first signature needs re-making (a publish then re-makes what is due)."""
    refreshed: bool = False
    """This version re-made signatures of data that did not change (a refresh)."""


@dataclass
class SignerStats:
    """Counters for status and metrics."""

    signatures: int = 0
    seconds: float = 0.0  # CPU spent signing (thread time)
    last_refresh: float = 0.0
    problem: str | None = None


class ZoneSigner:
    """Signs one zone's RRsets with its keys (see the module's docstring).  Thread-safe: a
    build may run on a thread while the loop signs a small update (one at a time in
    practice; the cache is guarded)."""

    def __init__(
        self,
        keys: KeySet,
        policy: Policy,
        nsec3: bool = False,
        *,
        dnskey_ttl: int = 3600,
        cds: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys, self.policy, self.nsec3 = keys, policy, nsec3
        self.dnskey_ttl, self.cds, self.clock = dnskey_ttl, cds, clock
        self.stats = SignerStats()
        self._cache: dict[tuple[bytes, int, int, tuple[bytes, ...]], Sigs] = {}
        self._lock = threading.Lock()

    def moment(self) -> float:
        """The signing time of a publish now (see `QUANTUM`)."""
        now = self.clock()
        return now - now % QUANTUM

    def due(self, sigs: Sigs, at: float | None = None) -> bool:
        """Whether `sigs` need re-making at `at` (default: now): less than `refresh` of the
        validity left."""
        left = min((expiration(s) for s in sigs), default=0) - (self.clock() if at is None else at)
        return left < self.policy.refresh * self.policy.validity

    @property
    def window(self) -> float:
        """A refresh re-makes what is due within this much time too (the expiry jitter's
        spread, at least an hour): one re-signing publish per window, not one a second."""
        return max(3600.0, self.policy.jitter * self.policy.validity)

    def apex_sets(self, origin: Labels) -> list[tuple[int, tuple[RR, ...]]]:
        """The RRsets the signer adds at the apex: DNSKEY, CDS and CDNSKEY (`cds`), and
        NSEC3PARAM with NSEC3."""
        owner = DNSLabel(origin)
        keys = [k.dnskey.to_wire() or b"" for k in self.keys.keys]
        out = [(DNSKEY, tuple(RR(owner, DNSKEY, _IN, self.dnskey_ttl, RD(k)) for k in keys))]
        if self.cds and self.keys.ksks:
            cds, cdnskey = signer_core.cds(self.keys, self.dnskey_ttl)
            for code, rrset in ((CDS, cds), (CDNSKEY, cdnskey)):
                rrs = tuple(
                    RR(owner, code, _IN, self.dnskey_ttl, RD(rd.to_wire() or b"")) for rd in rrset
                )
                out.append((code, rrs))
        if self.nsec3:
            out.append((NSEC3PARAM, (RR(owner, NSEC3PARAM, _IN, 0, RD(NSEC3PARAM_RDATA)),)))
        return out

    def sign(
        self, name: Labels, code: int, rrs: tuple[RR, ...], now: float, cached: bool = True
    ) -> Sigs:
        """The RRSIG RRs of the RRset `rrs` (owner `name`, type `code`), from the cache when
        it holds them with enough validity left (`cached`: managed sets, whose answers come
        back after a failback; the static part is signed once and refreshed)."""
        if not rrs:
            return ()
        owner = wire(name)
        rdatas = tuple(sorted({canonical(rr) for rr in rrs}))
        ttl = rrs[0].ttl
        if not cached:
            return self._make(rrs[0].rname, name, code, ttl, rdatas, now)
        key = (owner, code, ttl, rdatas)
        with self._lock:
            found = self._cache.get(key)
        if found is not None and not self.due(found):
            return found
        sigs = self._make(rrs[0].rname, name, code, ttl, rdatas, now)
        with self._lock:
            if len(self._cache) >= _CACHE:
                self._cache.clear()
            self._cache[key] = sigs
        return sigs

    def _make(
        self,
        label: DNSLabel,
        name: Labels,
        code: int,
        ttl: int,
        rdatas: Iterable[bytes],
        now: float,
    ) -> Sigs:
        keys: tuple[SigningKey, ...] = self.keys.ksks if code in KSK_SIGNED else self.keys.zsks
        labels = len(name) - (1 if name and name[0] == b"*" else 0)
        started = time.thread_time()
        made = signer_core.sign_wire(wire(name), labels, code, ttl, rdatas, keys, now, self.policy)
        self.stats.seconds += time.thread_time() - started
        self.stats.signatures += len(made)
        return tuple(raw_rr(label, RRSIG, ttl, RD(sig)) for sig in made)

    def record(self, now: float) -> Callable[[Labels, int, int, bytes], Record]:
        """A chain record maker signing at `now` (see `proofs.SignRecord`)."""

        def make(owner: Labels, rtype: int, ttl: int, rdata: bytes) -> Record:
            rr = record_rr(owner, rtype, ttl, rdata)
            return rr, self._make(rr.rname, owner, rtype, ttl, (rdata,), now)

        return make


def owned(sigs: Sigs, owner: DNSLabel | None, ttl: int | None = None) -> Sigs:
    """`sigs` as owned by `owner` (a name a wildcard answered for: RFC 4035 §3.1.3.3) and
    served with `ttl` (None: as they are)."""
    if owner is None and ttl is None:
        return sigs
    return tuple(
        raw_rr(owner or s.rname, RRSIG, s.ttl if ttl is None else ttl, s.rdata) for s in sigs
    )


class _Sets:
    """Signs served sets: plain, weighted (each choice too) and steered groups."""

    def __init__(self, signer: ZoneSigner, now: float, served: Served, fresh: bool = False) -> None:
        self.signer, self.now, self.served, self.fresh = signer, now, served, fresh

    def one(self, at: SetKey, rrs: tuple[RR, ...], weighted: bool | None = None) -> Signed:
        # a refresh signs anew (the cache's copy is as old as the one it replaces)
        sign, cached = self.signer.sign, at in self.served.managed and not self.fresh
        whole = sign(at[0], at[1], rrs, self.now, cached)
        if weighted is None:
            weighted = at in self.served.weighted
        if not weighted or len(rrs) < 2:
            return Signed(whole)
        return Signed(whole, tuple(sign(at[0], at[1], (rr,), self.now, cached) for rr in rrs))

    def groups(
        self, at: SetKey, groups: Mapping[str, tuple[RR, ...]], rotors: Iterable[str]
    ) -> dict[str, Signed]:
        rotating = set(rotors)
        return {g: self.one(at, rrs, g in rotating) for g, rrs in groups.items()}


@dataclass(frozen=True, slots=True)
class Served:
    """What a zone serves, as `secure_zone` and `update_secure` read it."""

    origin: Labels
    rrsets: Mapping[SetKey, tuple[RR, ...]]
    cuts: frozenset[Labels]
    weighted: frozenset[SetKey]
    steered: Mapping[SetKey, tuple[Mapping[str, tuple[RR, ...]], frozenset[str]]]
    managed: frozenset[SetKey]
    negative_ttl: int
    owner_types: Mapping[Labels, frozenset[int]] = field(default_factory=dict)
    """Every authoritative owner → its types (a build's; an update keeps the chain's)."""


def _signed_here(key: SetKey, cuts: frozenset[Labels]) -> bool:
    return key[0] not in cuts or key[1] == DS


def secure_zone(signer: ZoneSigner, served: Served) -> Secure:
    """Sign a whole zone (a build): every set, the chain, the negative SOA."""
    now = signer.moment()
    sets = _Sets(signer, now, served)
    signed = {
        key: sets.one(key, rrs)
        for key, rrs in served.rrsets.items()
        if _signed_here(key, served.cuts)
    }
    groups = {at: sets.groups(at, g, rot) for at, (g, rot) in served.steered.items()}
    chain = build_chain(
        served.origin,
        served.owner_types,
        served.cuts,
        served.negative_ttl,  # RFC 9077: min(SOA TTL, SOA minimum), as the negative SOA's
        signer.nsec3,
        signer.record(now),
    )
    secure = Secure(signer, served.managed, signed, groups, chain, (), 0.0)
    return _finish(secure, served, refreshed=False)


def _finish(
    secure: Secure, served: Served, *, refreshed: bool, made: Iterable[Sigs] | None = None
) -> Secure:
    """`secure` with its negative SOA signatures and refresh time: from every signature,
    or (`made`: the signatures an update made) the earlier of the old time and theirs:
    replaced signatures are younger, so the time can only be early, never late (a refresh
    that comes early re-makes what is due and computes it again)."""
    soa = secure.sets[served.origin, SOA].whole
    negative = owned(soa, None, served.negative_ttl)
    if made is None:
        at = _refresh_at(_all_sigs(secure), secure.signer.policy)
    else:
        at = min(secure.refresh_at, _refresh_at(made, secure.signer.policy))
    return replace(secure, negative=negative, refresh_at=at, refreshed=refreshed)


def _all_sigs(secure: Secure) -> Iterable[Sigs]:
    for signed in secure.sets.values():
        yield from signed.sigs()
    for groups in secure.groups.values():
        for signed in groups.values():
            yield from signed.sigs()
    for _rr, sigs in secure.chain.records.values():
        yield sigs


def _refresh_at(sigs: Iterable[Sigs], policy: Policy) -> float:
    first = min((expiration(s) for group in sigs for s in group), default=float("inf"))
    return first - policy.refresh * policy.validity


def update_secure(
    secure: Secure,
    served: Served,
    changed: Iterable[SetKey],
    steered: Iterable[SetKey],
) -> Secure | None:
    """`secure` for the next version of its zone, `served`: the `changed` sets and
    `steered` keys re-signed, the SOA re-signed, the bitmaps of names whose types changed
    remade, and every signature that is due re-made when the refresh time has come.
    None: the chain must be rebuilt (a name it does not know)."""
    signer = secure.signer
    now = signer.moment()
    changed, steered = list(changed), list(steered)
    sets = _Sets(signer, now, served)
    signed = dict(secure.sets)
    types = secure.chain.types
    retyped: dict[Labels, frozenset[int]] = {}
    for key in [*changed, (served.origin, SOA)]:
        name, code = key
        rrs = served.rrsets.get(key, ())
        if rrs and _signed_here(key, served.cuts):
            signed[key] = sets.one(key, rrs)
        else:
            signed.pop(key, None)
        if name in served.cuts:
            continue
        before = retyped.get(name, types.get(name))
        if before is None:
            return None
        now_types = before | {code} if rrs else before - {code}
        if now_types != before:
            retyped[name] = now_types
    groups = dict(secure.groups)
    for at in steered:
        entry = served.steered.get(at)
        if entry is None:
            groups.pop(at, None)
        else:
            groups[at] = sets.groups(at, *entry)
    chain = secure.chain
    if retyped:
        found = chain.retyped(retyped, signer.record(now))
        if found is None:
            return None
        chain = found
    fresh = replace(secure, sets=signed, groups=groups, chain=chain)
    if signer.clock() < secure.refresh_at:
        made = [
            *(sig for key in [*changed, (served.origin, SOA)] if key in signed
              for sig in signed[key].sigs()),
            *(sig for at in steered for v in groups.get(at, {}).values() for sig in v.sigs()),
            *(chain.records[chain.key(name)][1] for name in retyped),
        ]  # fmt: skip
        return _finish(fresh, served, refreshed=False, made=made)
    return _finish(_refreshed(fresh, served, now), served, refreshed=True)


def _refreshed(secure: Secure, served: Served, now: float) -> Secure:
    """Every signature due within the refresh window re-made (the data is the same)."""
    signer = secure.signer
    horizon = signer.clock() + signer.window

    def due(sigs: Sigs) -> bool:
        return signer.due(sigs, horizon)

    sets = _Sets(signer, now, served, fresh=True)
    signed = {
        key: sets.one(key, served.rrsets[key]) if any(map(due, value.sigs())) else value
        for key, value in secure.sets.items()
    }
    groups = {
        at: (
            sets.groups(at, *served.steered[at])
            if any(due(s) for v in by_group.values() for s in v.sigs())
            else by_group
        )
        for at, by_group in secure.groups.items()
    }
    chain = secure.chain
    stale = {k: r for k, r in chain.records.items() if due(r[1])}
    if stale:
        make = signer.record(now)
        records = dict(chain.records)
        for key, (rr, _sigs) in stale.items():
            owner = tuple(bytes(label).lower() for label in rr.rname.label)
            records[key] = make(owner, rr.rtype, rr.ttl, rr.rdata.data)
        chain = replace(chain, records=records)
    signer.stats.last_refresh = signer.clock()
    return replace(secure, sets=signed, groups=groups, chain=chain)


def presign(signer: ZoneSigner, origin: Labels, sets: Iterable[RecordSet]) -> int:
    """Sign `sets` (answers a failover would serve) into `signer`'s cache ahead of time, so
    that the failover finds their signatures made; returns how many were made (a weighted
    set's one-record answers included)."""
    now = signer.moment()
    before = signer.stats.signatures
    for rs in sets:
        if not rs.values:
            continue
        name, code, rrs, kept = build_rrset(rs, origin)
        signer.sign(name, code, rrs, now)
        if len(rrs) > 1 and rotation_weights(rs, code, kept) is not None:
            for rr in rrs:
                signer.sign(name, code, (rr,), now)
    return signer.stats.signatures - before
