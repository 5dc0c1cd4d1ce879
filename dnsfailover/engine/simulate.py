"""What-if: what every name would answer if some endpoints, tiers or regions failed.

A what-if for capacity planning and reviews: no probes, no DNS, no store.  Every endpoint
is taken as UP except the ones named, the engine decides once with everything up and once
with the failures, and the second decision is printed with the load each survivor would
carry against its capacity.  Shadow-mode names are shown with what they *would* publish.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dnsfailover.config.schema import Config
from dnsfailover.engine.capacity import endpoint_capacity
from dnsfailover.engine.decide import decide
from dnsfailover.engine.index import index
from dnsfailover.engine.steering import decision_name, steered_names
from dnsfailover.engine.values import Decision, EngineState, NameDecision
from dnsfailover.errors import UserError
from dnsfailover.geo.locate import Network
from dnsfailover.geo.steering import Steering
from dnsfailover.model import State


class SimulateError(UserError):
    """A --down names nothing in the config (the message says what does exist)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    frozen: str | None  # the circuit breaker would have frozen; `decision` is past it


def resolve(config: Config, downs: Sequence[str]) -> set[str]:
    """The health keys the given --down values take down."""
    keys: set[str] = set()
    for raw in downs:
        text = raw.strip()
        found = _address(config, text) if _is_address(text) else _tier(config, text)
        if not found:
            raise SimulateError(_unknown(config, text))
        keys |= found
    return keys


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _address(config: Config, text: str) -> set[str]:
    want = ipaddress.ip_address(text)
    return {
        config.health_key(record, e)
        for _o, _n, record in config.managed()
        for t in record.tiers
        for e in t.endpoints
        if ipaddress.ip_address(e.address) == want
    }


def _tier(config: Config, text: str) -> set[str]:
    explicit = text.startswith("tier:")
    name = text.removeprefix("tier:")
    keys = {
        config.health_key(record, e)
        for _o, _n, record in config.managed()
        for t in record.tiers
        if len(record.tiers) > 1 and t.name == name
        for e in t.endpoints
    }
    if not keys and not explicit and name in config.regions:
        raise SimulateError(
            f"region {name!r} has no tier of that name in any active-passive record; "
            f"name its tiers after regions, or use --down tier:NAME or an address"
        )
    return keys


def _unknown(config: Config, text: str) -> str:
    tiers = sorted({t.name for _o, _n, r in config.managed() if len(r.tiers) > 1 for t in r.tiers})
    return (
        f"--down {text}: no endpoint, tier or region of that name "
        f"(tiers: {', '.join(tiers) or 'none'}; regions: {', '.join(config.regions) or 'none'})"
    )


def simulate(config: Config, down: set[str]) -> Outcome:
    """Decide with everything up, then with `down` DOWN; the breaker is reported, not obeyed."""
    every = set(config.votes())
    before = decide(config, dict.fromkeys(every, State.UP), EngineState(), 0.0)
    health = {k: State.DOWN if k in down else State.UP for k in every}
    after = decide(config, health, before.state, 1.0)
    if after.frozen is None:
        return Outcome(after, None)
    return Outcome(decide(config, health, before.state, 1.0, reset_breaker=True), after.frozen)


def _capacities(config: Config) -> dict[str, dict[str, float | None]]:
    """Each decided name's endpoints' capacities (a steered name's groups included)."""
    return {
        name: {e.address: endpoint_capacity(t, e) for t in record.tiers for e in t.endpoints}
        for _o, name, record in index(config).managed
    }


@dataclass(frozen=True, slots=True)
class ClientView:
    """Where one client of one steered name goes, and what it is answered."""

    client: str
    name: str
    group: str
    why: str
    scope: int
    decision: NameDecision


def clients(
    config: Config, outcome: Outcome, steering: Steering | None, networks: Sequence[Network]
) -> list[ClientView]:
    """For each client network and each steered name: its location group and answer."""
    if steering is None:
        return []
    found = []
    for network in networks:
        for name, s in steered_names(config).items():
            placed = steering.place(name, network)
            decided = decision_name(name, placed.group, s.default.id)
            nd = outcome.decision.names[decided]
            found.append(ClientView(str(network), name, placed.group, placed.why, placed.scope, nd))
    return found


def _shown(nd: NameDecision) -> tuple[str, ...]:
    return nd.would_answer if nd.shadow else nd.answer


def totals(config: Config, decision: Decision) -> dict[str, tuple[float, float | None]]:
    """Each endpoint's load summed over every name it serves, and its capacity."""
    caps = _capacities(config)
    out: dict[str, tuple[float, float | None]] = {}
    for name, nd in decision.names.items():
        for address, load in nd.loads.items():
            old, cap = out.get(address, (0.0, caps[name].get(address)))
            out[address] = (old + load, cap)
    return out


def render(
    config: Config, downs: Sequence[str], outcome: Outcome, seen: Sequence[ClientView] = ()
) -> str:
    caps = _capacities(config)
    lines = [f"simulate: down {', '.join(downs) or '(nothing)'}"]
    for c in seen:
        nd = c.decision
        tier = f" tier {nd.tier}" if nd.tier else ""
        lines.append(
            f"client {c.client}: {c.name} group {c.group} ({c.why}){tier} [{nd.mode}] -> "
            f"{' '.join(_shown(nd)) or '-'}"
        )
    if outcome.frozen:
        lines.append(f"WARNING: {outcome.frozen}")
        lines.append("  (shown: the answers once an operator resets the circuit breaker)")
    for name, nd in outcome.decision.names.items():
        tier = f" tier {nd.tier}" if nd.tier else ""
        shadow = " (shadow: would publish)" if nd.shadow else ""
        loud = " OVER CAPACITY" if nd.over_capacity else ""
        lines.append(f"{name} [{nd.mode}]{tier}{loud}{shadow} -> {' '.join(_shown(nd)) or '-'}")
        for address in _shown(nd):
            load, cap = nd.loads.get(address), caps[name].get(address)
            weight = nd.weights.get(address)
            parts = [f"    {address}"] + ([f"weight {weight}"] if weight is not None else [])
            if load is not None:
                parts.append(f"load {load:g}" + (f" / capacity {cap:g}" if cap else ""))
                if cap and load > cap:
                    parts.append("PAST CAPACITY")
            lines.append("  ".join(parts))
        lines.append(f"    reason: {nd.reason}")
    survivors = totals(config, outcome.decision)
    if survivors:
        lines.append("load per endpoint (all names):")
        for address, (load, cap) in sorted(survivors.items()):
            share = f" / {cap:g} ({100 * load / cap:.0f}%)" if cap else ""
            lines.append(f"    {address}  {load:g}{share}")
    return "\n".join(lines)


def to_json(
    config: Config, downs: Sequence[str], outcome: Outcome, seen: Sequence[ClientView] = ()
) -> dict[str, Any]:
    caps = _capacities(config)
    return {
        "down": list(downs),
        "clients": [
            {
                "client": c.client,
                "name": c.name,
                "group": c.group,
                "why": c.why,
                "scope": c.scope,
                "tier": c.decision.tier,
                "mode": c.decision.mode,
                "answer": list(_shown(c.decision)),
            }
            for c in seen
        ],
        "frozen": outcome.frozen,
        "names": {
            name: {
                "answer": list(_shown(nd)),
                "shadow": nd.shadow,
                "tier": nd.tier,
                "mode": nd.mode,
                "weights": dict(nd.weights),
                "loads": dict(nd.loads),
                "capacity": {a: caps[name].get(a) for a in _shown(nd)},
                "over_capacity": nd.over_capacity,
                "reason": nd.reason,
                "notes": list(nd.notes),
            }
            for name, nd in outcome.decision.names.items()
        },
        "endpoints": {
            a: {"load": load, "capacity": cap}
            for a, (load, cap) in sorted(totals(config, outcome.decision).items())
        },
    }
