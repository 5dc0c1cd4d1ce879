"""The decision of a plain active-active name, without the policy machinery around it.

Most names of a big config are active-active, with no capacity (`load`), damping or shadow
mode, and at most decisions no override touches them: their answer is every UP endpoint,
or what `all_down` says.  `decide` takes this path for them (a regional outage re-decides
thousands at once); it gives exactly what the general path (`decide._decide_name`) gives,
which stays the reference and which a property test compares it with.  Everything that
depends only on the config is worked out once per config (`plain`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dnsfailover.config.policy import MaxFailovers
from dnsfailover.config.schema import ActiveActive, Config
from dnsfailover.engine.answer import sorted_addresses
from dnsfailover.engine.index import index
from dnsfailover.engine.settings import settings
from dnsfailover.engine.values import NameDecision, NameState
from dnsfailover.model import State

_UP = State.UP
_DOWN = State.DOWN
_UNKNOWN = State.UNKNOWN
_FIRST = ("first decision",)
_NO_PENALTIES: Mapping[str, float] = {}  # shared, never changed
_NO_LOADS: Mapping[str, float] = {}  # shared, never changed
_NO_DATA = "no health data yet: serving every endpoint of the tier"


@dataclass(frozen=True, slots=True)
class Plain:
    """What a plain name's decision needs of its config (equal values shared: there is one
    for each of maybe 10,000 names, for as long as the config is loaded)."""

    policy: str
    tier: str
    min_healthy: int
    slots: tuple[tuple[str, str, str], ...]  # (tier, address, health key): the index's
    weights: tuple[int, ...]  # of each endpoint, in order
    alone: Mapping[str, tuple[str]]  # health key → (key,): shared, as an outage makes many
    everything: tuple[str, ...]  # every endpoint, sorted
    all_down: tuple[str, ...]  # the answer when no endpoint is enough (health known)
    all_down_reason: str
    ttl: int
    degraded_ttl: int | None  # None: off, or not below `ttl`
    window: MaxFailovers | None


_WHY = "no tier meets min_healthy"
_ALL_DOWN = {
    "serve_all": f"{_WHY}: all_down=serve_all (fail open)",
    "serve_none": f"{_WHY}: all_down=serve_none (NODATA)",
    "fallback": f"{_WHY}: all_down=fallback",
}


def plain(config: Config) -> Mapping[str, Plain]:
    """The plain names of `config` (see the module), by name."""
    return config.derived("engine.plain", _build)


def _build(config: Config) -> dict[str, Plain]:
    ix = index(config)
    found: dict[str, Plain] = {}
    alone = {key: (key,) for key in ix.all_keys}
    shared: dict[tuple[int, ...], tuple[int, ...]] = {}
    for _origin, name, record in ix.managed:
        policy = settings(config, record)
        if not isinstance(record, ActiveActive) or record.load is not None:
            continue
        if policy.damping is not None or policy.shadow:
            continue
        slots = ix.slots[name]
        addresses = [address for _tier, address, _key in slots]
        if len(set(addresses)) != len(addresses):
            continue  # one state per address in the general path: leave it to that one
        weights = tuple(e.weight for e in record.endpoints)
        everything = sorted_addresses(addresses)
        if record.all_down == "serve_all":
            down = everything
        elif record.all_down == "serve_none":
            down = ()
        else:
            down = sorted_addresses(record.fallback)
        degraded = policy.degraded_ttl
        found[name] = Plain(
            record.policy,
            record.tiers[0].name,
            record.min_healthy,
            slots,
            shared.setdefault(weights, weights),
            alone,
            everything,
            down,
            _ALL_DOWN[record.all_down],
            record.ttl,
            degraded if degraded is not None and degraded < record.ttl else None,
            policy.max_failovers,
        )
    return found


def decide_plain(
    p: Plain,
    origin: str,
    name: str,
    health: Mapping[str, State],
    prev: NameState,
    now: float,
) -> tuple[NameDecision, NameState, list[float]]:
    """A plain name's decision and state, and when it wants to be decided again, for a
    decision no override touches it in, the circuit breaker does not hold, and no failback
    is asked for."""
    up: list[str] = []
    weights: dict[str, int] = {}
    downs: list[str] = []
    known = False
    for (_tier, address, key), weight in zip(p.slots, p.weights, strict=True):
        state = health.get(key, _UNKNOWN)
        if state is _UP:
            up.append(address)
            weights[address] = weight
            known = True
        elif state is not _UNKNOWN:
            known = True
            if state is _DOWN:
                downs.append(key)
    # the health keys DOWN, sorted (what the circuit breaker compares with next time)
    if not downs:
        down: tuple[str, ...] = ()
    elif len(downs) == 1:
        down = p.alone[downs[0]]
    else:
        down = tuple(sorted(set(downs)))
    tier = p.tier
    meets = len(up) >= p.min_healthy
    if prev.active != tier:  # the first decision (tier names are fixed per record)
        notes: tuple[str, ...] = _FIRST
        changes: tuple[float, ...] = ()
        released = None
    else:
        notes = ()
        window = p.window
        recent = (
            tuple(c for c in prev.changes if now - c < window.window) if window is not None else ()
        )
        changes = recent or prev.changes[-1:]
        released = prev.released
    # Values nothing changes are shared where they are equal (the engine never changes one
    # once made): an outage keeps ten thousand names' states alive, and every object fewer
    # is less for the collector to walk.
    ups = tuple(up)
    if meets:
        answer = ups if len(ups) == 1 else sorted_addresses(up)
        if answer == ups:
            ups = answer
        else:
            weights = {a: weights[a] for a in answer}
        complete = len(up) == len(p.slots)
        mode = "healthy" if complete else "degraded"
        reason = f"{len(up)}/{len(p.slots)} endpoints up"
        held = prev.healthy_since
        since = held if len(held) == 1 and tier in held else {tier: held.get(tier, now)}
    else:
        since = {}
        if not known:
            answer, mode, reason = p.everything, "no_data", _NO_DATA
        else:
            answer, mode, reason = p.all_down, "all_down", p.all_down_reason
        weights = {a: 1 for a in answer}
    ttl = p.ttl
    wakes: list[float] = []
    if p.degraded_ttl is not None:
        why = ""
        if mode != "healthy":
            why = f"mode {mode}"
        elif changes and now - changes[-1] < 0.0:  # active-active: no hold_down
            why = "within hold_down after a tier change"
            wakes.append(changes[-1] + 0.0)
        if why:
            ttl = p.degraded_ttl
            notes = (*notes, f"ttl: degraded_ttl {ttl} while {why}")
    nd = NameDecision(
        name,
        origin,
        p.policy,
        answer,
        None,
        mode,
        "; ".join((reason, *notes)) if notes else reason,
        weights=weights,
        loads=_NO_LOADS,
        ttl=ttl,
        would_answer=answer,
        shadow=False,
        damped=False,
        penalty=0.0,
        over_capacity=False,
        notes=notes,
    )
    ns = NameState(
        active=tier,
        healthy_since=since,
        answer=answer,
        would_answer=answer,
        mode=mode,
        up=ups,
        changes=changes,
        penalties=dict(prev.penalties) if prev.penalties else _NO_PENALTIES,
        penalty_at=prev.penalty_at if prev.penalties else 0.0,  # not decayed here
        suppressed=prev.suppressed,
        weights=weights,
        staged_from=None,
        staged_since=None,
        pin=None,
        released=released,
        down=down,
    )
    return nd, ns, wakes
