"""What a name and an endpoint are, in the words an on-call reader needs at 3 a.m.

The engine decides a *mode* per name (healthy, degraded, all_down, no_data): how complete
the serving tier is.  A name answered from its backup tier with every backup endpoint up is
"healthy" in that sense, which is not what anyone paging through the status wants to read.
So the views derive a **state** from the decision, the record and the live health:

- ``healthy``: serving its first tier, every endpoint of it up;
- ``failed_over``: serving a tier below its first (``failed over to backup (primary down)``);
- ``degraded``: serving its first tier, but not all of it (below all, or some shed);
- ``all_down``: no tier meets ``min_healthy``: served as ``all_down`` says (fail open,
  NODATA, the fallback);
- ``no_data``: not decided yet, or no health result yet.

A failed-over name whose backup tier is itself incomplete is ``failed_over`` (the worse
news); a name all down is ``all_down`` whatever tier it was on.  Shadow mode and a frozen
circuit breaker are flags beside the state, not states.

Endpoints get a **role**: ``serving`` (UP, in the answer), ``standby`` (UP, its tier not
serving), ``held`` (UP in the serving tier but out of the answer: damping, capacity, an
all-down fallback), ``down``, ``unknown``, ``drained``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dnsfailover.config.schema import ActivePassive
from dnsfailover.engine.overrides import Action, Override, apply, touches
from dnsfailover.model import State

if TYPE_CHECKING:
    from dnsfailover.config.schema import Config
    from dnsfailover.engine.settings import FailoverRecord
    from dnsfailover.engine.values import NameDecision, NameState

#: every name state, least to most severe (the order of the summary and of `worst`)
NAME_STATES = ("healthy", "no_data", "degraded", "failed_over", "all_down")
WORDS = {
    "healthy": "healthy",
    "no_data": "no data",
    "degraded": "degraded",
    "failed_over": "failed over",
    "all_down": "all down",
}
ROLES = ("serving", "standby", "held", "down", "unknown", "drained")
_ALL_DOWN = {
    "serve_all": "fail open: serving every endpoint",
    "serve_none": "serve_none: answering NODATA",
    "fallback": "serving the fallback",
}


def worst(states: Iterable[str]) -> str:
    return max(states, key=NAME_STATES.index, default="no_data")


def checked(
    config: Config, record: FailoverRecord, health: Mapping[str, State]
) -> dict[tuple[str, str], State]:
    """The voted health of each (tier, address) of `record`, as the engine looks it up."""
    return {
        (t.name, e.address): health.get(config.health_key(record, e), State.UNKNOWN)
        for t in record.tiers
        for e in t.endpoints
    }


def name_state(
    config: Config,
    name: str,
    record: FailoverRecord,
    nd: NameDecision | None,
    ns: NameState | None,
    health: Mapping[str, State],
    overrides: list[Override],
    words: bool = True,
) -> tuple[str, str]:
    """(state, what it means in words) of decision name `name` (a steered name's group is
    decided under its own name and record, whose first tier is the group's nearest).
    Without `words` (metrics: every name at every scrape), a failover's cause is not
    looked up and the text is only the state's word."""
    if nd is None:
        return "no_data", "not decided yet"
    if nd.mode == "no_data":
        return "no_data", "no health data yet: serving every endpoint of the tier"
    if nd.mode == "all_down":
        return "all_down", f"all down ({_ALL_DOWN.get(record.all_down, record.all_down)})"
    first = record.tiers[0]
    if nd.tier is not None and nd.tier != first.name:
        if not words:
            return "failed_over", WORDS["failed_over"]
        cause = _why_not_first(config, name, record, ns, health, overrides)
        text = f"failed over to {nd.tier} ({cause})"
        if nd.mode == "degraded":
            text += f"; degraded: {_gist(nd).removeprefix(f'tier {nd.tier}: ')}"
        return "failed_over", text
    if nd.mode == "degraded":
        return "degraded", f"degraded: {_gist(nd)}"
    return "healthy", "healthy"


def _gist(nd: NameDecision) -> str:
    """The first words of a degraded decision's reason: `1/2 endpoints up`, and a staged
    failback's share still on the old tier, or the capacity rule that spread it."""
    parts = nd.reason.split("; ")
    gist = parts[0]
    if len(parts) > 1 and "% still on " in parts[1]:
        gist += f"; {parts[1]}"
    gist += "".join(f"; {n.split(':')[0]}" for n in nd.notes if n.startswith("capacity:"))
    return gist


def _why_not_first(
    config: Config,
    name: str,
    record: FailoverRecord,
    ns: NameState | None,
    health: Mapping[str, State],
    overrides: list[Override],
) -> str:
    first = record.tiers[0]
    if ns is not None and ns.pin is not None:
        return f"operator failover {ns.pin}"
    keys = [config.health_key(record, e) for e in first.endpoints]
    raw = sum(1 for k in keys if health.get(k) is State.UP)
    mine = [o for o in overrides if touches(o, name, record)]
    up = raw  # what the overrides leave of it, when there are any
    if mine:
        up = len(apply(name, record, checked(config, record, health), mine).up[first.name])
    n = len(first.endpoints)
    if up >= first.min_healthy:
        if not isinstance(record, ActivePassive) or record.failback == "auto":
            hold = record.hold_down if isinstance(record, ActivePassive) else 0.0
            return f"{first.name} up again, failback after hold_down {hold:g}s"
        if record.failback == "manual":
            return (
                f"{first.name} up again, failback waiting for an operator: `dnsfailover failback`"
            )
        return f"{first.name} up again, staged failback pending"
    if raw >= first.min_healthy:
        return f"{first.name} drained"
    if raw == 0:
        return f"{first.name} down"
    return f"{first.name} down: {raw}/{n} up, min_healthy {first.min_healthy}"


def role(
    state: str,
    tier: str,
    in_answer: bool,
    serving_tiers: set[str],
    mine: list[Override],
    refused: Mapping[str, str],
) -> str:
    """The role of one endpoint (see the module doc); `mine`: overrides on it."""
    acting = [o for o in mine if o.id not in refused]
    if any(o.action is Action.FORCE_DOWN for o in acting):
        return "down"
    if any(o.action is Action.DRAIN for o in acting):
        return "drained"
    if any(o.action is Action.FORCE_UP for o in acting):
        state = "up"
    if state != "up":
        return state if state in ROLES else "unknown"
    if in_answer:
        return "serving"
    return "held" if tier in serving_tiers else "standby"


def summary(states: list[str], shadow: int = 0, frozen: bool = False) -> dict[str, Any]:
    """Counts of names by state, and `12 names: 9 healthy, 2 failed over, 1 all down`."""
    counts = {s: states.count(s) for s in NAME_STATES}
    order = ("healthy", "failed_over", "degraded", "all_down", "no_data")
    parts = [f"{counts[s]} {WORDS[s]}" for s in order if counts[s] or s == "healthy"]
    text = f"{len(states)} name{'s' * (len(states) != 1)}: {', '.join(parts)}"
    if shadow:
        text += f" ({shadow} in shadow mode)"
    if frozen:
        text += "; circuit breaker frozen: every answer is held"
    return {"names": len(states), **counts, "shadow": shadow, "frozen": frozen, "text": text}
