"""The failover engine: a pure function from config + health + previous state to answers.

No I/O and no clock of its own: `now` is a parameter, so every rule is table-testable.
Both policies are handled as tiers: an active-active record is one tier.  The rules on top
of plain health (overrides, interlocks, damping, capacity, staged failback, shadow mode)
live in `dnsfailover.policy`; this module runs them in order for every name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from dnsfailover.config.schema import (
    ActiveActive,
    ActivePassive,
    Config,
    SoaConfig,
    ZoneConfig,
)
from dnsfailover.engine import damping
from dnsfailover.engine.answer import answer_for
from dnsfailover.engine.interlocks import endpoint_keys, tripped
from dnsfailover.engine.overrides import Override, apply, touches
from dnsfailover.engine.settings import FailoverRecord, settings
from dnsfailover.engine.tiers import Inputs, select
from dnsfailover.engine.values import Decision, EngineState, NameDecision, NameState, Transition
from dnsfailover.fields import absolute_name
from dnsfailover.model import RecordSet, Soa, State, ZoneContent

__all__ = [
    "Decision",
    "EngineState",
    "NameDecision",
    "NameState",
    "Transition",
    "build_zone",
    "decide",
    "vet_override",
]


def decide(
    config: Config,
    health: Mapping[str, State],
    previous: EngineState,
    now: float,
    *,
    overrides: Sequence[Override] = (),
    failback: frozenset[str] = frozenset(),
    reset_breaker: bool = False,
) -> Decision:
    """Decide every managed name's answer.

    :param health: voted state per target key; missing keys are UNKNOWN.
    :param overrides: operator overrides; expired ones are ignored.
    :param failback: names an operator asked to fail back (same as a FAILBACK override).
    :param reset_breaker: an operator accepts the current health: the circuit breaker
        takes it as its new baseline instead of freezing.
    """
    active = [o for o in overrides if o.active(now)]
    frozen = None if reset_breaker else tripped(config, health, previous)
    keys = endpoint_keys(config)
    names: dict[str, NameDecision] = {}
    states: dict[str, NameState] = {}
    transitions: list[Transition] = []
    wakes: list[float] = []
    refused: dict[str, str] = {}
    for origin, name, record in config.managed():
        prev = previous.names.get(name, NameState())
        mine = [o for o in active if touches(o, name, record)]
        if frozen is not None and prev.active is not None and not any(o.force for o in mine):
            names[name], states[name] = _frozen(origin, name, record, prev, frozen), prev
            refused.update({o.id: frozen for o in mine})
            continue
        nd, ns, wake, why = _decide_name(
            config, origin, name, record, health, prev, now, mine, name in failback
        )
        if frozen is not None:
            nd = _note(nd, "override: forced past the circuit breaker")
        ns = replace(ns, down=tuple(sorted(k for k in keys[name] if health.get(k) is State.DOWN)))
        names[name], states[name] = nd, ns
        refused.update(why)
        wakes.extend(wake)
        wakes.extend(o.expires_at for o in mine if o.expires_at is not None)
        transition = _transition(name, now, record, prev, ns, nd)
        if transition is not None:
            transitions.append(transition)
    zones = tuple(build_zone(origin, zone, names) for origin, zone in config.zones.items())
    future = [w for w in wakes if w > now]
    return Decision(
        zones,
        names,
        tuple(transitions),
        EngineState(states),
        min(future) if future else None,
        frozen,
        refused,
    )


def vet_override(
    config: Config,
    health: Mapping[str, State],
    state: EngineState,
    overrides: Sequence[Override],
    candidate: Override,
    now: float,
) -> str | None:
    """Why `candidate` would trip an interlock (None: it is fine, or it is forced).

    It is decided as if already set, unforced, next to the overrides in force; what the
    engine would set aside is the refusal.  The same checks run on every later decision,
    so an override that becomes unsafe later is set aside then (and says so).
    """
    if candidate.force:
        return None
    others = [o for o in overrides if o.id != candidate.id]
    trial = decide(config, health, state, now, overrides=[*others, replace(candidate, force=False)])
    return trial.refused.get(candidate.id)


def _note(nd: NameDecision, text: str) -> NameDecision:
    return replace(nd, reason=f"{nd.reason}; {text}", notes=(*nd.notes, text))


def _frozen(
    origin: str, name: str, record: FailoverRecord, prev: NameState, why: str
) -> NameDecision:
    note = f"interlock: {why}"
    return NameDecision(
        name,
        origin,
        record.policy,
        prev.answer,
        prev.active if len(record.tiers) > 1 else None,
        prev.mode or "degraded",
        f"frozen on the previous answer; {note}",
        weights=dict(prev.weights) or {a: 1 for a in prev.answer},
        would_answer=prev.would_answer if prev.mode else prev.answer,
        notes=(note,),
    )


def _transition(
    name: str,
    now: float,
    record: FailoverRecord,
    prev: NameState,
    ns: NameState,
    nd: NameDecision,
) -> Transition | None:
    if prev.active is None:
        return None
    if nd.shadow:
        before = prev.would_answer if prev.mode else prev.answer
        if nd.would_answer == before:
            return None
        kind = _kind(prev, ns, nd, record)
        why = f"shadow: would {kind} (nothing published): {nd.reason}"
        return Transition(name, now, "shadow", before, nd.would_answer, why)
    if nd.answer == prev.answer:
        return None
    return Transition(name, now, _kind(prev, ns, nd, record), prev.answer, nd.answer, nd.reason)


def _kind(prev: NameState, ns: NameState, nd: NameDecision, record: FailoverRecord) -> str:
    if nd.mode == "all_down":
        return "all_down"
    if prev.active != ns.active and prev.active is not None and ns.active is not None:
        order = [t.name for t in record.tiers]
        return "failback" if order.index(ns.active) < order.index(prev.active) else "failover"
    return "answer"


def _decide_name(
    config: Config,
    origin: str,
    name: str,
    record: FailoverRecord,
    health: Mapping[str, State],
    prev: NameState,
    now: float,
    overrides: Sequence[Override],
    failback_requested: bool,
) -> tuple[NameDecision, NameState, list[float], dict[str, str]]:
    policy = settings(config, record)
    tiers = record.tiers
    applied = apply(config, name, record, health, overrides)
    notes, wakes = list(applied.notes), []
    up = applied.up
    raw_up = tuple(
        e.address
        for t in tiers
        for e in t.endpoints
        if health.get(config.health_key(record, e), State.UNKNOWN) is State.UP
    )
    cfg = policy.damping
    pre = (
        damping.update(cfg, prev.penalties, prev.penalty_at, prev.suppressed, (), now)
        if cfg
        else None
    )
    damped = False
    if pre is not None and isinstance(record, ActiveActive):
        held = [a for a in up["all"] if a in pre.suppressed]
        if held:
            rest = [a for a in up["all"] if a not in held]
            text = ", ".join(f"{a} (penalty {pre.penalties[a]:.0f})" for a in held)
            if len(rest) >= record.min_healthy:
                up = {"all": rest}
                damped = True
                notes.append(f"damping: keeping flapping {text} out until below reuse")
            else:
                notes.append(f"damping: flapping {text} kept in: needed for min_healthy")
    meets = {t.name: len(up[t.name]) >= t.min_healthy for t in tiers}
    since = {t.name: prev.healthy_since.get(t.name, now) for t in tiers if meets[t.name]}
    sel = select(
        record,
        prev,
        now,
        Inputs(
            up,
            since,
            applied.failover,
            applied.failback,
            failback_requested,
            pre is not None and isinstance(record, ActivePassive) and "" in pre.suppressed,
            policy.max_failovers,
        ),
    )
    wakes.extend(sel.wakes)
    penalties, suppressed, penalty = dict(prev.penalties), prev.suppressed, 0.0
    if cfg is not None and pre is not None:
        flips: list[str] = []
        if prev.active is not None:
            if isinstance(record, ActiveActive):
                flips = [a for a in prev.up if a not in raw_up]
            elif sel.active != prev.active:
                flips = [""]
        post = damping.update(cfg, pre.penalties, now, pre.suppressed, flips, now)
        penalties, suppressed = post.penalties, post.suppressed
        penalty = max(penalties.values(), default=0.0)
        if post.wake_at is not None:
            wakes.append(post.wake_at)
        if sel.damped:
            damped = True
            notes.append(
                f"damping: penalty {pre.penalties.get('', 0.0):.0f} reached suppress "
                f"{cfg.suppress:g}; held on {sel.active} until it decays below reuse "
                f"{cfg.reuse:g}" + (f" at {post.wake_at:.3f}" if post.wake_at else "")
            )
    result = answer_for(record, up, sel, applied.known, policy, prev, now)
    notes.extend(result.notes)
    wakes.extend(result.wakes)
    reason = "; ".join([result.reason, *sel.notes, *notes])
    nd = NameDecision(
        name,
        origin,
        record.policy,
        result.published,
        sel.active if len(tiers) > 1 else None,
        result.mode,
        reason,
        weights=result.weights,
        loads=result.loads,
        ttl=result.ttl,
        would_answer=result.answer,
        shadow=policy.shadow,
        damped=damped,
        penalty=penalty,
        over_capacity=result.over,
        notes=(*sel.notes, *notes),
    )
    ns = NameState(
        active=sel.active,
        healthy_since=since,
        answer=result.published,
        would_answer=result.answer,
        mode=result.mode,
        up=raw_up,
        changes=sel.changes,
        penalties=penalties,
        penalty_at=now,
        suppressed=suppressed,
        weights=result.published_weights,
        staged_from=sel.staged_from,
        staged_since=sel.staged_since,
        pin=sel.pin,
        released=sel.released,
    )
    return nd, ns, wakes, {**applied.refused, **sel.refused}


def build_zone(
    origin: str, zone: ZoneConfig, names: Mapping[str, NameDecision], serial: int = 0
) -> ZoneContent:
    """The full content of one zone: apex NS, static records and managed answers."""
    sets = {(r.name, r.rtype): r for r in zone.static_records(origin)}
    for label, record in zone.failover.items():
        fqdn = absolute_name(label, origin)
        nd = names.get(fqdn)
        if nd is not None:
            # An empty answer (serve_none) stays as an empty set: the name still exists,
            # so resolvers get NODATA rather than a cached NXDOMAIN for the whole name.
            ttl = record.ttl if nd.ttl is None else nd.ttl
            # Weights are published only when they differ (equal ones answer as before).  A
            # shadow name's weights describe what it would answer, not what it publishes.
            weights = tuple(nd.weights.get(a, -1) for a in nd.answer)
            if nd.shadow or min(weights, default=-1) < 0 or len(set(weights)) == 1:
                weights = ()
            sets[(fqdn, record.type)] = RecordSet(fqdn, record.type, ttl, nd.answer, weights)
    # A zone published by an external provider has no SOA of ours; a placeholder keeps the
    # value shape uniform and is never published.
    soa = zone.soa or SoaConfig(mname=origin, rname=f"hostmaster.{origin}")
    return ZoneContent(
        origin,
        Soa(soa.mname, soa.rname, serial, soa.refresh, soa.retry, soa.expire, soa.minimum, soa.ttl),
        tuple(sets[k] for k in sorted(sets)),
    )
