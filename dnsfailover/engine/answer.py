"""From the serving tier to the published answer: capacity, staged shares, all-down,
shadow mode and the TTL while degraded."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dnsfailover.config.schema import ActivePassive
from dnsfailover.engine.capacity import MAX_WEIGHT, Allocation, allocate, describe
from dnsfailover.engine.settings import FailoverRecord, Settings
from dnsfailover.engine.tiers import Selection
from dnsfailover.engine.values import NameState


@dataclass(slots=True)
class Result:
    answer: tuple[str, ...]  # what the rules chose
    weights: dict[str, int]
    mode: str
    reason: str
    published: tuple[str, ...] = ()  # what is published (differs from `answer` in shadow)
    published_weights: dict[str, int] = field(default_factory=dict)
    loads: dict[str, float] = field(default_factory=dict)
    ttl: int | None = None
    over: bool = False
    notes: list[str] = field(default_factory=list)
    wakes: list[float] = field(default_factory=list)


def sorted_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(addresses), key=_order))


@functools.lru_cache(maxsize=65_536)
def _order(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The numeric order of an address (parsed once: a decision sorts the same ones again)."""
    return ipaddress.ip_address(address)


def answer_for(
    record: FailoverRecord,
    up: Mapping[str, list[str]],
    sel: Selection,
    known: bool,
    policy: Settings,
    prev: NameState,
    now: float,
) -> Result:
    result = _live(record, up, sel, known)
    result.ttl = record.ttl
    result.published, result.published_weights = result.answer, result.weights
    if policy.shadow:
        if prev.active is not None:
            published, weights = prev.answer, dict(prev.weights)
        else:
            published = sorted_addresses(e.address for e in record.tiers[0].endpoints)
            weights = {}
        result.published = published
        result.published_weights = weights or {a: 1 for a in published}
        if result.answer != published:
            result.notes.append(
                f"shadow: would publish {list(result.answer)}; still publishing {list(published)}"
            )
        return result
    _ttl(record, sel, policy, now, result)
    return result


def _live(
    record: FailoverRecord, up: Mapping[str, list[str]], sel: Selection, known: bool
) -> Result:
    tiers = record.tiers
    order = [t.name for t in tiers]
    active = sel.active
    tier = tiers[order.index(active)]
    prefix = f"tier {active}: " if len(tiers) > 1 else ""
    if len(up[active]) >= tier.min_healthy:
        base = f"{prefix}{len(up[active])}/{len(tier.endpoints)} endpoints up"
        if sel.staged_from is not None and isinstance(record, ActivePassive):
            return _staged(record, up, sel, base)
        serviceable = {a for addresses in up.values() for a in addresses}
        alloc = allocate(tiers[order.index(active) :], serviceable, record.load)
        return _capacity(record, alloc, len(up[active]) == len(tier.endpoints), base)
    everything = sorted_addresses(e.address for e in tier.endpoints)
    if not known:
        reason = "no health data yet: serving every endpoint of the tier"
        return Result(everything, {a: 1 for a in everything}, "no_data", reason)
    why = "no tier meets min_healthy"
    if record.all_down == "serve_all":
        answer, reason = everything, f"{why}: all_down=serve_all (fail open)"
    elif record.all_down == "serve_none":
        answer, reason = (), f"{why}: all_down=serve_none (NODATA)"
    else:
        answer, reason = sorted_addresses(record.fallback), f"{why}: all_down=fallback"
    return Result(answer, {a: 1 for a in answer}, "all_down", reason)


def _capacity(record: FailoverRecord, alloc: Allocation, complete: bool, base: str) -> Result:
    answer = sorted_addresses(alloc.answer)
    weights = {a: alloc.weights[a] for a in answer}
    loads = {a: alloc.loads[a] for a in answer if a in alloc.loads}
    mode = "healthy" if complete and not alloc.spilled and not alloc.over else "degraded"
    result = Result(answer, weights, mode, base, loads=loads)
    if record.load is None or alloc.capacity is None:
        return result
    load = record.load
    if alloc.over:
        result.over = True
        text = (
            f"capacity: OVER CAPACITY: {describe(alloc, load)}; every healthy endpoint "
            f"together cannot carry the load"
        )
        if record.over_capacity == "fallback":
            result.answer = sorted_addresses(record.fallback)
            result.weights = {a: 1 for a in result.answer}
            result.loads = {}
            text += "; over_capacity=fallback: shedding to the fallback answer"
        else:
            text += "; over_capacity=serve_anyway: serving every survivor past its capacity"
        result.notes.append(text)
    elif alloc.spilled:
        result.notes.append(
            f"capacity: spread into tier(s) {', '.join(alloc.spilled)} so no endpoint is "
            f"pushed past its capacity: {describe(alloc, load)}"
        )
    return result


def _staged(
    record: ActivePassive, up: Mapping[str, list[str]], sel: Selection, base: str
) -> Result:
    assert sel.staged_from is not None
    share = record.staged.share
    new, old = up[sel.active], up[sel.staged_from]
    per_new, per_old = share / len(new), (100 - share) / max(len(old), 1)
    top = max(per_new, per_old if old else 0.0)
    weights = {a: max(1, round(MAX_WEIGHT * per_new / top)) for a in new}
    weights |= {a: max(1, round(MAX_WEIGHT * per_old / top)) for a in old}
    answer = sorted_addresses(weights)
    loads: dict[str, float] = {}
    if record.load is not None:
        loads = {a: record.load * per_new / 100 for a in new}
        loads |= {a: record.load * per_old / 100 for a in old}
    reason = f"{base}; {100 - share:g}% still on {sel.staged_from}"
    return Result(answer, {a: weights[a] for a in answer}, "degraded", reason, loads=loads)


def _ttl(
    record: FailoverRecord, sel: Selection, policy: Settings, now: float, result: Result
) -> None:
    """Lower the TTL while degraded or failing over, so the next change reaches clients
    sooner; it is restored once the name is healthy on its first tier past the hold."""
    if policy.degraded_ttl is None or policy.degraded_ttl >= record.ttl:
        return
    hold = record.hold_down if isinstance(record, ActivePassive) else 0.0
    why = ""
    if result.mode != "healthy":
        why = f"mode {result.mode}"
    elif sel.active != record.tiers[0].name:
        why = f"failed over to {sel.active}"
    elif sel.changes and now - sel.changes[-1] < hold:
        why = "within hold_down after a tier change"
        result.wakes.append(sel.changes[-1] + hold)
    if why:
        result.ttl = policy.degraded_ttl
        result.notes.append(f"ttl: degraded_ttl {policy.degraded_ttl} while {why}")
