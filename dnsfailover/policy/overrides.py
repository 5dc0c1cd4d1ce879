"""Applying operator overrides to one name's health, with the drain interlock.

`force_up`/`force_down` replace what the checks say; `drain` keeps an endpoint out of the
answers while it is still probed.  Removals (drain, force_down) are taken oldest first, and
one that would leave the name without any tier meeting its `min_healthy` (its last healthy
endpoint, or its last healthy tier) is refused unless forced.  The check runs on every
decision, not only when the override is set: a drain that was safe becomes unsafe when the
other endpoints fail, and then it is set aside until they recover.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dnsfailover.model import State
from dnsfailover.overrides import Action, Override
from dnsfailover.policy.settings import FailoverRecord
from dnsfailover.schema import Config, Tier


@dataclass(slots=True)
class Applied:
    """One name's serviceable endpoints per tier, and what the overrides did."""

    up: dict[str, list[str]]  # tier → addresses UP after overrides, drains removed
    known: bool = False  # some endpoint has a known state (checked or forced)
    notes: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # override id → why
    failover: Override | None = None
    failback: Override | None = None


def touches(o: Override, name: str, record: FailoverRecord) -> bool:
    """Whether `o` applies to `name`: it names it, or it names one of its endpoints."""
    if o.name is not None:
        return o.name == name
    return o.endpoint is not None and any(
        e.address == o.endpoint for t in record.tiers for e in t.endpoints
    )


def _hits(o: Override, tier: Tier, address: str) -> bool:
    if o.endpoint is not None:
        return o.endpoint == address and (o.tier is None or o.tier == tier.name)
    return o.tier == tier.name


def apply(
    config: Config,
    name: str,
    record: FailoverRecord,
    health: Mapping[str, State],
    overrides: Sequence[Override],
) -> Applied:
    mine = sorted((o for o in overrides if touches(o, name, record)), key=lambda o: o.created_at)
    states = {
        (t.name, e.address): health.get(config.health_key(record, e), State.UNKNOWN)
        for t in record.tiers
        for e in t.endpoints
    }
    notes: list[str] = []
    for o in mine:
        if o.action is Action.FORCE_UP:
            for t in record.tiers:
                for e in t.endpoints:
                    if _hits(o, t, e.address):
                        states[(t.name, e.address)] = State.UP
            notes.append(f"override: {o.describe()}")
    out = Applied(_serviceable(record, states, set()), notes=notes)
    removed: set[tuple[str, str]] = set()
    for o in mine:
        if o.action not in (Action.DRAIN, Action.FORCE_DOWN):
            continue
        hit = {
            (t.name, e.address) for t in record.tiers for e in t.endpoints if _hits(o, t, e.address)
        }
        trial = _serviceable(record, states, removed | hit)
        before_ok = _any_healthy(record, out.up)
        if before_ok and not _any_healthy(record, trial):
            why = (
                f"it would leave {name} without a healthy endpoint"
                if len(record.tiers) == 1
                else f"it would leave {name} without a healthy tier"
            )
            if not o.force:
                out.refused[o.id] = why
                notes.append(f"interlock: {o.action.value} {o.subject} set aside: {why}")
                continue
            notes.append(f"override: {o.describe()} (forced past interlock: {why})")
        else:
            notes.append(f"override: {o.describe()}")
        removed |= hit
        out.up = trial
        if o.action is Action.FORCE_DOWN:
            states.update({k: State.DOWN for k in hit})
    out.known = any(s is not State.UNKNOWN for s in states.values())
    for o in mine:
        if o.action is Action.FAILOVER:
            out.failover = o  # the newest wins
        elif o.action is Action.FAILBACK:
            out.failback = o
    return out


def _serviceable(
    record: FailoverRecord, states: Mapping[tuple[str, str], State], removed: set[tuple[str, str]]
) -> dict[str, list[str]]:
    return {
        t.name: [
            e.address
            for e in t.endpoints
            if states[(t.name, e.address)] is State.UP and (t.name, e.address) not in removed
        ]
        for t in record.tiers
    }


def _any_healthy(record: FailoverRecord, up: Mapping[str, list[str]]) -> bool:
    return any(len(up[t.name]) >= t.min_healthy for t in record.tiers)
