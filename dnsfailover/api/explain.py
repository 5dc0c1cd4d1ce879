"""`explain NAME`: why a managed name answers what it answers.

Puts together, for one name, everything the engine looked at: the record's policy, its check,
each tier and endpoint with its voted and per-region health, the overrides that touch it, the
regions that do not vote, and the interlocks an operator would hit (what draining each
served endpoint, or failing the name over, would be refused for).  `lines` says the same in
plain sentences, for the CLI and the status page.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dnsfailover.api.states import name_state
from dnsfailover.api.views import endpoint_row, jsonable, override_json, serving
from dnsfailover.config.geocheck import steering_rules
from dnsfailover.config.schema import ActivePassive
from dnsfailover.engine.decide import vet_override
from dnsfailover.engine.overrides import Action, Override, new_id, touches
from dnsfailover.engine.steering import steered_names
from dnsfailover.errors import UserError
from dnsfailover.geo.ecs import ClientSubnet

if TYPE_CHECKING:
    from dnsfailover.api.ports import NodeView
    from dnsfailover.config.checks import CheckConfig
    from dnsfailover.config.schema import ActiveActive
    from dnsfailover.geo.locate import Network


def explain(node: NodeView, name: str, now: float, client: Network | None = None) -> dict[str, Any]:
    """The explanation of `name`, an absolute managed name (see `views.resolve_name`); for
    a steered name, its location groups, and `client`'s group when one is given."""
    config = node.config
    origin, record = next((o, r) for o, n, r in config.managed() if n == name)
    check = config.checks[record.check]
    published = node.published
    nd = published.decision.names.get(name) if published is not None else None
    ns = published.decision.state.names.get(name) if published is not None else None
    answer = tuple(nd.answer) if nd is not None else ()
    serial = None
    if published is not None:
        serial = next((z.soa.serial for z in published.zones if z.origin == origin), None)
    overrides = [o for o in node.overrides() if touches(o, name, record)]
    active = nd.tier if nd is not None else None
    answered, carrying = serving(node, name, record)
    tiers = []
    for tier in record.tiers:
        rows = [
            endpoint_row(node, name, record, tier.name, e, answered, overrides, now, carrying)
            for e in tier.endpoints
        ]
        up = sum(1 for r in rows if r["state"] == "up")
        tiers.append(
            {
                "name": tier.name,
                "min_healthy": tier.min_healthy,
                "up": up,
                "meets_min_healthy": up >= tier.min_healthy,
                "serving": active == tier.name or len(record.tiers) == 1,
                "healthy_since": (ns.healthy_since.get(tier.name) if ns is not None else None),
                "endpoints": rows,
            }
        )
    cluster = node.cluster_status()
    health = node.tracker.states()
    s = steered_names(config).get(name)
    decided_by = s.default.record if s is not None else record  # the default group's order
    state, state_text = name_state(config, name, decided_by, nd, ns, health, node.overrides())
    result: dict[str, Any] = {
        "name": name,
        "zone": origin,
        "state": state,
        "state_text": state_text,
        "serial": serial,
        "record": _record(record),
        "check": {"name": record.check, **_check(check)},
        "decision": jsonable(nd) if nd is not None else None,
        "answer": list(answer),
        "engine": jsonable(ns) if ns is not None else None,
        "tiers": tiers,
        "overrides": [override_json(o) for o in overrides],
        "refused": {
            oid: why
            for oid, why in (
                getattr(published.decision, "refused", {}) if published is not None else {}
            ).items()
            if oid in {o.id for o in overrides}
        },
        "frozen": getattr(published.decision, "frozen", None) if published is not None else None,
        "isolated_regions": list(cluster.get("isolated_regions") or []),
        "interlocks": interlocks(node, name, record, answer, now),
        "steering": steering(node, name, client),
        "now": now,
    }
    result["lines"] = lines(result)
    return result


def steering(node: NodeView, name: str, client: Network | None) -> dict[str, Any] | None:
    """A steered name's rule and each location group's decision; with `client`, where that
    client goes (its group, why, the ECS scope of its answer) and what it gets."""
    s = steered_names(node.config).get(name)
    if s is None:
        if client is not None:
            raise UnsteeredClient(f"{name} is not steered: every client gets the same answer")
        return None
    published = node.published
    names = published.decision.names if published is not None else {}
    groups = []
    for g in s.groups:
        nd = names.get(g.decision)
        groups.append(
            {
                "group": g.id,
                "decision": g.decision,
                "places": list(g.places),
                "default": g is s.default,
                "tier": nd.tier if nd is not None else None,
                "mode": nd.mode if nd is not None else None,
                "answer": list(nd.answer) if nd is not None else [],
                "reason": nd.reason if nd is not None else None,
            }
        )
    rule = steering_rules(node.config)[name]
    result: dict[str, Any] = {"by": rule.by, "groups": groups}
    if client is not None:
        placed = node.place(name, client)
        assert placed is not None  # the name is steered
        mine = next(g for g in groups if g["group"] == placed.group)
        result["client"] = {
            "network": str(client),
            "group": placed.group,
            "why": placed.why,
            "scope": node.source_limits().reply_scope(ClientSubnet(client), placed.scope),
            "tier": mine["tier"],
            "answer": mine["answer"],
        }
    return result


class UnsteeredClient(UserError):
    """`explain --client` for a name that is not steered."""


def _record(record: ActiveActive | ActivePassive) -> dict[str, Any]:
    data: dict[str, Any] = {
        "policy": record.policy,
        "type": record.type,
        "ttl": record.ttl,
        "check": record.check,
        "all_down": record.all_down,
        "fallback": list(record.fallback),
        "quorum": record.quorum,
    }
    if isinstance(record, ActivePassive):
        data.update(failback=record.failback, hold_down=record.hold_down)
    else:
        data["min_healthy"] = record.min_healthy
    return data


def _check(check: CheckConfig) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": check.type,
        "port": check.effective_port,
        "interval": check.interval,
        "timeout": check.timeout,
        "rise": check.rise,
        "fall": check.fall,
        "quorum": check.quorum,
        "detection_time": check.detection_time,
    }
    if check.type in ("http", "https"):
        data.update(method=check.method, path=check.path)
    elif check.type == "dns":
        data.update(query=check.query, query_type=check.query_type)
    return data


def interlocks(
    node: NodeView,
    name: str,
    record: ActiveActive | ActivePassive,
    answer: tuple[str, ...],
    now: float,
) -> list[dict[str, Any]]:
    """What the interlocks would say to draining each served endpoint, and to a failover."""
    published = node.published
    if published is None:
        return []
    states = node.tracker.states()
    active = node.overrides()
    asks: list[tuple[Action, str | None]] = [(Action.DRAIN, a) for a in answer]
    if isinstance(record, ActivePassive):
        asks.append((Action.FAILOVER, None))
    found = []
    for action, endpoint in asks:
        probe = Override(new_id(), action, name, endpoint, None, "explain", "explain", now)
        refusal = vet_override(node.config, states, published.decision.state, active, probe, now)
        found.append(
            {
                "action": action.value,
                "endpoint": endpoint,
                "allowed": refusal is None,
                "refusal": refusal,
            }
        )
    return found


def _when(at: float | None) -> str:
    if at is None or at <= 0:
        return ""
    return " since " + time.strftime("%H:%M:%S", time.localtime(at))


def lines(e: dict[str, Any]) -> list[str]:
    """The explanation as sentences, most important first."""
    d = e["decision"]
    out: list[str] = []
    if d is None:
        out.append(f"{e['name']} has no decision yet (the node is starting)")
    else:
        shown = ", ".join(e["answer"]) or "nothing (NODATA)"
        out.append(f"{e['name']} answers {shown}: {e['state_text']}: {d['reason']}")
        out.extend(f"rule: {note}" for note in d.get("notes") or ())
    r, c = e["record"], e["check"]
    policy = f"{r['policy']} {r['type']} ttl {r['ttl']}, all_down {r['all_down']}"
    if r["policy"] == "active-passive":
        policy += f", failback {r['failback']} (hold_down {r['hold_down']:g}s)"
    out.append(f"policy: {policy}")
    how = f" {c['method']} {c['path']}" if "path" in c else ""
    out.append(
        f"check {c['name']}: {c['type']}{how} every {c['interval']:g}s, "
        f"timeout {c['timeout']:g}s, rise {c['rise']}, fall {c['fall']}, "
        f"quorum {r['quorum'] or c['quorum']}"
    )
    for t in e["tiers"]:
        mark = " (serving)" if t["serving"] else ""
        out.append(
            f"tier {t['name']}{mark}: {t['up']}/{len(t['endpoints'])} up, "
            f"min_healthy {t['min_healthy']}"
        )
        for ep in t["endpoints"]:
            flags = "".join(f" [{o['action']} {o['id']}]" for o in ep["overrides"])
            held = f" for {ep['for']:.0f}s" if ep.get("for") is not None else ""
            role = f" ({ep['role']})" if ep["role"] not in ("down", "unknown") else ""
            role += " (answered)" if ep["in_answer"] and ep["role"] != "serving" else ""
            out.append(
                f"  {ep['address']} {ep['state'].upper()}{_when(ep['since'])}{held}"
                f"{role}{flags}: {ep['reason']}"
            )
            for reg in ep["regions"]:
                notes = " stale" if reg.get("stale") else ""
                notes += " isolated" if reg.get("isolated") else ""
                out.append(
                    f"    region {reg['region']}: {reg['state']}{notes}{_when(reg['since'])}: "
                    f"{reg['reason']}"
                )
    if e["frozen"]:
        out.append(f"frozen: every answer is held: {e['frozen']}")
    out.extend(f"override {o['id']}: {o['description']}" for o in e["overrides"])
    out.extend(f"override {oid} set aside: {why}" for oid, why in e["refused"].items())
    if e["isolated_regions"]:
        out.append(f"not voting (isolated): {', '.join(e['isolated_regions'])}")
    for i in e["interlocks"]:
        if not i["allowed"]:
            what = f"draining {i['endpoint']}" if i["endpoint"] else i["action"]
            out.append(f"interlock: {what} would be refused without --force: {i['refusal']}")
    steered = e.get("steering")
    if steered is not None:
        c = steered.get("client")
        if c is not None:
            out.insert(
                0,
                f"client {c['network']}: location group {c['group']} ({c['why']}), "
                f"tier {c['tier']}, answers {', '.join(c['answer']) or 'nothing (NODATA)'} "
                f"(ECS scope /{c['scope']})",
            )
        out.append(f"steering by {steered['by']}: the answer above is the default group's")
        for g in steered["groups"]:
            where = ", ".join(g["places"])
            out.append(
                f"  group {g['group']} ({where}): tier {g['tier']} [{g['mode']}] -> "
                f"{', '.join(g['answer']) or 'nothing'}"
            )
    return out
