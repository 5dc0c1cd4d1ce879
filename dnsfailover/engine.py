"""The failover engine: a pure function from config + health + previous state to answers.

No I/O and no clock of its own: `now` is a parameter, so every rule is table-testable.
Both policies are handled as tiers: an active-active record is one tier.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dnsfailover.fields import absolute_name
from dnsfailover.model import RecordSet, Soa, State, ZoneContent
from dnsfailover.schema import (
    ActiveActive,
    ActivePassive,
    Config,
    SoaConfig,
    StaticRecord,
    Tier,
    ZoneConfig,
)

FailoverRecord = ActiveActive | ActivePassive


@dataclass(frozen=True, slots=True)
class NameState:
    """What the engine remembers of one managed name between decisions."""

    active: str | None = None  # name of the serving tier; None before the first decision
    healthy_since: Mapping[str, float] = field(default_factory=dict)  # tier → since when
    answer: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineState:
    names: Mapping[str, NameState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """A managed name's answer changed; `kind` is failover, failback, answer or all_down."""

    name: str
    at: float
    kind: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class NameDecision:
    """Why one name answers what it answers."""

    name: str
    zone: str
    policy: str
    answer: tuple[str, ...]
    tier: str | None
    mode: str  # healthy | degraded | all_down | no_data
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    zones: tuple[ZoneContent, ...]  # serial 0: the service numbers what it publishes
    names: Mapping[str, NameDecision]
    transitions: tuple[Transition, ...]
    state: EngineState
    wake_at: float | None  # re-decide then even if no health changes (hold-down expiry)


def decide(
    config: Config,
    health: Mapping[str, State],
    previous: EngineState,
    now: float,
    *,
    failback: frozenset[str] = frozenset(),
) -> Decision:
    """Decide every managed name's answer.

    :param health: voted state per target key; missing keys are UNKNOWN.
    :param failback: names an operator asked to fail back (for `failback: manual`).
    """
    names: dict[str, NameDecision] = {}
    states: dict[str, NameState] = {}
    transitions: list[Transition] = []
    wakes: list[float] = []
    for origin, name, record in config.managed():
        prev = previous.names.get(name, NameState())
        nd, ns, wake = _decide_name(
            config, origin, name, record, health, prev, now, name in failback
        )
        names[name], states[name] = nd, ns
        if wake is not None:
            wakes.append(wake)
        if prev.active is not None and nd.answer != prev.answer:
            transitions.append(
                Transition(
                    name, now, _kind(prev, ns, nd, record), prev.answer, nd.answer, nd.reason
                )
            )
    zones = tuple(build_zone(origin, zone, names) for origin, zone in config.zones.items())
    return Decision(
        zones, names, tuple(transitions), EngineState(states), min(wakes) if wakes else None
    )


def _kind(prev: NameState, ns: NameState, nd: NameDecision, record: FailoverRecord) -> str:
    if nd.mode == "all_down":
        return "all_down"
    if prev.active != ns.active and prev.active is not None and ns.active is not None:
        order = [t.name for t in record.tiers]
        return "failback" if order.index(ns.active) < order.index(prev.active) else "failover"
    return "answer"


def _up(
    tier: Tier, record: FailoverRecord, config: Config, health: Mapping[str, State]
) -> list[str]:
    return [
        e.address
        for e in tier.endpoints
        if health.get(config.health_key(record, e), State.UNKNOWN) is State.UP
    ]


def _known(tier: Tier, record: FailoverRecord, config: Config, health: Mapping[str, State]) -> bool:
    return any(
        health.get(config.health_key(record, e), State.UNKNOWN) is not State.UNKNOWN
        for e in tier.endpoints
    )


def _decide_name(
    config: Config,
    origin: str,
    name: str,
    record: FailoverRecord,
    health: Mapping[str, State],
    prev: NameState,
    now: float,
    failback_requested: bool,
) -> tuple[NameDecision, NameState, float | None]:
    tiers = record.tiers
    order = [t.name for t in tiers]
    up = {t.name: _up(t, record, config, health) for t in tiers}
    meets = {t.name: len(up[t.name]) >= t.min_healthy for t in tiers}
    since = {t: prev.healthy_since.get(t, now) for t in order if meets[t]}
    active = prev.active if prev.active in order else None
    wake: float | None = None
    note = ""

    healthy = [t for t in order if meets[t]]
    if active is None:
        active = healthy[0] if healthy else order[0]
        note = "first decision"
    elif healthy and not meets[active]:
        # The serving tier failed: take the best healthy tier, preferring higher-priority
        # tiers only once they may be failed back to, then lower-priority ones.
        rank = order.index(active)
        higher = [t for t in healthy if order.index(t) < rank]
        lower = [t for t in healthy if order.index(t) > rank]
        ready = [t for t in higher if _may_fail_back(record, since[t], now, failback_requested)]
        chosen = (ready or lower or higher)[0]
        note = f"tier {active} below min_healthy"
        active = chosen
    elif healthy and order.index(healthy[0]) < order.index(active):
        rank = order.index(active)
        higher = [t for t in healthy if order.index(t) < rank]
        ready = [t for t in higher if _may_fail_back(record, since[t], now, failback_requested)]
        if ready:
            note = (
                "operator requested failback"
                if failback_requested
                and isinstance(record, ActivePassive)
                and record.failback == "manual"
                else f"{ready[0]} healthy for hold_down"
            )
            active = ready[0]
        elif isinstance(record, ActivePassive) and record.failback == "manual":
            note = f"{healthy[0]} is healthy; failback is manual and awaits an operator"
        else:
            assert isinstance(record, ActivePassive)
            wake = min(since[t] + record.hold_down for t in higher)
            note = f"{healthy[0]} is healthy; failback after hold_down at {wake:.3f}"

    tier = tiers[order.index(active)]
    answer: tuple[str, ...]
    if meets[active]:
        answer = _sorted(up[active])
        mode = "healthy" if len(up[active]) == len(tier.endpoints) else "degraded"
        reason = f"{len(up[active])}/{len(tier.endpoints)} endpoints up"
        reason = f"tier {active}: {reason}" if len(tiers) > 1 else reason
    elif not any(_known(t, record, config, health) for t in tiers):
        answer = _sorted(e.address for e in tier.endpoints)
        mode, reason = "no_data", "no health data yet: serving every endpoint of the tier"
    else:
        mode = "all_down"
        if record.all_down == "serve_all":
            answer = _sorted(e.address for e in tier.endpoints)
            reason = "no tier meets min_healthy: all_down=serve_all (fail open)"
        elif record.all_down == "serve_none":
            answer = ()
            reason = "no tier meets min_healthy: all_down=serve_none (NODATA)"
        else:
            answer = _sorted(record.fallback)
            reason = "no tier meets min_healthy: all_down=fallback"
    if len(tiers) > 1 or note:
        reason = f"{reason}; {note}" if note else reason
    decision = NameDecision(
        name, origin, record.policy, answer, active if len(tiers) > 1 else None, mode, reason
    )
    return decision, NameState(active, since, answer), wake


def _may_fail_back(record: FailoverRecord, since: float, now: float, requested: bool) -> bool:
    if not isinstance(record, ActivePassive):
        return True
    if record.failback == "manual":
        return requested
    return now - since >= record.hold_down


def _sorted(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(addresses), key=ipaddress.ip_address))


def build_zone(
    origin: str, zone: ZoneConfig, names: Mapping[str, NameDecision], serial: int = 0
) -> ZoneContent:
    """The full content of one zone: apex NS, static records and managed answers."""
    sets: dict[tuple[str, str], RecordSet] = {}
    if zone.nameservers:
        ns = RecordSet(origin, "NS", zone.ns_ttl, tuple(sorted(zone.nameservers)))
        sets[(origin, "NS")] = ns
    for label, value in zone.records.items():
        records: tuple[StaticRecord, ...] = value if isinstance(value, tuple) else (value,)
        fqdn = absolute_name(label, origin)
        for r in records:
            key = (fqdn, r.type)
            old = sets.get(key)
            values = tuple(sorted(set(r.values) | set(old.values if old else ())))
            sets[key] = RecordSet(fqdn, r.type, min(r.ttl, old.ttl) if old else r.ttl, values)
    for label, record in zone.failover.items():
        fqdn = absolute_name(label, origin)
        nd = names.get(fqdn)
        if nd is not None:
            # An empty answer (serve_none) stays as an empty set: the name still exists,
            # so resolvers get NODATA rather than a cached NXDOMAIN for the whole name.
            sets[(fqdn, record.type)] = RecordSet(fqdn, record.type, record.ttl, nd.answer)
    # A zone published by an external provider has no SOA of ours; a placeholder keeps the
    # value shape uniform and is never published.
    soa = zone.soa or SoaConfig(mname=origin, rname=f"hostmaster.{origin}")
    return ZoneContent(
        origin,
        Soa(soa.mname, soa.rname, serial, soa.refresh, soa.retry, soa.expire, soa.minimum, soa.ttl),
        tuple(sets[k] for k in sorted(sets)),
    )
