"""Weighted answers: each query gets one address, chosen by smooth weighted round-robin.

A weighted A/AAAA record set (:attr:`dnsfailover.model.RecordSet.weights`) answers like
Route 53's weighted routing: one record per response, each record's share of the responses
proportional to its weight.  The choice is nginx's smooth weighted round-robin, which is
deterministic and spreads each address's turns evenly through the cycle, so over any full
cycle of ``sum(weights) / gcd(weights)`` answers every address gets exactly its share.

The cycle is computed once per snapshot; answering is one C call that is atomic (a
``_mmsg.Cycle``, whose turn is an atomic counter, or without the extension an
``itertools.cycle`` under the GIL), so the UDP thread, the event loop, the fast path
(:mod:`dnsfailover.server.fast`) and the C hit path share one rotation per name without a
lock.  Each worker process rotates on its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from dnslib import RR

try:
    from dnsfailover.server._mmsg import Cycle
except ImportError:  # not built: itertools.cycle, and no C hit path to share it with
    Cycle = None  # type: ignore[assignment,misc]


def smooth_order(weights: Sequence[int]) -> tuple[int, ...]:
    """One full cycle of smooth weighted round-robin: the index answered at each turn.

    Index ``i`` appears ``weights[i] // g`` times (``g`` the gcd of the positive weights);
    a zero weight is never chosen.  Ties go to the lower index, so the order is deterministic.

    :raises ValueError: if no weight is positive.
    """
    positive = [w for w in weights if w > 0]
    if not positive or any(w < 0 for w in weights):
        raise ValueError(f"weights {list(weights)}: need one positive and none negative")
    g = math.gcd(*positive)
    scaled = [w // g for w in weights]
    total = sum(scaled)
    current = [0] * len(scaled)
    order: list[int] = []
    for _ in range(total):
        best = 0
        for i, w in enumerate(scaled):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= total
        order.append(best)
    return tuple(order)


class Rotor:
    """The rotation of one weighted record set: which of its records answers next."""

    __slots__ = ("choices", "cycle", "order", "pick")

    def __init__(self, rrs: Sequence[RR], weights: Sequence[int]) -> None:
        self.choices: tuple[tuple[RR, ...], ...] = tuple((rr,) for rr in rrs)
        """One single-record answer per value, in the record set's order."""
        self.order = smooth_order(weights)
        self.cycle = Cycle(self.order) if Cycle is not None else None
        """The rotation the C hit path turns too (None without the extension)."""
        self.pick: Callable[[], int] = (
            self.cycle.pick if self.cycle is not None else itertools.cycle(self.order).__next__
        )
        """The index of the next answer; every call advances the rotation."""


Pick = Callable[[Rotor], int]
"""How a look-up chooses among a rotor's answers (see :meth:`ZoneSnapshot.pinned`)."""


def always(index: int) -> Pick:
    """A choice that answers every weighted set with its ``index``-th record."""

    def pick(_rotor: Rotor) -> int:
        return index

    return pick


def advance(rotor: Rotor) -> int:
    """The normal choice: the rotor's next turn."""
    return rotor.pick()
