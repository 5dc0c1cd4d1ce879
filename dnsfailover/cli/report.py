"""Machine-readable output of `validate --json` and `plan --json`, and the plan's
`--detailed-exitcode` (as terraform: 0 no changes, 2 changes, 1 error)."""

from __future__ import annotations

from typing import Any

from dnsfailover.cli.args import EXIT_ERROR, EXIT_OK
from dnsfailover.config.schema import Config
from dnsfailover.errors import Problem
from dnsfailover.model import RecordSet
from dnsfailover.provider.plan import Change
from dnsfailover.runtime.oneshot import PlanResult

#: `plan --detailed-exitcode` when a zone has changes to make
EXIT_CHANGES = 2


def problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "path": problem.path,
        "message": problem.message,
    }


def validate_json(path: str, config: Config | None, problems: list[Problem]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "file": path,
        "valid": config is not None and not problems,
        "problems": [problem_json(p) for p in problems],
    }
    if config is not None:
        out["zones"] = len(config.zones)
        out["managed_names"] = len(config.managed())
        out["probe_targets"] = len(config.targets())
    return out


def _rrset(rs: RecordSet | None) -> dict[str, Any] | None:
    if rs is None:
        return None
    out: dict[str, Any] = {"ttl": rs.ttl, "values": list(rs.values)}
    if rs.weights:
        out["weights"] = list(rs.weights)
    return out


def _change(change: Change) -> dict[str, Any]:
    name, rtype = change.key
    return {
        "action": change.kind,
        "name": name,
        "type": rtype,
        "place": change.place or None,
        "before": _rrset(change.old),
        "after": _rrset(change.new),
    }


def plan_json(result: PlanResult) -> dict[str, Any]:
    """The probes, each name's answer and health, and each external zone's changes."""
    zones = []
    for zp in result.zones:
        plan = zp.plan
        zone: dict[str, Any] = {
            "zone": zp.zone,
            "provider": zp.provider,
            "changes": [_change(c) for c in plan.changes] if plan is not None else [],
            "counts": plan.counts() if plan is not None else None,
            "unsafe": list(zp.unsafe),
            "error": zp.error or None,
        }
        if zp.result is not None:
            zone["applied"] = {
                "changes": zp.result.applied,
                "calls": zp.result.calls,
                "confirmed": zp.result.confirmed,
            }
        zones.append(zone)
    return {
        "probes": [
            {
                "target": o.target,
                "region": o.region,
                "result": "ok" if o.ok else "unknown" if o.unknown else "fail",
                "detail": o.detail,
                "latency_ms": round(o.latency * 1000, 1),
            }
            for o in sorted(result.observations, key=lambda o: o.target)
        ],
        "names": [
            {
                "name": name,
                "zone": nd.zone,
                "policy": nd.policy,
                "tier": nd.tier,
                "health": nd.mode,
                "policy_mode": "shadow" if nd.shadow else "live",
                "answer": list(nd.answer),
                "reason": nd.reason,
            }
            for name, nd in result.decision.names.items()
        ],
        "zones": zones,
        "changes": sum(len(z["changes"]) for z in zones),
        "errors": [z["error"] for z in zones if z["error"]],
    }


def detailed_exit(result: PlanResult) -> int:
    """1 when a zone could not be planned, else 2 when any zone has changes, else 0."""
    if any(zp.error for zp in result.zones):
        return EXIT_ERROR
    if any(zp.plan is not None and zp.plan.changes for zp in result.zones):
        return EXIT_CHANGES
    return EXIT_OK
