"""JSON shapes of the API's read-only views, built from the running node's values.

Everything here is synchronous and runs on the event loop: it reads in-memory state only
(the store is read by the route handlers, on the store's own thread).  Engine values are
rendered generically (`jsonable`), so fields the engine grows show up without changes here.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dnsfailover.api.states import name_state, role, summary, worst
from dnsfailover.engine.overrides import Override, touches, touches_endpoint
from dnsfailover.engine.steering import steered_names
from dnsfailover.errors import UserError
from dnsfailover.model import State

if TYPE_CHECKING:
    from dnsfailover.api.ports import NodeView
    from dnsfailover.config.schema import Config, Endpoint
    from dnsfailover.engine.settings import FailoverRecord
    from dnsfailover.engine.values import NameDecision
    from dnsfailover.health.tracker import HealthTracker
    from dnsfailover.model import Event


def jsonable(value: Any) -> Any:
    """Dataclasses, enums, mappings, tuples and sets as JSON values (NaN/inf as None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class NotFound(UserError):
    """Names something that does not exist; the message says what does."""


def resolve_name(config: Config, text: str) -> str:
    """A managed name from `www.example.test.`, `www.example.test` or its first label `www`.

    :raises NotFound: when it names no managed record, or several (the message lists them).
    """
    names = [name for _origin, name, _record in config.managed()]
    wanted = text.strip().lower()
    if not wanted:
        raise NotFound("a managed name is required")
    absolute = wanted if wanted.endswith(".") else f"{wanted}."
    if absolute in names:
        return absolute
    matches = [n for n in names if n.split(".")[0] == wanted]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(names) or "none"
    if matches:
        raise NotFound(f"{text!r} is ambiguous: it could be {', '.join(matches)}")
    raise NotFound(f"{text!r} is not a managed name (managed: {known})")


def override_json(o: Override) -> dict[str, Any]:
    data: dict[str, Any] = jsonable(o)
    data["description"] = o.describe()
    return data


def voted(tracker: HealthTracker, key: str) -> dict[str, Any]:
    """The voted state of a health key, with its reason and (when known) since when."""
    return {
        "state": tracker.state(key).value,
        "reason": tracker.reason(key),
        "since": tracker.since(key),
    }


def region_rows(tracker: HealthTracker, target: str, now: float) -> list[dict[str, Any]]:
    """Each region's state of `target`; where this node probes it, `reason` is what the
    probes say now (the streak), and `changed_reason` the one the state changed with."""
    rows = []
    for region, rh in sorted(tracker.regions(target, now).items()):
        row: dict[str, Any] = {"region": region, **jsonable(rh), "changed_reason": rh.reason}
        if rh.streak is not None:
            row["reason"] = rh.streak.text(rh.detail, rh.latency)
        rows.append(row)
    return rows


def serving(node: NodeView, name: str, record: FailoverRecord) -> tuple[set[str], set[str]]:
    """(addresses answered, tiers serving) of managed `name`: every location group's of a
    steered name, the tier a staged failback still carries too."""
    published = node.published
    if published is None:
        return set(), set()
    s = steered_names(node.config).get(name)
    keys = [g.decision for g in s.groups] if s is not None else [name]
    answered: set[str] = set()
    tiers: set[str] = set()
    for key in keys:
        nd = published.decision.names.get(key)
        ns = published.decision.state.names.get(key)
        if nd is not None:
            answered.update(nd.answer)
            tiers.add(nd.tier if nd.tier is not None else record.tiers[0].name)
        if ns is not None and ns.staged_from is not None:
            tiers.add(ns.staged_from)
    return answered, tiers


def endpoint_row(
    node: NodeView,
    name: str,
    record: FailoverRecord,
    tier: str,
    endpoint: Endpoint,
    answer: tuple[str, ...] | set[str],
    overrides: list[Override],
    now: float,
    tiers: set[str] | None = None,
) -> dict[str, Any]:
    """One endpoint of `name`: its voted health and role, the live streak of its probes
    here, per region; `tiers`: the name's serving tiers (default: the tier of `answer`)."""
    config = node.config
    key = config.health_key(record, endpoint)
    target = endpoint.target(record.check, config.checks[record.check]).key
    mine = [o for o in overrides if touches_endpoint(o, name, record, tier, endpoint.address)]
    regions = region_rows(node.tracker, target, now)
    vote = voted(node.tracker, key)
    if vote["since"] is None and len(regions) == 1:
        vote["since"] = regions[0]["since"]  # one region: the vote is that region's state
    here = next((r for r in regions if r["region"] == node.region), None)
    if here is None and len(regions) == 1:
        here = regions[0]
    streak = here["streak"] if here is not None else None
    changed = vote["reason"]
    if here is not None and streak is not None:
        # the vote's reason is the one it had when it changed: say what the probes say now
        live = here["reason"]
        vote["reason"] = (
            live if len(regions) == 1 else f"{changed}; here ({here['region']}): {live}"
        )
    in_answer = endpoint.address in answer
    published = node.published
    refused = published.decision.refused if published is not None else {}
    if tiers is None:
        tiers = {tier} if in_answer else set()
    return {
        "name": name,
        "tier": tier,
        "address": endpoint.address,
        "weight": endpoint.weight,
        "check": record.check,
        "health_key": key,
        "target": target,
        **vote,
        "for": round(now - vote["since"], 1) if vote["since"] else None,
        "changed_reason": changed,
        "streak": streak,
        "role": role(vote["state"], tier, in_answer, tiers, mine, refused),
        "in_answer": in_answer,
        "overrides": [{"id": o.id, "action": o.action.value} for o in mine],
        "regions": regions,
    }


def endpoints(node: NodeView, now: float) -> dict[str, Any]:
    overrides = node.overrides()
    rows = []
    for _origin, name, record in node.config.managed():
        answer, tiers = serving(node, name, record)
        for tier in record.tiers:
            for endpoint in tier.endpoints:
                rows.append(
                    endpoint_row(
                        node, name, record, tier.name, endpoint, answer, overrides, now, tiers
                    )
                )
    counts = {s.value: 0 for s in State}
    for state in node.tracker.states().values():
        counts[state.value] += 1
    return {"endpoints": rows, "counts": counts, "now": now}


def problems(node: NodeView) -> list[str]:
    """What keeps the node from doing its job now, in words (empty when nothing does)."""
    found = []
    unprobed = node.tracker.unprobed()
    if unprobed:
        _at, detail = max(unprobed.values())
        found.append(
            f"probes cannot run: the latest probe of {len(unprobed)} target(s) could not open "
            f"a socket ({detail}); their health is held as it was"
        )
    state = node.state_problem()
    if state is not None:
        found.append(state)
    found += [z["problem"] for z in node.dnssec_status().values() if z["problem"]]
    workers = node.workers_status()["problem"]
    if workers is not None:
        found.append(workers)
    return found


def _group(
    group: str,
    places: tuple[str, ...],
    nd: NameDecision | None,
    queries: int,
    state: tuple[str, str],
) -> dict[str, Any]:
    """One location group of a steered name, for the status."""
    return {
        "group": group,
        "queries": queries,
        "places": list(places),
        "answer": list(nd.answer) if nd is not None else [],
        "tier": nd.tier if nd is not None else None,
        "mode": nd.mode if nd is not None else None,
        "state": state[0],
        "state_text": state[1],
        "reason": nd.reason if nd is not None else "not decided yet",
    }


def status(node: NodeView, now: float) -> dict[str, Any]:
    config = node.config
    published = node.published
    cluster = node.cluster_status()
    contents = {z.origin: z for z in published.zones} if published is not None else {}
    syncs = node.sync_statuses()
    signed = node.dnssec_status()
    zones = []
    for origin, zone in config.zones.items():
        content = contents.get(origin)
        sync = syncs.get(origin)
        zones.append(
            {
                "zone": origin,
                "provider": zone.provider,
                "serial": content.soa.serial if content is not None else None,
                "sync": jsonable(sync) if sync is not None else None,
                "dnssec": signed.get(origin),
            }
        )
    overrides = node.overrides()
    names = []
    steered = steered_names(config)
    decided = published.decision.names if published is not None else {}
    kept = published.decision.state.names if published is not None else {}
    asked = node.dns_steered_queries() if steered else {}
    health = node.tracker.states()
    states: list[str] = []
    for origin, name, record in config.managed():
        nd = published.decision.names.get(name) if published is not None else None
        s = steered.get(name)
        by = s.default.record if s is not None else record  # the default group's tier order
        state = name_state(config, name, by, nd, kept.get(name), health, overrides)
        entry: dict[str, Any] = {
            "name": name,
            "zone": origin,
            "type": record.type,
            "policy": record.policy,
            "ttl": record.ttl,
            "answer": [],
            "mode": None,
            "tier": None,
            "reason": "not decided yet",
        }
        if nd is not None:
            entry.update(jsonable(nd))
            if entry["ttl"] is None:  # the engine leaves the record's own ttl unset
                entry["ttl"] = record.ttl
        entry["overrides"] = [o.id for o in overrides if touches(o, name, record)]
        if s is not None:
            # the entry's answer is the default group's; each group answers its own clients;
            # the name's state is its worst group's
            groups = []
            for g in s.groups:
                gd = decided.get(g.decision)
                gs = name_state(config, g.decision, g.record, gd, kept.get(g.decision), health,
                                overrides)  # fmt: skip
                groups.append(_group(g.id, g.places, gd, asked.get((name, g.id), 0), gs))
            entry["groups"] = groups
            bad = worst(g["state"] for g in groups)
            if bad != state[0]:
                off = [g for g in groups if g["state"] == bad]
                state = (bad, f"location group {off[0]['group']}: {off[0]['state_text']}")
        entry["state"], entry["state_text"] = state
        states.append(state[0])
        names.append(entry)
    frozen = getattr(published.decision, "frozen", None) if published else None
    return {
        "node": node.node_id,
        "region": node.region,
        "mode": cluster.get("mode"),
        "cluster": jsonable(cluster),
        "probes": node.probe_status(),
        "workers": node.workers_status(),
        "published_at": published.at if published is not None else None,
        # `12 names: 9 healthy, 2 failed over, 1 all down`, and the counts by state
        "summary": summary(states, sum(1 for n in names if n.get("shadow")), frozen is not None),
        # Why the circuit breaker holds every answer, and overrides the engine set aside.
        "frozen": frozen,
        "refused": jsonable(getattr(published.decision, "refused", {})) if published else {},
        "now": now,
        "problems": problems(node),
        "zones": zones,
        "names": names,
        "overrides": [override_json(o) for o in overrides],
    }


def events(rows: list[Event], limit: int) -> dict[str, Any]:
    return {
        "events": [jsonable(e) for e in rows],
        # Page on with ?before=<this>; None once the oldest event is shown.
        "next_before": rows[-1].id if len(rows) == limit and rows[-1].id > 1 else None,
    }
