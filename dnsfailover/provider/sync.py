"""Keeps one zone at an external provider in step with the engine's latest decision.

One worker per zone, so there is never more than one change in flight per zone.  It holds
only the *latest* desired state: transitions that arrive while a change is in flight are
coalesced into the next plan, and after a failure it retries the latest state, never a
backlog of stale ones.  DNS serving and probing never wait on it.

It remembers what the provider held and what it wrote since (`_Known`), so a plan re-reads
only the keys whose desired sets changed (`populate_keys`: a few calls, not a listing of a
zone of thousands of sets); the whole zone is read again after `REFRESH` seconds, after a
failed or refused apply, and on the first plan.

Refusal is per key (`Plan.partition`): every safe change is applied, and the keys that are
not (a foreign or conflicting record set, a name that would lose every answer) are *held*:
reported once per new set of held keys (an ERROR log line, a `refused` event: history,
metric and notification), shown in `SyncStatus.held`, and re-read on a timer with backoff
while any remain, so a conflict removed by hand is resolved without waiting for a health
change.  A reload (`read_all`) and an operator's `resync` re-plan at once.

Steered names (`ZoneContent.steered`) go with the desired sets: a provider with location
support (`BaseProvider.GEO_PLACES`) gets a record set per place for each (`location_sets`), the
others keep publishing the default group's answer, which is the name's plain set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

from dnsfailover.backoff import Backoff
from dnsfailover.errors import DnsFailoverError
from dnsfailover.model import RecordSet, SteeredSet
from dnsfailover.provider.contract import BaseProvider
from dnsfailover.provider.plan import (
    GeoKey,
    Key,
    Plan,
    Populated,
    Safety,
    UnsafePlan,
    describe_key,
    diff,
    summarize,
)
from dnsfailover.tasks import cancel_and_wait

log = logging.getLogger("dnsfailover.sync")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
REFRESH = 300.0  # seconds a full read of the zone is trusted (what others changed shows then)
#: keys (touched or held) re-read name by name; more are re-read by one full read: a
#: regional outage that flips every steered name costs a few pages, not two calls a name
#: against the API's rate limit
HELD_BY_NAME = 20


class Fenced(DnsFailoverError):
    """The write was stopped because this node no longer holds the cluster's leadership."""


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """Reported to the service for the history: kind is applied, refused or failed."""

    zone: str
    kind: str  # applied | refused (the plan, or some keys of it) | failed | fenced
    message: str
    at: float
    seconds: float | None = None  # how long the provider call took (applied / failed)


@dataclass(slots=True)
class _Known:
    """What the provider holds for the keys that matter, as read and as written since."""

    records: dict[Key, RecordSet]
    foreign: set[Key]
    owned: set[Key]
    read_at: float  # monotonic time of the last full read
    conflicts: dict[Key, str]
    placed: dict[GeoKey, RecordSet] = field(default_factory=dict)

    @classmethod
    def of(cls, p: Populated, at: float) -> _Known:
        records = {(r.name, r.rtype): r for r in p.records}
        return cls(records, set(p.foreign), set(p.owned), at, dict(p.conflicts), dict(p.placed))

    def merge(self, part: Populated, keys: Collection[Key]) -> None:
        """Take a fresh read of `keys` (and only of them)."""
        asked = set(keys)
        for key in asked:
            self.records.pop(key, None)
        self.foreign -= asked
        self.owned -= asked
        for key in asked:
            self.conflicts.pop(key, None)
        for geo_key in [k for k in self.placed if k[:2] in asked]:
            del self.placed[geo_key]
        self.placed.update((k, r) for k, r in part.placed.items() if k[:2] in asked)
        self.records.update((k, r) for r in part.records if (k := (r.name, r.rtype)) in asked)
        self.foreign |= part.foreign & asked
        self.owned |= part.owned & asked
        self.conflicts.update((k, v) for k, v in part.conflicts.items() if k in asked)

    def wrote(self, plan: Plan) -> None:
        """A plan applied: what it created and updated is ours now, what it deleted gone
        (a key stays ours while any of its sets, plain or placed, is left)."""
        keys = {change.key for change in plan.changes}
        for change in plan.changes:
            if change.place:
                if change.new is None:
                    self.placed.pop(change.geo_key, None)
                else:
                    self.placed[change.geo_key] = change.new
            elif change.new is None:
                self.records.pop(change.key, None)
            else:
                self.records[change.key] = change.new
        if not keys:
            return
        left = {k for k in keys if k in self.records}
        left |= {k[:2] for k in self.placed if k[:2] in keys}
        for key in keys:
            if key in left:
                self.owned.add(key)
                self.foreign.discard(key)
                self.conflicts.pop(key, None)
            else:
                self.owned.discard(key)

    def populated(self) -> Populated:
        return Populated(
            tuple(self.records.values()),
            frozenset(self.foreign),
            frozenset(self.owned),
            dict(self.conflicts),
            dict(self.placed),
        )


#: what is desired at one key: its plain set, or its sets by place
_Target = RecordSet | tuple[tuple[str, RecordSet], ...]


def _targets(
    desired: tuple[RecordSet, ...], placed: Mapping[GeoKey, RecordSet]
) -> dict[Key, _Target]:
    out: dict[Key, _Target] = {(r.name, r.rtype): r for r in desired}
    by_key: dict[Key, list[tuple[str, RecordSet]]] = {}
    for (name, rtype, place), rs in sorted(placed.items()):
        by_key.setdefault((name, rtype), []).append((place, rs))
    out.update((k, tuple(v)) for k, v in by_key.items())
    return out


@dataclass(slots=True)
class SyncStatus:
    in_sync: bool = False
    last_error: str = ""
    last_applied_at: float = 0.0
    applies: int = 0
    failures: int = 0
    calls: int = 0
    #: keys ("NAME TYPE") held back from the last plan, with why and what would resolve it
    held: dict[str, str] = field(default_factory=dict)
    #: plans made since start (re-checks of held keys and resyncs included)
    plans: int = 0


class ZoneSync:
    """Pushes the latest desired record sets of one zone to its provider."""

    def __init__(
        self,
        provider: BaseProvider,
        safety: Safety,
        *,
        force: bool = False,
        on_event: Callable[[SyncEvent], None] | None = None,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        fence: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.provider = provider
        # In a cluster, asked right before each write: False means this node is no longer
        # the leader, and the write must not happen (a paused old leader never writes).
        self._fence = fence
        self.safety = safety
        self.force = force
        self.status = SyncStatus()
        self._on_event = on_event
        self._desired: tuple[RecordSet, ...] | None = None
        self._steered: Mapping[Key, SteeredSet] = {}
        self._version = 0
        self._done_version = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._backoff = Backoff(backoff_first, backoff_max)
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._failed_seconds: float | None = None
        self._known: _Known | None = None  # None: read the whole zone next time
        self._read_all = False  # read the whole zone next time (a reload asked)
        self._planned: dict[Key, _Target] = {}  # the desired sets `_known` was read for
        self.reads = 0  # plans made from a full read of the zone (for tests and status)
        self._held: dict[Key, str] = {}  # keys the last plan held back, re-read every plan
        self._told: frozenset[tuple[Key, str]] = frozenset()  # the held keys last reported
        self._recheck = False  # re-plan the latest state although it was planned already
        self._waiters: list[asyncio.Future[None]] = []  # resyncs waiting for the next round
        self._kick = asyncio.Event()  # a reload or resync cuts a failure's backoff short

    @property
    def zone(self) -> str:
        return self.provider.zone

    def submit(
        self, desired: tuple[RecordSet, ...], steered: Mapping[Key, SteeredSet] | None = None
    ) -> None:
        """Make `desired` (and these steered names' per-location answers) the state to
        converge to, replacing any not yet applied."""
        self._desired = desired
        self._steered = steered or {}
        self._version += 1
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dnsfailover-sync-{self.zone}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        for waiter in self._waiters:
            waiter.cancel()
        await self.provider.close()

    async def wait_idle(self) -> None:
        """Return once the latest submitted state is applied (or refused)."""
        await self._idle.wait()

    def _event(self, kind: str, message: str, seconds: float | None = None) -> None:
        if self._on_event is not None:
            self._on_event(SyncEvent(self.zone, kind, message, time.time(), seconds))

    @staticmethod
    def _round_done(waiting: list[asyncio.Future[None]]) -> None:
        """Tell the resyncs that asked before this round began that it is over."""
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    async def _next(self, recheck_in: float | None) -> None:
        """Wait for a new state, a reload or a resync, or until it is time to re-check."""
        if recheck_in is None:
            await self._wake.wait()
            return
        try:
            await asyncio.wait_for(self._wake.wait(), recheck_in)
        except TimeoutError:
            self._recheck = True

    async def _run(self) -> None:
        failures = 0  # in a row
        rechecks = 0  # re-plans in a row that left the zone out of sync
        recheck_in: float | None = None
        while True:
            await self._next(recheck_in)
            self._wake.clear()
            self._kick.clear()  # a reload or resync from now on cuts a failure's backoff
            waiting, self._waiters = self._waiters, []
            version, desired, steered = self._version, self._desired, self._steered
            if desired is None or (version == self._done_version and not self._recheck):
                self._round_done(waiting)
                continue
            self._recheck = False
            try:
                await self.converge(desired, steered)
            except Fenced as e:
                log.warning("apply: zone=%s not written: %s", self.zone, e)
                self._event("fenced", str(e))
                recheck_in = None
            except UnsafePlan as e:
                # Waiting alone will not make it safe, but what is there may change (by
                # hand, or a reload): re-check with backoff; report once per refusal.
                self.status.in_sync = False
                if self.status.last_error != str(e):
                    log.error("apply: %s", e)
                    self._event("refused", str(e))
                self.status.last_error = str(e)
                recheck_in = self._backoff.delay(rechecks)
                rechecks += 1
            except Exception as e:  # any provider failure is retried
                delay = self._backoff.delay(failures)
                failures += 1
                self.status.in_sync = False
                self.status.failures += 1
                self.status.last_error = f"{type(e).__name__}: {e}"
                log.warning(
                    "apply: zone=%s failed (%s); retrying the latest state in %.1fs",
                    self.zone,
                    self.status.last_error,
                    delay,
                )
                self._event("failed", self.status.last_error, self._failed_seconds)
                self._failed_seconds = None
                self._round_done(waiting)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), delay)
                self._recheck = True
                self._wake.set()
                continue
            else:
                failures = 0
                if self._held:
                    recheck_in = self._backoff.delay(rechecks)
                    rechecks += 1
                else:
                    recheck_in, rechecks = None, 0
            self._done_version = version
            self._round_done(waiting)
            if self._version == version:
                self._idle.set()

    async def plan(
        self, desired: tuple[RecordSet, ...], steered: Mapping[Key, SteeredSet] | None = None
    ) -> Plan:
        """Read what the provider holds (all of it, or the keys whose desired sets changed)
        and diff it with `desired` and the `steered` names' location sets."""
        placed = self.provider.location_sets((steered or {}).values())
        if not self._started:
            await self.provider.start()
            self._started = True
        wanted = _targets(desired, placed)
        known = self._known
        planned = self._planned
        # held keys are read again every time: what was in the way may be gone (many keys,
        # touched or held: in one listing of the zone, not name by name against the API's
        # rate limit)
        held = [k for k in self._held if k in wanted and planned.get(k) == wanted[k]]
        touched = [k for k, r in wanted.items() if planned.get(k) != r]
        touched += [k for k in planned if k not in wanted]
        touched += held
        if (
            known is None
            or self._read_all
            or len(touched) > HELD_BY_NAME
            or time.monotonic() - known.read_at > REFRESH
        ):
            self._read_all = False
            populated = await self.provider.populate(list(wanted))
            known = self._known = _Known.of(populated, time.monotonic())
            self.reads += 1
        elif touched:
            known.merge(await self.provider.populate_keys(touched), touched)
        self._planned = wanted
        self.status.plans += 1
        return diff(self.zone, known.populated(), desired, placed=placed)

    def read_all(self) -> None:
        """Read the whole zone and plan again now (a reload: hand edits, new adopt rules)."""
        self._read_all = True
        self._recheck = True
        self._wake.set()
        self._kick.set()

    async def resync(self) -> SyncStatus:
        """Read the whole zone again, plan and apply the latest state now (an operator's
        `dnsfailover sync`); the status once that round is over."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.read_all()
        await waiter
        return self.status

    def _hold(self, held: dict[Key, str], applied: int) -> None:
        """Show the keys held back; report them when they are not the ones last reported."""
        self._held = held
        self.status.held = {describe_key(k): why for k, why in sorted(held.items())}
        told = frozenset(held.items())
        if not held:
            self._told = told
            return
        self.status.in_sync = False
        message = (
            f"{self.zone}: {len(held)} record set(s) held back, {applied} other change(s) "
            f"applied: {summarize(list(self.status.held.values()))}"
        )
        self.status.last_error = message
        if told != self._told:
            self._told = told
            log.error("apply: %s", message)
            self._event("refused", message)

    async def converge(
        self, desired: tuple[RecordSet, ...], steered: Mapping[Key, SteeredSet] | None = None
    ) -> Plan:
        """One populate → plan → per-key safety → apply round; the plan applied.

        Raises when the provider failed, or the plan as a whole was refused."""
        plan = await self.plan(desired, steered)
        plan, held = plan.partition(self.safety, force=self.force)
        if not plan:
            self._hold(held, 0)
            if not held:
                self.status.in_sync = True
                self.status.last_error = ""
            return plan
        known, self._known = self._known, None  # until the apply is known to have worked
        if self._fence is not None and not await self._fence():
            raise Fenced("this node is no longer the cluster's leader")
        started = time.monotonic()
        try:
            result = await self.provider.apply(plan)
        except Exception:
            self._failed_seconds = time.monotonic() - started
            raise
        if known is not None and result.confirmed:
            known.wrote(plan)
            self._known = known
        self.status.in_sync = result.confirmed
        self.status.last_error = ""
        self.status.applies += 1
        self.status.calls += result.calls
        self.status.last_applied_at = time.time()
        log.info(
            "apply: %s in %.2fs (%d calls, confirmed=%s)",
            plan.summary(),
            time.monotonic() - started,
            result.calls,
            result.confirmed,
        )
        self._event(
            "applied",
            f"{plan.summary()}: "
            + "; ".join(c.describe() for c in plan.changes[:20])
            + (" …" if len(plan.changes) > 20 else ""),
            time.monotonic() - started,
        )
        self._hold(held, len(plan.changes))
        return plan
