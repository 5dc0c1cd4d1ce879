"""Operator overrides: drain, force up/down, fail over and fail back, as plain values.

An override is stored (SQLite on a single node, etcd in a cluster), shown, audited and
handed to `engine.decide` with every decision.  It expires at `expires_at` when one is set;
`undrain` and the like are the deletion of the override, not an override of their own.

What each action targets:

- ``drain``: an endpoint (``endpoint`` = its address), within one name (``name`` set) or
  every name that answers it (``name`` None).  It is kept out of answers but still probed.
- ``force_up`` / ``force_down``: an endpoint as above, or a whole tier (``name`` and
  ``tier``); the engine treats it as UP/DOWN whatever the checks say.
- ``failover``: a name; leave the serving tier for the next one (or ``tier`` when given)
  and stay there until a ``failback`` or the override's expiry.
- ``failback``: a name; return to its best healthy tier now (``failback: manual`` records
  wait for this).  It is taken once and then removed.

`apply` applies them to one name's health, with the drain interlock, for `decide`:
`force_up`/`force_down` replace what the checks say; `drain` keeps an endpoint out of the
answers while it is still probed.  Removals (drain, force_down) are taken oldest first, and
one that would leave the name without any tier meeting its `min_healthy` (its last healthy
endpoint, or its last healthy tier) is refused unless forced.  The check runs on every
decision, not only when the override is set: a drain that was safe becomes unsafe when the
other endpoints fail, and then it is set aside until they recover.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from dnsfailover.config.schema import Config
from dnsfailover.engine.settings import FailoverRecord
from dnsfailover.errors import DnsFailoverError, UserError
from dnsfailover.model import State


class Action(StrEnum):
    DRAIN = "drain"
    FORCE_UP = "force_up"
    FORCE_DOWN = "force_down"
    FAILOVER = "failover"
    FAILBACK = "failback"


@dataclass(frozen=True, slots=True)
class Override:
    """One operator override; `who` and `reason` are required for the audit trail."""

    id: str
    action: Action
    name: str | None  # absolute managed name, or None for an endpoint everywhere
    endpoint: str | None  # endpoint address
    tier: str | None
    reason: str
    who: str
    created_at: float
    expires_at: float | None = None
    force: bool = False  # bypass interlocks (recorded)

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    @property
    def subject(self) -> str:
        """What it applies to, for logs and the history: `www.example.test./127.0.0.11`."""
        parts = [p for p in (self.name, self.tier and f"tier {self.tier}", self.endpoint) if p]
        return " ".join(parts) if parts else "(everything)"

    def describe(self) -> str:
        until = "" if self.expires_at is None else f" until {self.expires_at:.0f}"
        forced = " (forced)" if self.force else ""
        return f"{self.action.value} {self.subject} by {self.who}{until}{forced}: {self.reason}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Override:
        return cls(
            id=str(data["id"]),
            action=Action(data["action"]),
            name=data.get("name"),
            endpoint=data.get("endpoint"),
            tier=data.get("tier"),
            reason=str(data["reason"]),
            who=str(data["who"]),
            created_at=float(data["created_at"]),
            expires_at=None if data.get("expires_at") is None else float(data["expires_at"]),
            force=bool(data.get("force", False)),
        )

    @classmethod
    def from_json(cls, text: str) -> Override:
        return cls.from_dict(json.loads(text))


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def active_overrides(overrides: list[Override], now: float) -> list[Override]:
    return [o for o in overrides if o.active(now)]


class OverrideRefused(DnsFailoverError):
    """An override would trip an interlock (and was not forced); the message says which."""


class InvalidOverride(UserError):
    """An override names what does not exist, or misses what its action needs."""


def target_problem(config: Config, o: Override) -> str | None:
    """Why `o` names something that does not exist (None when it is fine): a precise message
    for the API's 400 and the CLI."""
    managed = {name: record for _origin, name, record in config.managed()}
    if o.name is not None and o.name not in managed:
        return f"{o.name} is not a managed name (one of: {', '.join(sorted(managed)) or 'none'})"
    if not o.reason.strip():
        return "a reason is required"
    records = [managed[o.name]] if o.name is not None else list(managed.values())
    if o.action in (Action.FAILOVER, Action.FAILBACK):
        if o.name is None:
            return f"{o.action.value} needs the managed name"
        if o.endpoint is not None:
            return f"{o.action.value} applies to a name (and optionally a tier), not an endpoint"
    if o.tier is not None:
        if o.name is None:
            return "a tier is named within a managed name: give the name too"
        tiers = [t.name for t in managed[o.name].tiers]
        if o.tier not in tiers:
            return f"{o.name} has no tier {o.tier!r} (tiers: {', '.join(tiers)})"
    if o.action is Action.DRAIN and o.endpoint is None:
        return "drain needs an endpoint address"
    if o.action in (Action.FORCE_UP, Action.FORCE_DOWN) and o.endpoint is None and o.tier is None:
        return f"{o.action.value} needs an endpoint address or a tier"
    if o.endpoint is not None:
        addresses = {e.address for r in records for t in r.tiers for e in t.endpoints}
        if o.endpoint not in addresses:
            where = o.name or "any managed name"
            return f"{o.endpoint} is not an endpoint of {where}"
    return None


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
        # a steered name's location groups are decided as NAME@GROUP: the name's overrides
        # apply to each of them
        return o.name == name or name.startswith(f"{o.name}@")
    return o.endpoint is not None and any(
        e.address == o.endpoint for t in record.tiers for e in t.endpoints
    )


ENDPOINT_ACTIONS = frozenset({Action.DRAIN, Action.FORCE_UP, Action.FORCE_DOWN})


def hits(o: Override, tier: str, address: str) -> bool:
    """Whether `o` (already known to touch the name) targets `address` of `tier`."""
    if o.endpoint is not None:
        return o.endpoint == address and (o.tier is None or o.tier == tier)
    return o.tier == tier


def touches_endpoint(
    o: Override, name: str, record: FailoverRecord, tier: str, address: str
) -> bool:
    """Whether `o` changes the health of `address` of `tier` in `name` (what `explain` and
    the status views list beside that endpoint)."""
    return o.action in ENDPOINT_ACTIONS and touches(o, name, record) and hits(o, tier, address)


def apply(
    name: str,
    record: FailoverRecord,
    checked: Mapping[tuple[str, str], State],
    overrides: Sequence[Override],
) -> Applied:
    """`checked`: the voted health of each (tier, endpoint address) of the name."""
    if not overrides:  # the usual case: the checks' word as it is
        up = State.UP
        return Applied(
            {
                t.name: [e.address for e in t.endpoints if checked[(t.name, e.address)] is up]
                for t in record.tiers
            },
            known=any(s is not State.UNKNOWN for s in checked.values()),
        )
    mine = sorted((o for o in overrides if touches(o, name, record)), key=lambda o: o.created_at)
    states = dict(checked)
    notes: list[str] = []
    for o in mine:
        if o.action is Action.FORCE_UP:
            for t in record.tiers:
                for e in t.endpoints:
                    if hits(o, t.name, e.address):
                        states[(t.name, e.address)] = State.UP
            notes.append(f"override: {o.describe()}")
    out = Applied(_serviceable(record, states, set()), notes=notes)
    removed: set[tuple[str, str]] = set()
    for o in mine:
        if o.action not in (Action.DRAIN, Action.FORCE_DOWN):
            continue
        hit = {
            (t.name, e.address)
            for t in record.tiers
            for e in t.endpoints
            if hits(o, t.name, e.address)
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
