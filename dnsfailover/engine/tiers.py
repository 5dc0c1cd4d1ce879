"""Which tier serves a name: failover, failback (auto / manual / staged), operator
failover and failback, with the max-failovers interlock and damping holding failbacks.

Failing over away from a dead tier is never delayed by damping (that would be an outage);
damping only holds a name on the tier it is on.  `max_failovers` is stricter by design: once
a name has changed tiers `count` times within `window`, it stays where it is, even on a dead
tier, because a name that keeps moving is more likely to be knocking over each tier in turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dnsfailover.config.policy import MaxFailovers
from dnsfailover.config.schema import ActivePassive
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.settings import FailoverRecord
from dnsfailover.engine.values import NameState


@dataclass(slots=True)
class Selection:
    active: str
    notes: list[str] = field(default_factory=list)
    wakes: list[float] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    changes: tuple[float, ...] = ()
    staged_from: str | None = None
    staged_since: float | None = None
    pin: str | None = None
    released: str | None = None
    damped: bool = False  # damping held the name this time
    staging: bool = False  # this decision starts a staged failback


@dataclass(frozen=True, slots=True)
class Inputs:
    up: Mapping[str, list[str]]  # tier → serviceable addresses
    since: Mapping[str, float]  # tier → continuously healthy since (meeting tiers only)
    failover: Override | None
    failback: Override | None
    legacy_failback: bool  # the `failback=` argument of decide
    suppressed: bool  # damping holds the name
    window: MaxFailovers | None


def select(record: FailoverRecord, prev: NameState, now: float, i: Inputs) -> Selection:
    order = [t.name for t in record.tiers]
    meets = {t.name: len(i.up[t.name]) >= t.min_healthy for t in record.tiers}
    healthy = [t for t in order if meets[t]]
    if prev.active is None or prev.active not in order:
        return Selection(healthy[0] if healthy else order[0], ["first decision"])
    active = prev.active
    sel = Selection(active, staged_from=prev.staged_from, staged_since=prev.staged_since)
    sel.released = prev.released
    recent = [c for c in prev.changes if i.window is not None and now - c < i.window.window]
    full = i.window is not None and len(recent) >= i.window.count
    full_why = (
        f"max_failovers: {len(recent)} tier changes within {i.window.window:g}s "
        f"(limit {i.window.count})"
        if i.window is not None
        else ""
    )
    failback = i.failback
    operator = failback is not None or i.legacy_failback
    failover = i.failover if i.failover is not None and i.failover.id != prev.released else None
    if failover is not None and operator:
        if failback is None or failback.created_at >= failover.created_at:
            sel.released, failover = failover.id, None
            sel.notes.append("override: failback ends the operator failover")
        else:
            sel.notes.append("override: failback ignored: a newer failover override holds")
            operator, failback = False, None

    if failover is not None and _pinned(record, sel, prev, now, i, failover, full, full_why):
        pass
    elif healthy and not meets[active]:
        rank = order.index(active)
        higher = [t for t in healthy if order.index(t) < rank]
        lower = [t for t in healthy if order.index(t) > rank]
        ready = [] if i.suppressed else [t for t in higher if _may(record, i, t, now, operator)]
        chosen = (ready or lower or higher)[0]
        if full:
            sel.notes.append(f"interlock: {full_why}: staying on {active} though it is down")
            sel.wakes.append(min(recent) + i.window.window)  # type: ignore[union-attr]
        else:
            sel.notes.append(f"tier {active} below min_healthy")
            sel.active = chosen
    elif healthy and order.index(healthy[0]) < order.index(active):
        _failback(record, sel, now, i, order, healthy, operator, failback, full, full_why, recent)
    _wake_for_failback(record, sel, now, i, order, healthy)
    changed = sel.active != active
    if changed:
        recent.append(now)
        if not sel.staging:  # any move but a staged failback ends a staging
            sel.staged_from = sel.staged_since = None
    _staging(record, sel, now, meets, changed)
    # The last change is kept even when max_failovers no longer counts it: degraded_ttl
    # runs from it (until a wake at change + hold_down), whatever decisions happen between.
    sel.changes = tuple(recent) if recent else prev.changes[-1:]
    return sel


def _wake_for_failback(
    record: FailoverRecord,
    sel: Selection,
    now: float,
    i: Inputs,
    order: list[str],
    healthy: list[str],
) -> None:
    """Whatever moved the name, a healthy tier above the one it ends on that is still in
    hold-down is an automatic failback due when that ends: the name must be decided again
    then (an incremental decision takes a name only when something wakes it)."""
    if not isinstance(record, ActivePassive) or record.failback == "manual" or i.suppressed:
        return
    rank = order.index(sel.active)
    due = [
        i.since[t] + record.hold_down
        for t in healthy
        if order.index(t) < rank and now - i.since[t] < record.hold_down
    ]
    if due:
        sel.wakes.append(min(due))


def _may(record: FailoverRecord, i: Inputs, tier: str, now: float, operator: bool) -> bool:
    if not isinstance(record, ActivePassive):
        return True
    if record.failback == "manual":
        return operator
    return operator or now - i.since[tier] >= record.hold_down


def _pinned(
    record: FailoverRecord,
    sel: Selection,
    prev: NameState,
    now: float,
    i: Inputs,
    o: Override,
    full: bool,
    full_why: str,
) -> bool:
    """Apply an operator failover; False when it is refused (normal rules then apply)."""
    order = [t.name for t in record.tiers]
    meets = {t.name: len(i.up[t.name]) >= t.min_healthy for t in record.tiers}
    active = sel.active
    if prev.pin == o.id:
        sel.pin = o.id
        if meets[active]:
            sel.notes.append(f"override: held by {o.describe()}")
        else:
            _off_dead_pin(sel, order, meets, active, o)
        return True
    if (o.tier is not None and o.tier not in meets) or (
        len(order) == 1 and isinstance(record, ActivePassive)
    ):
        # a location group of a steered name without that tier (or with one tier only):
        # the override is for the groups that can follow it
        sel.notes.append(f"override: {o.describe()} does not apply to this location group")
        return False
    target = o.tier or next((t for t in order[order.index(active) + 1 :] if meets[t]), None)
    problem = None
    if len(order) == 1:
        problem = "an active-active name has one tier: there is nothing to fail over to"
    elif target is None:
        problem = f"no healthy tier after {active} to fail over to"
    elif not meets[target] and target != active:
        problem = f"tier {target} is not healthy: it would be the last healthy tier drained"
    elif full and target != active:
        problem = full_why
    if problem is not None and (not o.force or len(order) == 1):
        sel.refused[o.id] = problem
        sel.notes.append(f"interlock: failover {o.subject} set aside: {problem}")
        return False
    if target is None:
        target = order[min(order.index(active) + 1, len(order) - 1)]
    forced = f" (forced past interlock: {problem})" if problem else ""
    sel.notes.append(f"override: {o.describe()}{forced}")
    sel.active, sel.pin = target, o.id
    sel.staged_from = sel.staged_since = None
    if not meets[target]:  # as the next decision under this pin would: never path-dependent
        _off_dead_pin(sel, order, meets, target, o)
    return True


def _off_dead_pin(
    sel: Selection, order: list[str], meets: Mapping[str, bool], pinned: str, o: Override
) -> None:
    """The pinned tier is below min_healthy: serve the next healthy tier after it (else the
    first healthy one), still under the pin, which keeps the name off the tiers above."""
    lower = [t for t in order[order.index(pinned) + 1 :] if meets[t]]
    other = lower or [t for t in order if meets[t]]
    if other:
        sel.active = other[0]
        sel.notes.append(f"tier {pinned} below min_healthy under {o.describe()}")


def _failback(
    record: FailoverRecord,
    sel: Selection,
    now: float,
    i: Inputs,
    order: list[str],
    healthy: list[str],
    operator: bool,
    failback: Override | None,
    full: bool,
    full_why: str,
    recent: list[float],
) -> None:
    assert isinstance(record, ActivePassive)  # one tier has nothing to fail back to
    active = sel.active
    rank = order.index(active)
    higher = [t for t in healthy if order.index(t) < rank]
    ready = [t for t in higher if _may(record, i, t, now, operator)]
    forced = failback is not None and failback.force
    if not ready:
        if record.failback == "manual":
            sel.notes.append(f"{healthy[0]} is healthy; failback is manual and awaits an operator")
        else:
            wake = min(i.since[t] + record.hold_down for t in higher)
            sel.wakes.append(wake)
            sel.notes.append(f"{healthy[0]} is healthy; failback after hold_down at {wake:.3f}")
        return
    if i.suppressed and not operator:
        sel.damped = True
        sel.notes.append(f"damping: {ready[0]} is ready but {record.failback} failback is held")
        return
    if full and not forced:
        if failback is not None:
            sel.refused[failback.id] = full_why
        sel.notes.append(f"interlock: {full_why}: not failing back to {ready[0]}")
        sel.wakes.append(min(recent) + i.window.window)  # type: ignore[union-attr]
        return
    if operator:
        how = "forced " if forced and full else ""
        sel.notes.append(f"operator requested {how}failback")
    else:
        sel.notes.append(f"{ready[0]} healthy for hold_down")
    sel.active = ready[0]
    if record.failback == "staged":
        sel.staged_from, sel.staged_since, sel.staging = active, now, True


def _staging(
    record: FailoverRecord, sel: Selection, now: float, meets: Mapping[str, bool], changed: bool
) -> None:
    """Advance a staged failback: `share` first, everything after `staged.hold`."""
    if not isinstance(record, ActivePassive) or sel.staged_from is None:
        sel.staged_from = sel.staged_since = None
        return
    since = sel.staged_since if sel.staged_since is not None else now
    share, hold = record.staged.share, record.staged.hold
    if changed:
        sel.notes.append(
            f"staged failback: {share:g}% to {sel.active}, the rest stays on "
            f"{sel.staged_from} until {since + hold:.3f}"
        )
        sel.wakes.append(since + hold)
    elif not meets.get(sel.staged_from, False):
        sel.notes.append(f"staged failback complete early: {sel.staged_from} is down")
        sel.staged_from = sel.staged_since = None
    elif now - since >= hold:
        sel.notes.append(f"staged failback complete after {hold:g}s")
        sel.staged_from = sel.staged_since = None
    else:
        sel.notes.append(f"staged failback: {share:g}% on {sel.active} until {since + hold:.3f}")
        sel.wakes.append(since + hold)
