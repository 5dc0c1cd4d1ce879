"""What the interlocks and capacity rules did in a decision that they did not do in the one
before: the edges an operator hears about once (a log line, a notification and a history
entry), not at every decision while the state lasts.

- the circuit breaker trips, or is released;
- an override is set aside by an interlock (once per override, until it is no longer);
- a name goes OVER CAPACITY, or comes back within capacity.

Pure: a function of (previous decision, new decision); the node logs, notifies and records
what it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from dnsfailover.engine.values import Decision

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True, slots=True)
class Edge:
    """One change worth telling: `kind` is the history's (and the notification's) kind."""

    kind: Literal["interlock", "capacity"]
    subject: str
    message: str
    severity: Severity
    level: int  # the logging level it is logged at


def _over(decision: Decision | None) -> set[str]:
    if decision is None:
        return set()
    return {name for name, nd in decision.names.items() if nd.over_capacity}


def edges(previous: Decision | None, new: Decision) -> list[Edge]:
    """What changed from `previous` (None: nothing decided yet) to `new`, in telling order."""
    found: list[Edge] = []
    was_frozen = previous.frozen if previous is not None else None
    if new.frozen != was_frozen:
        if new.frozen is not None:
            message = f"circuit breaker tripped: {new.frozen}"
            found.append(Edge("interlock", "circuit-breaker", message, "critical", logging.ERROR))
        else:
            message = "circuit breaker released"
            found.append(Edge("interlock", "circuit-breaker", message, "warning", logging.WARNING))
    was_refused = set(previous.refused) if previous is not None else set()
    for oid, why in new.refused.items():
        if oid not in was_refused:
            message = f"override {oid} set aside: {why}"
            found.append(Edge("interlock", oid, message, "warning", logging.WARNING))
    before, now = _over(previous), _over(new)
    for name in sorted(now - before):
        message = f"{name} OVER CAPACITY: {new.names[name].reason}"
        found.append(Edge("capacity", name, message, "critical", logging.ERROR))
    for name in sorted(before - now):
        message = f"{name} back within capacity"
        found.append(Edge("capacity", name, message, "info", logging.WARNING))
    return found
