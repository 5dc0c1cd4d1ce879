"""Capacity-aware answers: spread a record's expected load so no endpoint is overrun.

Instead of piling a failed tier's traffic onto whatever is next, the answer grows endpoint
by endpoint into the following tiers until the healthy capacity covers the record's
`load`.  Weights are proportional to capacity, so each endpoint's expected share
(load * capacity / total) never exceeds its capacity while the total suffices.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from dnsfailover.config.schema import Endpoint, Tier

MAX_WEIGHT = 255  # the largest weight Route 53 and most weighted-DNS providers take


@dataclass(frozen=True, slots=True)
class Allocation:
    answer: tuple[str, ...]
    weights: dict[str, int]
    loads: dict[str, float] = field(default_factory=dict)
    capacity: float | None = None  # of the answer; None when something is unbounded/unknown
    over: bool = False  # the load exceeds every survivor's capacity together
    spilled: tuple[str, ...] = ()  # tiers beyond the active one that were added


def endpoint_capacity(tier: Tier, endpoint: Endpoint) -> float | None:
    """The endpoint's own capacity, else its share of the tier's; None: unbounded."""
    if endpoint.capacity is not None:
        return endpoint.capacity
    if tier.capacity is not None:
        return tier.capacity / len(tier.endpoints)
    return None


def allocate(tiers: Sequence[Tier], serviceable: Collection[str], load: float | None) -> Allocation:
    """Answer every serviceable endpoint of `tiers[0]`, then add serviceable endpoints of
    the following tiers, in order, until their capacity covers `load`.

    Without a load, or when an endpoint in the answer is unbounded, capacity plays no part
    and the configured weights are used.
    """
    chosen: list[tuple[Tier, Endpoint]] = [
        (tiers[0], e) for e in tiers[0].endpoints if e.address in serviceable
    ]
    caps = [endpoint_capacity(t, e) for t, e in chosen]
    if load is None or any(c is None for c in caps):
        return _plain(chosen)
    total = sum(c for c in caps if c is not None)
    spilled: list[str] = []
    for tier in tiers[1:]:
        if total >= load:
            break
        for e in tier.endpoints:
            if total >= load:
                break
            cap = endpoint_capacity(tier, e)
            if e.address not in serviceable or cap == 0:
                continue
            chosen.append((tier, e))
            if tier.name not in spilled:
                spilled.append(tier.name)
            if cap is None:  # an unbounded endpoint carries the rest
                return _plain(chosen, spilled)
            total += cap
    return _weighted(chosen, load, total, spilled)


def _plain(chosen: list[tuple[Tier, Endpoint]], spilled: Sequence[str] = ()) -> Allocation:
    weights = {e.address: e.weight for _t, e in chosen}
    return Allocation(tuple(weights), weights, spilled=tuple(spilled))


def _weighted(
    chosen: list[tuple[Tier, Endpoint]], load: float, total: float, spilled: Sequence[str]
) -> Allocation:
    caps = {e.address: endpoint_capacity(t, e) or 0.0 for t, e in chosen}
    top = max(caps.values(), default=0.0)
    if total <= 0:
        loads = {a: load / len(caps) for a in caps} if caps else {}
        weights = {a: 1 for a in caps}
    else:
        loads = {a: load * c / total for a, c in caps.items()}
        weights = {a: max(1, round(MAX_WEIGHT * c / top)) if c > 0 else 0 for a, c in caps.items()}
    return Allocation(tuple(caps), weights, loads, total, total < load, tuple(spilled))


def describe(alloc: Allocation, load: float) -> str:
    """`load 900 over capacity 1000 (90%)` for reasons and notes."""
    if alloc.capacity is None:
        return f"load {load:g}, capacity unbounded"
    pct = 100 * load / alloc.capacity if alloc.capacity else float("inf")
    return f"load {load:g} over capacity {alloc.capacity:g} ({pct:.0f}%)"
