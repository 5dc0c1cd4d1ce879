"""The probe scheduler: every target probed once per check interval, spread over it.

One APScheduler interval job per check (and interval) ticks *rounds* and probes nothing
itself.  In a round each target starts at its *phase* (a hash of its key, so it survives
reloads and restarts) times the interval: 10,000 targets at 1 s start ~100 µs apart, not at
once.  A round is walked by one self-re-arming timer per check that launches every target
whose time has come.  Measured on the benchmark machine, an APScheduler job per target costs
~50 µs of bookkeeping per run (more than the TCP probe itself) and one `call_at` per target
stalls the loop ~10 ms per 10k at every tick; the walker costs one wake-up per batch
(starts due within 2 ms of each other, or 2 % of the interval, share one).
Each round's start gets a jitter of up to 2 % of the interval (at most 250 ms).

A FIFO gate caps probes in flight.  Probes enforce their own timeouts; a target whose last
probe is still running (or waiting for a slot) skips its turn (an "overrun"), and a probe
`_GRACE` seconds past its timeout is cancelled, so a broken probe can neither pile up nor
hold a slot forever.  Start delays (actual - planned) go to a ring buffer, `drift`.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import hashlib
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from dnsfailover.checks import Probe, make_probe, make_session
from dnsfailover.checks.details import shorten
from dnsfailover.config.checks import CheckConfig
from dnsfailover.model import Observation, ProbeResult, Target

logger = logging.getLogger("dnsfailover.scheduler")

Targets = Mapping[str, tuple[Target, CheckConfig]]

DRIFT_SAMPLES = 65_536
_JITTER_FRACTION = 0.02
_MAX_JITTER = 0.25
_GRACE = 1.0
_EPSILON = 1e-6
_GRANULARITY = 0.002  # seconds: starts due this close together share a wake-up (at most)


def phase(key: str) -> float:
    """The target's fixed position in [0, 1) within its check's interval."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _job_id(entry: _Entry) -> str:
    return f"probe-round:{entry.target.check}:{entry.check.interval:g}"


class Prober(Protocol):
    """What the node drives: a `ProbeScheduler`, or one in its own process (`process.py`)."""

    async def run_round(self, deadline: float, only: Collection[str] | None = None) -> object: ...

    def start(self) -> None: ...

    async def stage_update(self, targets: Targets) -> Any: ...

    def commit(self, staged: Any) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StagedUpdate:
    """A reload's change to the probes, built by `ProbeScheduler.stage` and not yet applied:
    targets to stop, targets to start (probes built), and new rounds with their triggers."""

    removed: list[_Entry]
    added: list[_Entry]
    rounds: dict[str, tuple[_Round, IntervalTrigger | None]]


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """Counters since start.  `finished` includes cancelled probes; `overruns` are turns
    skipped because the target's previous probe had not finished (or started) yet."""

    started: int
    finished: int
    in_flight: int
    overruns: int
    late_rounds: int


class _Gate:
    """At most `limit` probes run at once; the others wait in FIFO order, O(1) each way.

    Not `asyncio.Semaphore`: in 3.11 its `acquire` scans every waiter and `release` rescans
    the woken ones, quadratic with thousands waiting, just when the prober is overloaded
    (profiled: 17M `Future.done` calls in 10 s)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.running < self.limit:  # nobody waits unless every slot is taken
            self.running += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        try:
            await fut  # a finishing probe handed its slot over; `running` is unchanged
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot, then cancelled
                self.release()
            raise

    def release(self) -> None:
        waiting = self._waiting
        while waiting:
            fut = waiting.popleft()
            if not fut.done():  # skip waiters cancelled while queued
                fut.set_result(None)
                return
        self.running -= 1


class _Entry:
    __slots__ = ("alive", "check", "key", "phase", "probe", "started", "target", "task")

    def __init__(self, key: str, target: Target, check: CheckConfig) -> None:
        self.key = key
        self.target = target
        self.check = check
        self.phase = phase(key)
        self.probe: Probe | None = None
        self.task: asyncio.Task[Observation] | None = None
        self.started = 0.0
        self.alive = True


class _Round:
    """The targets of one check: rounds begin on ticks, targets start at their offsets."""

    def __init__(
        self, job_id: str, interval: float, launch: Callable[[_Entry, float], None]
    ) -> None:
        self.job_id = job_id
        self.interval = interval
        self.jitter = min(interval * _JITTER_FRACTION, _MAX_JITTER)
        self.span = interval - self.jitter  # offsets + jitter stay inside the interval
        self.lead = min(interval * 0.1, 0.1)  # ticks come this early, so no start is late
        # One wake-up launches every start due within this much: 1,000 targets every 100 ms
        # are 500 wake-ups a second, not 10,000 (a timer each cost ~20 % of a core).
        self.granularity = min(interval / 50, _GRANULARITY)
        self._launch = launch
        self.entries: list[_Entry] = []
        self.offsets: list[float] = []
        self.base: float | None = None  # start of the round being walked, None when idle
        self.index = 0  # next entry to launch in that round
        self.queued: float | None = None  # the next round's start, when a tick came early
        self.last_start: float | None = None
        self.late_rounds = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, entry: _Entry) -> None:
        offset = entry.phase * self.span
        pos = bisect.bisect_right(self.offsets, offset)
        self.entries.insert(pos, entry)
        self.offsets.insert(pos, offset)
        if self.base is not None:
            if pos < self.index:  # its time in this round has passed: next round
                self.index += 1
            else:
                self._arm()

    def remove(self, entry: _Entry) -> None:
        pos = bisect.bisect_left(self.offsets, entry.phase * self.span)
        while self.entries[pos] is not entry:
            pos += 1
        del self.entries[pos]
        del self.offsets[pos]
        if self.base is not None:
            if pos < self.index:
                self.index -= 1
            self._arm()

    def tick(self, now: float) -> None:
        """Begin (or queue) the round that starts `lead` seconds from now."""
        start = now + self.lead
        if self.last_start is not None and start < self.last_start + self.interval / 2:
            return  # a duplicate or early tick: that round is already set
        self.last_start = start
        if self.base is None:
            self._begin(start)
            return
        if self.queued is not None:
            self.late_rounds += 1
            logger.warning("round: %s fell a whole round behind; skipping one", self.job_id)
        self.queued = start

    def halt(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.base = self.queued = None

    def _begin(self, start: float) -> None:
        self.base = start + random.uniform(0.0, self.jitter)
        self.index = 0
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.base is None:
            return
        if self.index < len(self.entries):
            loop = asyncio.get_running_loop()
            at = max(self.base + self.offsets[self.index], loop.time() + self.granularity)
            self._timer = loop.call_at(at, self._wake)
            return
        self.base = None  # round done; wait for the next tick or take the queued one
        if self.queued is not None:
            start, self.queued = self.queued, None
            self._begin(start)

    def _wake(self) -> None:
        self._timer = None
        base = self.base
        if base is None:
            return
        due = asyncio.get_running_loop().time() - base + _EPSILON
        entries, offsets, launch = self.entries, self.offsets, self._launch
        index = self.index
        while index < len(entries) and offsets[index] <= due:
            launch(entries[index], base + offsets[index])
            index += 1
        self.index = index
        self._arm()


class ProbeScheduler:
    """Probes every target once per check interval from one region.

    :param targets: `Config.targets()`: target key → (target, its check).
    :param region: the region name stamped on every observation.
    :param on_observation: called on the loop for every finished probe; must not block.
    :param max_in_flight: at most this many probes run at once.
    :param session: the aiohttp session for http(s) probes; one is made (and closed by
        `stop`) when needed and not given.  Give one made by `checks.make_session`, with
        the same `source_address`.
    :param clock: wall clock for `Observation.at` (the probe's start).
    :param source_address: every probe leaves from this local address (the region's
        `source_address`); None lets the kernel choose.
    """

    def __init__(
        self,
        targets: Targets,
        *,
        region: str,
        on_observation: Callable[[Observation], None],
        max_in_flight: int = 1000,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
        source_address: str | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._region = region
        self._source = source_address
        self._on_observation = on_observation
        self._clock = clock
        self._gate = _Gate(max_in_flight)
        self._session = session
        self._owns_session = False
        self._entries: dict[str, _Entry] = {}
        self._rounds: dict[str, _Round] = {}
        self._round_tasks: set[asyncio.Task[Observation]] = set()
        self._drift: collections.deque[float] = collections.deque(maxlen=DRIFT_SAMPLES)
        self._aps: AsyncIOScheduler | None = None
        self._prepared = False
        self._started = self._finished = self._overruns = self._callback_errors = 0
        for key, (target, check) in targets.items():
            self._add(key, target, check)

    # -- public API ------------------------------------------------------------------------

    async def run_round(
        self, deadline: float, only: Collection[str] | None = None
    ) -> list[Observation]:
        """Probe every target (or those keyed in `only`) once now; return what finished
        within `deadline` seconds.

        Used for the cold start, and for the targets a reload adds.  Probes still running at
        the deadline are cancelled and give no observation: no data is not the same as down.
        """
        self._prepare()
        loop = asyncio.get_running_loop()
        entries = [e for key, e in self._entries.items() if only is None or key in only]
        tasks = [loop.create_task(self._probe(e, None)) for e in entries]
        for task in tasks:
            self._round_tasks.add(task)
            task.add_done_callback(self._round_tasks.discard)
        try:
            if tasks:
                _done, pending = await asyncio.wait(tasks, timeout=deadline)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones; matters if we were cancelled
        return [t.result() for t in tasks if not t.cancelled() and t.exception() is None]

    def start(self) -> None:
        """Start periodic probing; call from inside the running loop, once."""
        if self._aps is not None:
            raise RuntimeError("the probe scheduler is already started")
        self._prepare()
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            # A tick is one loop iteration; a busy loop can start the next before the last
            # ended.  `_Round.tick` ignores duplicate and early ticks, and says itself when a
            # round falls behind, so APScheduler need not warn ("skipped: maximum number of
            # running instances") at every busy moment.
            job_defaults={"coalesce": True, "max_instances": 3, "misfire_grace_time": None},
        )
        self._aps.start()
        for rnd in self._rounds.values():
            self._schedule(rnd)
        logger.info(
            "start: targets=%d checks=%d source=%s",
            len(self._entries),
            len(self._rounds),
            self._source or "any",
        )

    def update(self, targets: Targets) -> None:
        """Apply a config reload: removed or changed targets stop now, new ones start at
        their phase, unchanged ones keep their schedule.  All or nothing: see `stage`."""
        self.commit(self.stage(targets))

    def stage(self, targets: Targets) -> StagedUpdate:
        """Build what `targets` needs (entries, probes, rounds and their timers) without
        changing anything: if it raises, the running probes go on exactly as before."""
        removed = [
            entry
            for key, entry in self._entries.items()
            if targets.get(key) != (entry.target, entry.check)
        ]
        gone = {entry.key for entry in removed}
        added: list[_Entry] = []
        rounds: dict[str, tuple[_Round, IntervalTrigger | None]] = {}
        for key, (target, check) in targets.items():
            if key in self._entries and key not in gone:
                continue
            entry = _Entry(key, target, check)
            if self._prepared:
                entry.probe = self._make_probe(check)
            added.append(entry)
            job_id = _job_id(entry)
            if job_id not in self._rounds and job_id not in rounds:
                rnd = _Round(job_id, check.interval, self._launch)
                rounds[job_id] = (rnd, self._trigger(rnd) if self._aps is not None else None)
        return StagedUpdate(removed, added, rounds)

    async def stage_update(self, targets: Targets) -> StagedUpdate:
        """`stage`, as the probe process (`process.ProbeProcess`) offers it."""
        return self.stage(targets)

    def commit(self, staged: StagedUpdate) -> None:
        """Apply what `stage` built (nothing in here can fail on a config's values)."""
        for entry in staged.removed:
            self._remove(entry)
        for entry in staged.added:
            self._insert(entry, staged.rounds)
        for job_id, rnd in list(self._rounds.items()):
            if not rnd.entries:
                rnd.halt()
                del self._rounds[job_id]
                if self._aps is not None and self._aps.get_job(job_id) is not None:
                    self._aps.remove_job(job_id)
        logger.info(
            "update: added=%d removed=%d targets=%d",
            len(staged.added),
            len(staged.removed),
            len(self._entries),
        )

    async def stop(self) -> None:
        """Stop probing: cancel pending and in-flight probes, close what we created."""
        if self._aps is not None and self._aps.running:
            # A tick APScheduler handed to a task that has not run yet (a busy loop runs the
            # wake-up that made it and this stop in one iteration) would be cancelled by the
            # shutdown, and logged as an ERROR with a traceback: no new ticks, let it run.
            self._aps.pause()
            await asyncio.sleep(0)
            self._aps.shutdown(wait=False)
        for rnd in self._rounds.values():
            rnd.halt()
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        tasks.extend(self._round_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs via call_soon_threadsafe
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
            self._owns_session = False
        logger.info("stop: probes=%d overruns=%d", self._finished, self._overruns)

    @property
    def drift(self) -> Sequence[float]:
        """Recent (actual - planned) probe start times in seconds, oldest first."""
        return tuple(self._drift)

    @property
    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            started=self._started,
            finished=self._finished,
            in_flight=self._started - self._finished,
            overruns=self._overruns,
            late_rounds=sum(r.late_rounds for r in self._rounds.values()),
        )

    # -- internals -------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Build the probes; deferred to here because a session needs a running loop."""
        if not self._prepared:
            self._prepared = True
            for entry in self._entries.values():
                entry.probe = self._make_probe(entry.check)

    def _make_probe(self, check: CheckConfig) -> Probe:
        if check.type in ("http", "https") and self._session is None:
            self._session = make_session(source_address=self._source)
            self._owns_session = True
        return make_probe(check, session=self._session, source_address=self._source)

    def _add(self, key: str, target: Target, check: CheckConfig) -> None:
        entry = _Entry(key, target, check)
        if self._prepared:
            entry.probe = self._make_probe(check)
        self._insert(entry, {})

    def _insert(
        self, entry: _Entry, staged: Mapping[str, tuple[_Round, IntervalTrigger | None]]
    ) -> None:
        self._entries[entry.key] = entry
        job_id = _job_id(entry)
        rnd = self._rounds.get(job_id)
        if rnd is None:
            rnd, trigger = staged.get(job_id) or (
                _Round(job_id, entry.check.interval, self._launch),
                None,
            )
            self._rounds[job_id] = rnd
            rnd.add(entry)
            if self._aps is not None:
                self._schedule(rnd, trigger)
        else:
            rnd.add(entry)

    def _remove(self, entry: _Entry) -> None:
        entry.alive = False
        del self._entries[entry.key]
        self._rounds[_job_id(entry)].remove(entry)
        if entry.task is not None:
            entry.task.cancel()

    def _trigger(self, rnd: _Round) -> IntervalTrigger:
        """The APScheduler trigger that ticks `rnd`'s rounds, from one interval from now."""
        first = datetime.now(UTC) + timedelta(seconds=rnd.interval - rnd.lead)
        return IntervalTrigger(seconds=rnd.interval, start_date=first, timezone=UTC)

    def _schedule(self, rnd: _Round, trigger: IntervalTrigger | None = None) -> None:
        """Begin `rnd`'s first round now and let an APScheduler job tick the next ones."""
        assert self._aps is not None
        trigger = trigger or self._trigger(rnd)
        rnd.tick(asyncio.get_running_loop().time() - rnd.lead)
        self._aps.add_job(self._tick, trigger, args=(rnd.job_id,), id=rnd.job_id)

    async def _tick(self, job_id: str) -> None:  # async: APScheduler runs it on the loop
        if (rnd := self._rounds.get(job_id)) is not None:
            rnd.tick(asyncio.get_running_loop().time())

    def _launch(self, entry: _Entry, planned: float) -> None:
        task = entry.task
        if task is not None:
            self._overruns += 1
            loop = asyncio.get_running_loop()
            if entry.started and loop.time() - entry.started > entry.check.timeout + _GRACE:
                logger.warning("probe: %s ignored its timeout; cancelling it", entry.key)
                task.cancel()
            return
        if entry.alive:
            entry.started = 0.0  # set when it gets past the gate
            entry.task = asyncio.get_running_loop().create_task(self._probe(entry, planned))

    async def _probe(self, entry: _Entry, planned: float | None) -> Observation:
        """One probe through the gate; `planned` is None for `run_round` probes."""
        assert entry.probe is not None
        loop = asyncio.get_running_loop()
        try:
            await self._gate.acquire()
            started = loop.time()
            if planned is not None:
                entry.started = started
                self._drift.append(started - planned)
            self._started += 1
            at = self._clock()
            try:
                result = await entry.probe(entry.target)
            except Exception as exc:  # probes must not raise; keep the scheduler alive
                logger.error("probe: %s raised %r", entry.key, exc)
                detail = shorten(f"probe error: {type(exc).__name__}: {exc}")
                result = ProbeResult(ok=False, latency=loop.time() - started, detail=detail)
            finally:
                self._finished += 1
                self._gate.release()
        finally:
            if planned is not None:
                entry.task = None
        obs = Observation(
            entry.key, self._region, result.ok, at, result.latency, result.detail, result.unknown
        )
        try:
            self._on_observation(obs)
        except Exception:
            self._callback_errors += 1
            if self._callback_errors == 1 or self._callback_errors % 10_000 == 0:
                logger.exception("probe: on_observation failed (%d times)", self._callback_errors)
        return obs
