"""The failover engine: a pure function from config + health + previous state to answers.

No I/O and no clock of its own: `now` is a parameter, so every rule is table-testable.
Both policies are handled as tiers: an active-active record is one tier.  The rules on top
of plain health (overrides, interlocks, damping, capacity, staged failback, shadow mode)
live in `dnsfailover.policy`; this module runs them in order for every name.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from dnsfailover.config.schema import (
    ActiveActive,
    ActivePassive,
    Config,
)
from dnsfailover.engine import damping
from dnsfailover.engine.answer import answer_for
from dnsfailover.engine.index import Index, index
from dnsfailover.engine.interlocks import tripped
from dnsfailover.engine.overrides import Override, apply, touches
from dnsfailover.engine.plain import decide_plain, plain
from dnsfailover.engine.settings import FailoverRecord, settings
from dnsfailover.engine.steering import steered_names
from dnsfailover.engine.tiers import Inputs, select
from dnsfailover.engine.values import Decision, EngineState, NameDecision, NameState, Transition
from dnsfailover.engine.zones import build_zone, managed_set, updated
from dnsfailover.model import State, ZoneContent

__all__ = [
    "Decision",
    "EngineState",
    "NameDecision",
    "NameState",
    "Transition",
    "build_zone",
    "decide",
    "managed_set",
    "redecide",
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
    """Decide every managed name's answer (the reference `redecide` is checked against).

    :param health: voted state per target key; missing keys are UNKNOWN.
    :param overrides: operator overrides; expired ones are ignored.
    :param failback: names an operator asked to fail back (same as a FAILBACK override).
    :param reset_breaker: an operator accepts the current health: the circuit breaker
        takes it as its new baseline instead of freezing.
    """
    ix = index(config)
    run = _Run(config, health, now, overrides, failback, reset_breaker, previous)
    for origin, name, record in ix.managed:
        run.name(origin, name, record)
    steered = steered_names(config)
    zones = tuple(
        build_zone(origin, zone, run.names, steered=steered)
        for origin, zone in config.zones.items()
    )
    return run.finish(zones, previous, frozenset(run.names), None)


def redecide(
    config: Config,
    health: Mapping[str, State],
    last: Decision,
    now: float,
    *,
    changed: Collection[str],
    overrides: Sequence[Override] = (),
    failback: frozenset[str] = frozenset(),
    reset_breaker: bool = False,
) -> Decision:
    """`decide`, re-deciding only the names something can have changed for, which makes the
    cost of a decision that of the change, not of the config.

    A name is re-decided when a health key it uses is in `changed` (the keys whose voted
    state changed since `last`), when one of its timed rules is due, when an override that
    touches it was set, removed or expired, when one of its overrides is set aside, or when
    it is asked to fail back.  A change of
    the circuit breaker's verdict, or a reset, re-decides every name.  `last` must have been
    decided with the same config.
    """
    ix = index(config)
    run = _Run(config, health, now, overrides, failback, reset_breaker, last.state)
    if reset_breaker or run.frozen != last.frozen:
        return decide(
            config,
            health,
            last.state,
            now,
            overrides=overrides,
            failback=failback,
            reset_breaker=reset_breaker,
        )
    todo: set[str] = set()
    for key in changed:
        todo.update(ix.by_key.get(key, ()))
    todo.update(name for name, at in last.wakes.items() if at <= now)
    before = {o.id: o for o in last.overrides}
    after = {o.id: o for o in run.active}
    for oid in before.keys() | after.keys():
        if before.get(oid) != after.get(oid):
            for o in (before.get(oid), after.get(oid)):
                if o is not None:
                    todo.update(ix.touched(o))
    todo.update(run.failback & ix.position.keys())
    # A name with an override set aside is decided again at every decision, as a full one
    # does: what was refused may apply once the name has moved (a newer failover, say).
    todo.update(last.refusals)
    order = sorted(todo, key=ix.position.__getitem__)
    for name in order:
        origin, _name, record = ix.managed[ix.position[name]]
        run.name(origin, name, record)
    decided, states = run.names, run.states
    differs = frozenset(n for n in order if _differs(n, decided, states, last))
    # The names nothing touched keep their decisions: merged only now, so that the copies
    # (as big as the config) are not walked by every young-generation collection above.
    run.names = {**last.names, **decided}
    run.states = {**last.state.names, **states}
    refusals, wakes = dict(last.refusals), dict(last.wakes)
    for name in order:
        refusals.pop(name, None)
        wakes.pop(name, None)
    refusals.update(run.refusals)
    wakes.update(run.wakes)
    run.refusals, run.wakes = refusals, wakes
    by_zone: dict[str, list[tuple[str, FailoverRecord]]] = {}
    for name in differs:
        origin, _name, record = ix.managed[ix.position[name]]
        by_zone.setdefault(origin, []).append((name, record))
    zones = tuple(
        updated(zone, by_zone.get(origin, ()), run.names, steered_names(config))
        for origin, zone in zip(config.zones, last.zones, strict=True)
    )
    return run.finish(zones, last.state, differs, ix)


def _differs(
    name: str,
    names: Mapping[str, NameDecision],
    states: Mapping[str, NameState],
    last: Decision,
) -> bool:
    """Whether `name`'s decision or state is not what `last` has (answers first: cheap)."""
    nd, before = names[name], last.names.get(name)
    if before is None or nd.answer != before.answer or nd != before:
        return True
    return states[name] != last.state.names.get(name)


_NO_STATE = NameState()  # a name never decided before


class _Run:
    """One decision in progress: the inputs shared by every name, and what is decided."""

    def __init__(
        self,
        config: Config,
        health: Mapping[str, State],
        now: float,
        overrides: Sequence[Override],
        failback: frozenset[str],
        reset_breaker: bool,
        previous: EngineState,
    ) -> None:
        self.config, self.health, self.now = config, health, now
        groups = index(config).groups
        # a steered name's failback is each of its location groups'
        self.failback = failback.union(*(groups.get(n, ()) for n in failback))
        self.active = tuple(o for o in overrides if o.active(now))
        self.frozen = None if reset_breaker else tripped(config, health, previous)
        self.ix = index(config)
        self.plain = plain(config)
        self.previous = previous
        self.names: dict[str, NameDecision] = {}
        self.states: dict[str, NameState] = {}
        self.transitions: list[Transition] = []
        self.refusals: dict[str, Mapping[str, str]] = {}
        self.wakes: dict[str, float] = {}

    def name(self, origin: str, name: str, record: FailoverRecord) -> None:
        prev = self.previous.names.get(name, _NO_STATE)
        mine = [o for o in self.active if touches(o, name, record)] if self.active else []
        frozen = self.frozen
        if frozen is not None and prev.active is not None and not any(o.force for o in mine):
            self.names[name], self.states[name] = _frozen(origin, name, record, prev, frozen), prev
            if mine:
                self.refusals[name] = {o.id: frozen for o in mine}
            return
        health = self.health
        p = self.plain.get(name)
        if p is not None and not mine and frozen is None and name not in self.failback:
            nd, ns, wake = decide_plain(p, origin, name, health, prev, self.now)
            why: dict[str, str] = {}
        else:
            down = tuple(sorted(k for k in self.ix.keys[name] if health.get(k) is State.DOWN))
            nd, ns, wake, why = _decide_name(
                self.config, origin, name, record, health, prev, self.now, mine,
                name in self.failback, down,
            )  # fmt: skip
        if frozen is not None:
            nd = _note(nd, "override: forced past the circuit breaker")
        self.names[name], self.states[name] = nd, ns
        if why:
            self.refusals[name] = why
        if mine:
            wake.extend(o.expires_at for o in mine if o.expires_at is not None)
        # A wake at `now` stays: its rule did not act yet (`now - since` may round below
        # `hold` even at `since + hold`), so the next decision must take the name again.
        future = [w for w in wake if w >= self.now] if wake else wake
        if future:
            self.wakes[name] = min(future)
        transition = _transition(name, self.now, record, prev, ns, nd)
        if transition is not None:
            self.transitions.append(transition)

    def finish(
        self,
        zones: tuple[ZoneContent, ...],
        previous: EngineState,
        changed: frozenset[str],
        ix: Index | None,
    ) -> Decision:
        refused: dict[str, str] = {}
        # In config order, as a full decision merges them (a later name's reason wins).
        ordered = (
            self.refusals if ix is None else sorted(self.refusals, key=ix.position.__getitem__)
        )
        for name in ordered:
            refused.update(self.refusals[name])
        return Decision(
            zones,
            self.names,
            tuple(self.transitions),
            EngineState(self.states),
            min(self.wakes.values(), default=None),
            self.frozen,
            refused,
            refusals=self.refusals,
            wakes=self.wakes,
            overrides=self.active,
            changed=changed,
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
    ix = index(config)
    run = _Run(
        config, health, now, [*others, replace(candidate, force=False)], frozenset(), False, state
    )
    # Only the names it touches can set it aside: decide those, in config order.
    for name in sorted(ix.touched(candidate), key=ix.position.__getitem__):
        origin, _name, record = ix.managed[ix.position[name]]
        run.name(origin, name, record)
    refusal = None
    for why in run.refusals.values():
        refusal = why.get(candidate.id, refusal)
    return refusal


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
    down: tuple[str, ...],
) -> tuple[NameDecision, NameState, list[float], dict[str, str]]:
    """One name's decision and state; `down`: its health keys that are DOWN (sorted)."""
    policy = settings(config, record)
    tiers = record.tiers
    unknown = State.UNKNOWN
    slots = index(config).slots[name]
    checked = {(tier, address): health.get(key, unknown) for tier, address, key in slots}
    applied = apply(name, record, checked, overrides)
    notes, wakes = list(applied.notes), []
    up = applied.up
    raw_up = tuple(address for (_tier, address), s in checked.items() if s is State.UP)
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
    penalty_at = prev.penalty_at  # when the penalties were last decayed
    if cfg is not None and pre is not None:
        flips: list[str] = []
        if prev.active is not None:
            if isinstance(record, ActiveActive):
                flips = [a for a in prev.up if a not in raw_up]
            elif sel.active != prev.active:
                flips = [""]
        post = damping.update(cfg, pre.penalties, now, pre.suppressed, flips, now)
        penalties, suppressed, penalty_at = post.penalties, post.suppressed, now
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
        # a name without penalties keeps the same state however often it is re-decided:
        # a new cluster leader then rewrites in etcd only the names whose state changed
        penalty_at=penalty_at if penalties else 0.0,
        suppressed=suppressed,
        weights=result.published_weights,
        staged_from=sel.staged_from,
        staged_since=sel.staged_since,
        pin=sel.pin,
        released=sel.released,
        down=down,
    )
    return nd, ns, wakes, {**applied.refused, **sel.refused}
