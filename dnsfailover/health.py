"""Health of every target: rise/fall hysteresis per region, then a vote across regions.

A target starts UNKNOWN.  Its first fresh result decides at once (there is nothing to
flap from); after that it takes `fall` consecutive failures to go DOWN and `rise`
consecutive successes to come back UP.  State restored from the store after a restart is
kept until the first fresh result replaces it, so a restart neither forgets what it knew
nor trusts it over what it now sees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dnsfailover.model import HealthChange, Observation, State

log = logging.getLogger("dnsfailover.health")

STALE_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """How one target turns results into a state."""

    rise: int
    fall: int
    interval: float


@dataclass(frozen=True, slots=True)
class RegionHealth:
    """The state of one target as seen from one region."""

    state: State
    since: float
    reason: str
    last_at: float = 0.0
    fresh: bool = False


@dataclass(slots=True)
class _Counter:
    state: State = State.UNKNOWN
    since: float = 0.0
    reason: str = "no result yet"
    ok_run: int = 0
    fail_run: int = 0
    last_at: float = 0.0
    fresh: bool = False  # has seen a result in this process (restored state is not fresh)


@dataclass(slots=True)
class _Target:
    rules: Hysteresis
    regions: dict[str, _Counter] = field(default_factory=dict)
    voted: State = State.UNKNOWN
    voted_since: float = 0.0
    voted_reason: str = "no result yet"


class HealthTracker:
    """Turns observations into per-region and voted target states.

    Not thread-safe: feed it from one event loop.
    """

    def __init__(self, rules: Mapping[str, Hysteresis]) -> None:
        self._targets = {key: _Target(rules=r) for key, r in rules.items()}

    def update_rules(self, rules: Mapping[str, Hysteresis]) -> None:
        """Follow a config reload: keep what is known of unchanged targets, drop the rest."""
        kept = {key: self._targets[key] for key in rules if key in self._targets}
        for key, r in rules.items():
            if key in kept:
                kept[key].rules = r
            else:
                kept[key] = _Target(rules=r)
        self._targets = kept

    def restore(self, target: str, region: str, state: State, since: float, reason: str) -> None:
        """Seed a state remembered from before a restart; ignored for unknown targets."""
        t = self._targets.get(target)
        if t is None or state is State.UNKNOWN:
            return
        t.regions[region] = _Counter(state=state, since=since, reason=f"restored: {reason}")
        t.voted, t.voted_since, t.voted_reason = self._vote(t, since)

    def observe(self, obs: Observation) -> list[HealthChange]:
        """Apply one observation; return the changes it caused (region first, then voted)."""
        t = self._targets.get(obs.target)
        if t is None:
            return []
        counter = t.regions.setdefault(obs.region, _Counter())
        changes: list[HealthChange] = []
        new = self._step(counter, t.rules, obs)
        if new is not None:
            old = counter.state
            counter.state, counter.since, counter.reason = new, obs.at, _reason(obs, counter)
            changes.append(HealthChange(obs.target, obs.region, old, new, obs.at, counter.reason))
        voted, since, reason = self._vote(t, obs.at)
        if voted is not t.voted:
            changes.append(HealthChange(obs.target, None, t.voted, voted, obs.at, reason))
            t.voted, t.voted_since, t.voted_reason = voted, since, reason
        return changes

    @staticmethod
    def _step(c: _Counter, rules: Hysteresis, obs: Observation) -> State | None:
        first = not c.fresh
        c.fresh = True
        c.last_at = obs.at
        if obs.ok:
            c.ok_run, c.fail_run = c.ok_run + 1, 0
        else:
            c.ok_run, c.fail_run = 0, c.fail_run + 1
        if first:
            new = State.UP if obs.ok else State.DOWN
            return new if new is not c.state else None
        if c.state is not State.UP and c.ok_run >= rules.rise:
            return State.UP
        if c.state is not State.DOWN and c.fail_run >= rules.fall:
            return State.DOWN
        return None

    @staticmethod
    def _vote(t: _Target, now: float) -> tuple[State, float, str]:
        """Majority of the regions with a known, fresh state; a tie keeps the last verdict."""
        horizon = STALE_INTERVALS * t.rules.interval
        voters = {
            region: c
            for region, c in t.regions.items()
            if c.state is not State.UNKNOWN and (not c.fresh or now - c.last_at <= horizon)
        }
        if not voters:
            return t.voted, t.voted_since, t.voted_reason
        ups = sorted(r for r, c in voters.items() if c.state is State.UP)
        downs = sorted(r for r, c in voters.items() if c.state is State.DOWN)
        if len(voters) == 1:
            c = next(iter(voters.values()))
            return c.state, c.since, c.reason
        if 2 * len(ups) > len(voters):
            return State.UP, now, f"up in {len(ups)}/{len(voters)} regions ({', '.join(ups)})"
        if 2 * len(downs) > len(voters):
            return (
                State.DOWN,
                now,
                f"down in {len(downs)}/{len(voters)} regions ({', '.join(downs)})",
            )
        return t.voted, t.voted_since, t.voted_reason

    def state(self, target: str) -> State:
        t = self._targets.get(target)
        return t.voted if t is not None else State.UNKNOWN

    def states(self) -> dict[str, State]:
        """The voted state of every target."""
        return {key: t.voted for key, t in self._targets.items()}

    def regions(self, target: str) -> dict[str, RegionHealth]:
        t = self._targets.get(target)
        if t is None:
            return {}
        return {
            region: RegionHealth(c.state, c.since, c.reason, c.last_at, c.fresh)
            for region, c in t.regions.items()
        }

    def keys(self) -> Iterable[str]:
        return self._targets.keys()


def _reason(obs: Observation, c: _Counter) -> str:
    run = c.ok_run if obs.ok else c.fail_run
    verdict = "ok" if obs.ok else "failed"
    return f"{run} consecutive {verdict} ({obs.detail}, {obs.latency * 1000:.0f}ms)"


def log_change(change: HealthChange) -> None:
    """Health transitions are what operators grep for: INFO, with the reason."""
    where = f"region={change.region}" if change.region else "voted"
    log.info(
        "health: %s %s %s -> %s: %s",
        change.target,
        where,
        change.old.value,
        change.new.value,
        change.reason,
    )
