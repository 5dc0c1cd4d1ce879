"""Which operator overrides a decision ends.

After each decision the node removes (with an audit entry) the overrides that are over:

- a ``failback`` is taken once: the decision that saw it acted on it;
- a ``failover`` of a name is ended by a ``failback`` of the same name in that decision;
- an override whose ``expires_at`` has passed is over.

Pure: the node calls `ended` with the overrides the decision was given and everything the
book holds, and removes what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dnsfailover.engine.overrides import Action, Override

TAKEN = "taken by the engine"
ENDED_BY_FAILBACK = "ended by a failback"
EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Ending:
    """An override to remove, and why (the reason recorded in the history)."""

    override: Override
    why: str


def ended(in_force: Sequence[Override], held: Sequence[Override], now: float) -> list[Ending]:
    """What the decision made with `in_force` ends, in the order it is removed.

    :param in_force: the overrides the decision was given (active at `now`).
    :param held: every override the node holds, expired ones included.
    """
    backs = [o for o in in_force if o.action is Action.FAILBACK]
    named = {b.name for b in backs}
    ends = [Ending(o, TAKEN) for o in backs]
    ends += [
        Ending(o, ENDED_BY_FAILBACK)
        for o in in_force
        if o.action is Action.FAILOVER and o.name in named
    ]
    ends += [Ending(o, EXPIRED) for o in held if not o.active(now)]
    return ends
