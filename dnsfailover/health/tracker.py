"""Health of every target: rise/fall hysteresis per region, then a vote across regions.

A target starts UNKNOWN.  Its first fresh result decides at once (there is nothing to
flap from); after that it takes `fall` consecutive failures to go DOWN and `rise`
consecutive successes to come back UP.  State restored from the store after a restart is
kept until the first fresh result replaces it, so a restart neither forgets what it knew
nor trusts it over what it now sees.

A probe that could not run (`Observation.unknown`: this process was out of file
descriptors) is no result: it leaves the state, the rise/fall runs and freshness as they
were, and is remembered per target (`unprobed`) so the node can report it.

Regions vote.  This node's own region is fed observations; other regions' states arrive
already filtered by their own hysteresis (`set_remote`, from the cluster), and stay fresh
while their node keeps beating (`seen`).  Only fresh regions vote (stale = no result for
`STALE_INTERVALS` check intervals), by the quorum rule of each health key (`quorum.py`).
A region that sees almost every target DOWN while the other regions see most of them UP is
flagged isolated (its checker is cut off, not the endpoints) and does not vote until it
recovers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dnsfailover.health.quorum import Quorum, needed, verdict
from dnsfailover.model import HealthChange, Observation, State

log = logging.getLogger("dnsfailover.health")

STALE_INTERVALS = 3
ISOLATED_DOWN = 0.9  # a region seeing at least this share DOWN ...
OTHERS_DOWN = 0.5  # ... while the other regions together see less than this share DOWN
ISOLATION_MIN_TARGETS = 2  # with fewer targets, "everything down" is just an outage


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """How one target turns results into a state."""

    rise: int
    fall: int
    interval: float


@dataclass(frozen=True, slots=True)
class Streak:
    """The current run of identical probe results of one target in this node's region: what
    "12 consecutive failures, failing since 03:01:12" is made of, read live (the reason of a
    state is the one it had when it changed).

    `count` is None for a run of successes past `rise`: a probe process does not send those
    (`checks.forward`), so their number is not known here; the run's start is."""

    ok: bool
    count: int | None
    since: float  # the first result of the run
    last_at: float  # the latest result

    def text(self, detail: str = "", latency: float | None = None) -> str:
        return streak_text(self.ok, self.count, detail, latency)


@dataclass(frozen=True, slots=True)
class RegionHealth:
    """The state of one target as seen from one region."""

    state: State
    since: float
    reason: str
    last_at: float = 0.0
    fresh: bool = False
    latency: float | None = None  # of the last probe (this node's region only)
    detail: str = ""
    stale: bool = False
    isolated: bool = False
    streak: Streak | None = None  # probed here since this process started; else None


@dataclass(slots=True)
class _Counter:
    state: State = State.UNKNOWN
    since: float = 0.0
    reason: str = "no result yet"
    ok_run: int = 0
    fail_run: int = 0
    last_at: float = 0.0
    fresh: bool = False  # has seen a result in this process (restored state is not fresh)
    latency: float | None = None
    detail: str = ""
    run_since: float = 0.0  # the first result of the current ok_run / fail_run


@dataclass(slots=True)
class _Target:
    rules: Hysteresis
    regions: dict[str, _Counter] = field(default_factory=dict)


@dataclass(slots=True)
class _Vote:
    target: str
    quorum: Quorum
    voted: State = State.UNKNOWN
    since: float = 0.0
    reason: str = "no result yet"


class HealthTracker:
    """Turns observations into per-region and voted states.

    :param rules: hysteresis per target key.
    :param votes: health key → (target key, quorum rule); by default every target is voted
        by majority under its own key.
    Not thread-safe: feed it from one event loop.
    """

    def __init__(
        self,
        rules: Mapping[str, Hysteresis],
        votes: Mapping[str, tuple[str, Quorum]] | None = None,
    ) -> None:
        self._targets: dict[str, _Target] = {}
        self._votes: dict[str, _Vote] = {}
        self._by_target: dict[str, list[str]] = {}
        self._seen: dict[str, float] = {}  # region → newest probe time reported by its node
        self._isolated: frozenset[str] = frozenset()
        # Per region: targets with a known state, and how many of them are DOWN.  Kept up to
        # date on every change so that isolation costs O(regions), not a scan of every target
        # (a regional outage flips thousands of targets at once).
        self._known: dict[str, int] = {}
        self._down: dict[str, int] = {}
        self._probed: dict[str, float] = {}  # region → newest observation made here
        self._horizon = 0.0  # STALE_INTERVALS x the longest interval: a region's freshness
        self._span = 0.0  # STALE_INTERVALS x the shortest: a region seen within it is fresh
        self._left_out = True  # a vote left a stale region out since the last re-count
        self._unprobed: dict[str, tuple[float, str]] = {}  # target → (at, detail) of the
        # latest probe that could not run, until a probe of it runs again
        self.update_rules(rules, votes)

    def update_rules(
        self,
        rules: Mapping[str, Hysteresis],
        votes: Mapping[str, tuple[str, Quorum]] | None = None,
    ) -> None:
        """Follow a config reload: keep what is known of unchanged targets, drop the rest."""
        kept: dict[str, _Target] = {}
        for key, r in rules.items():
            t = self._targets.get(key)
            if t is None:
                t = _Target(rules=r)
            t.rules = r
            kept[key] = t
        self._targets = kept
        self._unprobed = {k: v for k, v in self._unprobed.items() if k in kept}
        wanted = votes if votes is not None else {key: (key, "majority") for key in rules}
        fresh: dict[str, _Vote] = {}
        for hkey, (target, quorum) in wanted.items():
            if target not in kept:
                continue
            old = self._votes.get(hkey)
            if old is not None and old.target == target and old.quorum == quorum:
                fresh[hkey] = old
            else:
                vote = _Vote(target, quorum)
                if old is not None and old.target == target:
                    vote.voted, vote.since, vote.reason = old.voted, old.since, old.reason
                fresh[hkey] = vote
        self._votes = fresh
        self._by_target = {}
        for hkey, v in fresh.items():
            self._by_target.setdefault(v.target, []).append(hkey)
        self._horizon = STALE_INTERVALS * max((r.interval for r in rules.values()), default=1.0)
        self._span = STALE_INTERVALS * min((r.interval for r in rules.values()), default=1.0)
        self._left_out = True
        self._known, self._down = {}, {}
        for t in kept.values():
            for region, c in t.regions.items():
                self._count(region, State.UNKNOWN, c.state)

    # -- feeding ------------------------------------------------------------------------------

    def restore(self, target: str, region: str, state: State, since: float, reason: str) -> None:
        """Seed a state remembered from before a restart; ignored for unknown targets."""
        t = self._targets.get(target)
        if t is None or state is State.UNKNOWN:
            return
        old = t.regions.get(region)
        self._count(region, old.state if old is not None else State.UNKNOWN, state)
        t.regions[region] = _Counter(state=state, since=since, reason=f"restored: {reason}")
        for hkey in self._by_target.get(target, ()):
            v = self._votes[hkey]
            v.voted, v.since, v.reason = self._vote(v, since)

    def observe(self, obs: Observation) -> list[HealthChange]:
        """Apply one observation of this node's region; return the changes it caused."""
        t = self._targets.get(obs.target)
        if t is None:
            return []
        counter = t.regions.setdefault(obs.region, _Counter())
        counter.latency, counter.detail = obs.latency, obs.detail
        if obs.unknown:  # says nothing about the target: no count, no freshness
            self._unprobed[obs.target] = (obs.at, obs.detail)
            return []
        self._unprobed.pop(obs.target, None)
        if obs.at > self._probed.get(obs.region, 0.0):
            self._probed[obs.region] = obs.at
        changes: list[HealthChange] = []
        new = self._step(counter, t.rules, obs)
        if new is not None:
            old = counter.state
            self._count(obs.region, old, new)
            counter.state, counter.since, counter.reason = new, obs.at, _reason(obs, counter)
            changes.append(HealthChange(obs.target, obs.region, old, new, obs.at, counter.reason))
            changes.extend(self._after_region_change(obs.target, obs.at))
        else:
            changes.extend(self._revote_target(obs.target, obs.at))
        return changes

    def set_remote(
        self, target: str, region: str, state: State, since: float, reason: str, now: float
    ) -> list[HealthChange]:
        """Another node's hysteresis-filtered state of `target` in `region`."""
        t = self._targets.get(target)
        if t is None:
            return []
        counter = t.regions.setdefault(region, _Counter())
        counter.fresh = True
        counter.last_at = max(counter.last_at, self._seen.get(region, now))
        if counter.state is state and counter.since == since:
            return []
        old = counter.state
        self._count(region, old, state)
        counter.state, counter.since, counter.reason = state, since, reason
        changes = []
        if old is not state:
            changes.append(HealthChange(target, region, old, state, now, reason))
        changes.extend(self._after_region_change(target, now))
        return changes

    def seen(self, region: str, at: float) -> None:
        """A node of `region` reported it was probing at `at`: its results stay fresh."""
        if at > self._seen.get(region, 0.0):
            self._seen[region] = at

    def forget(self, region: str, now: float) -> list[HealthChange]:
        """Drop everything known from `region` (its node left); re-vote what it touched."""
        self._seen.pop(region, None)
        self._probed.pop(region, None)
        self._known.pop(region, None)
        self._down.pop(region, None)
        touched = [key for key, t in self._targets.items() if t.regions.pop(region, None)]
        changes: list[HealthChange] = []
        changes.extend(self._update_isolation(now))
        for key in touched:
            changes.extend(self._revote_target(key, now))
        return changes

    def revote(self, now: float) -> list[HealthChange]:
        """Re-count every vote: regions that went stale since the last result drop out.

        When every voting region's node reported probing within the shortest staleness span,
        and no vote since the last re-count left a stale region out, each vote already counts
        exactly the regions a re-count would: nothing to do (1,000 targets re-counted four
        times a second were a node's largest steady cost in a cluster)."""
        changes = list(self._update_isolation(now))
        if not changes and not self._left_out and self._all_fresh(now):
            return changes
        self._left_out = False
        for key in self._targets:
            changes.extend(self._revote_target(key, now))
        return changes

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _step(c: _Counter, rules: Hysteresis, obs: Observation) -> State | None:
        first = not c.fresh
        c.fresh = True
        c.last_at = obs.at
        if obs.ok:
            if not c.ok_run:
                c.run_since = obs.at
            c.ok_run, c.fail_run = c.ok_run + 1, 0
        else:
            if not c.fail_run:
                c.run_since = obs.at
            c.ok_run, c.fail_run = 0, c.fail_run + 1
        if first:
            new = State.UP if obs.ok else State.DOWN
            return new if new is not c.state else None
        if c.state is not State.UP and c.ok_run >= rules.rise:
            return State.UP
        if c.state is not State.DOWN and c.fail_run >= rules.fall:
            return State.DOWN
        return None

    def _after_region_change(self, target: str, now: float) -> list[HealthChange]:
        changes = self._update_isolation(now)
        if changes:
            return changes  # every vote was re-counted, this target's included
        return self._revote_target(target, now)

    def _revote_target(self, target: str, now: float) -> list[HealthChange]:
        changes: list[HealthChange] = []
        for hkey in self._by_target.get(target, ()):
            v = self._votes[hkey]
            voted, since, reason = self._vote(v, now)
            if voted is not v.voted:
                changes.append(HealthChange(hkey, None, v.voted, voted, now, reason))
                v.voted, v.since, v.reason = voted, since, reason
        return changes

    def _fresh(self, region: str, c: _Counter, rules: Hysteresis, now: float) -> bool:
        if not c.fresh:
            return True  # restored state votes until a fresh result replaces it
        last = max(c.last_at, self._seen.get(region, 0.0))
        if now - last <= STALE_INTERVALS * rules.interval:
            return True
        self._left_out = True  # (a status page asking sets it too: one re-count more, harmless)
        return False

    def _all_fresh(self, now: float) -> bool:
        """Whether every region with a known state was seen probing within `_span`."""
        seen, span = self._seen, self._span
        return all(now - seen.get(r, 0.0) <= span for r, n in self._known.items() if n > 0)

    def _vote(self, v: _Vote, now: float) -> tuple[State, float, str]:
        t = self._targets[v.target]
        voters = {
            region: c
            for region, c in t.regions.items()
            if c.state is not State.UNKNOWN
            and region not in self._isolated
            and self._fresh(region, c, t.rules, now)
        }
        if not voters:
            return v.voted, v.since, v.reason
        if len(voters) == 1 and len(t.regions) == 1:
            c = next(iter(voters.values()))
            return c.state, c.since, c.reason  # a single region: its verdict as it is
        ups = sorted(r for r, c in voters.items() if c.state is State.UP)
        downs = sorted(r for r, c in voters.items() if c.state is State.DOWN)
        result = verdict(v.quorum, len(ups), len(voters))
        need = needed(v.quorum, len(voters))
        rule = f"quorum {v.quorum}: {need} of {len(voters)} fresh regions"
        excluded = sorted(set(t.regions) - set(voters))
        tail = f"; not voting: {', '.join(excluded)}" if excluded else ""
        if result is None:
            return v.voted, v.since, v.reason
        if result is State.UP:
            return (
                State.UP,
                now,
                f"up in {len(ups)}/{len(voters)} regions ({', '.join(ups)}); {rule}{tail}",
            )
        return (
            State.DOWN,
            now,
            f"down in {len(downs)}/{len(voters)} regions ({', '.join(downs)}); {rule}{tail}",
        )

    def _update_isolation(self, now: float) -> list[HealthChange]:
        """Re-flag isolated regions; when the set changes, re-count every vote."""
        isolated = self._compute_isolated(now)
        if isolated == self._isolated:
            return []
        for region in sorted(isolated - self._isolated):
            log.warning(
                "health: region %s isolated: it sees nearly every target down while the other "
                "regions do not; its results are not counted until it recovers",
                region,
            )
        for region in sorted(self._isolated - isolated):
            log.warning("health: region %s no longer isolated; its results count again", region)
        self._isolated = isolated
        changes: list[HealthChange] = []
        for target in self._targets:
            changes.extend(self._revote_target(target, now))
        return changes

    def _region_fresh(self, region: str, now: float) -> bool:
        last = max(self._seen.get(region, 0.0), self._probed.get(region, 0.0))
        return last == 0.0 or now - last <= self._horizon  # 0: restored, not yet heard from

    def _count(self, region: str, old: State, new: State) -> None:
        if old is not State.UNKNOWN:
            self._known[region] -= 1
            if old is State.DOWN:
                self._down[region] -= 1
        if new is not State.UNKNOWN:
            self._known[region] = self._known.get(region, 0) + 1
            if new is State.DOWN:
                self._down[region] = self._down.get(region, 0) + 1

    def _compute_isolated(self, now: float) -> frozenset[str]:
        """Regions that see at least ISOLATED_DOWN of their targets DOWN while the other
        fresh regions together see fewer than OTHERS_DOWN of theirs DOWN."""
        fresh = [r for r, n in self._known.items() if n > 0 and self._region_fresh(r, now)]
        if len(fresh) < 2:
            return frozenset()
        flagged = set()
        for region in fresh:
            n, down = self._known[region], self._down.get(region, 0)
            if n < ISOLATION_MIN_TARGETS or down < ISOLATED_DOWN * n:
                continue
            others_known = sum(self._known[r] for r in fresh if r != region)
            others_down = sum(self._down.get(r, 0) for r in fresh if r != region)
            if others_known and others_down < OTHERS_DOWN * others_known:
                flagged.add(region)
        return frozenset(flagged)

    # -- reading ------------------------------------------------------------------------------

    def state(self, key: str) -> State:
        v = self._votes.get(key)
        return v.voted if v is not None else State.UNKNOWN

    def states(self) -> dict[str, State]:
        """The voted state of every health key."""
        return {key: v.voted for key, v in self._votes.items()}

    def since(self, key: str) -> float | None:
        """When the voted state of `key` last changed (None before any verdict)."""
        v = self._votes.get(key)
        return v.since if v is not None and v.voted is not State.UNKNOWN else None

    def reason(self, key: str) -> str:
        v = self._votes.get(key)
        return v.reason if v is not None else "unknown health key"

    def quorum(self, key: str) -> Quorum | None:
        v = self._votes.get(key)
        return v.quorum if v is not None else None

    def isolated(self) -> frozenset[str]:
        return self._isolated

    def regions(self, target: str, now: float | None = None) -> dict[str, RegionHealth]:
        t = self._targets.get(target)
        if t is None:
            return {}
        return {
            region: RegionHealth(
                c.state,
                c.since,
                c.reason,
                max(c.last_at, self._seen.get(region, 0.0)),
                c.fresh,
                c.latency,
                c.detail,
                stale=now is not None and not self._fresh(region, c, t.rules, now),
                isolated=region in self._isolated,
                streak=_streak(c, t.rules.rise),
            )
            for region, c in t.regions.items()
        }

    def region_states(self, region: str) -> dict[str, tuple[State, float, str]]:
        """What `region` sees of every target: (state, since, reason)."""
        return {
            key: (c.state, c.since, c.reason)
            for key, t in self._targets.items()
            if (c := t.regions.get(region)) is not None and c.state is not State.UNKNOWN
        }

    def keys(self) -> Iterable[str]:
        return self._targets.keys()

    def unprobed(self) -> dict[str, tuple[float, str]]:
        """Targets whose latest probe could not run: (when, why)."""
        return dict(self._unprobed)


def _streak(c: _Counter, rise: int) -> Streak | None:
    if c.ok_run:
        return Streak(True, c.ok_run if c.ok_run < rise else None, c.run_since, c.last_at)
    if c.fail_run:
        return Streak(False, c.fail_run, c.run_since, c.last_at)
    return None


def streak_text(ok: bool, count: int | None, detail: str = "", latency: float | None = None) -> str:
    """`12 consecutive failures (connection refused, 3ms)`; `passing (HTTP 200, 2ms)` for
    a run of successes of unknown length (see `Streak`)."""
    extra = [x for x in (detail, f"{latency * 1000:.0f}ms" if latency is not None else "") if x]
    tail = f" ({', '.join(extra)})" if extra else ""
    if count is None:
        return "passing" + tail
    what = ("success" if count == 1 else "successes") if ok else "failure" + "s" * (count != 1)
    return f"{count} consecutive {what}{tail}"


def _reason(obs: Observation, c: _Counter) -> str:
    run = c.ok_run if obs.ok else c.fail_run
    return streak_text(obs.ok, run, obs.detail, obs.latency)


def log_change(change: HealthChange) -> None:
    """Health transitions are what operators grep for: INFO, with the reason."""
    where = f"region={change.region}" if change.region else "voted"
    check, _, endpoint = change.target.partition("@")
    endpoint, _, quorum = endpoint.partition("#quorum=")
    data = {
        "check": check,
        "endpoint": endpoint,
        "quorum": quorum or None,
        "region": change.region,  # None: the voted state
        "old": change.old.value,
        "new": change.new.value,
        "reason": change.reason,
    }
    log.info(
        "health: %s %s %s -> %s: %s",
        change.target,
        where,
        change.old.value,
        change.new.value,
        change.reason,
        extra={"fields": data},  # logs.fields (health/ does not import the logs module)
    )
