"""The only writer of serials and of what is served.

`Publisher.commit` is the one path from a decision to the answers: it persists the new
serials, the engine state, the health changes and the history first, so a serial never goes
backwards, then makes the decision's zones what the node serves.  Embedded zones go straight
into the DNS server's snapshot (one atomic swap for every changed zone); external zones are
handed to their `ZoneSync`, and only where `writes_external()` says so (a cluster's leader).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from dnsfailover.alerts.notice import Notice
from dnsfailover.api.metrics import Metrics
from dnsfailover.engine.steering import split_group
from dnsfailover.engine.values import Decision, EngineState, Published, Transition
from dnsfailover.errors import StoreError
from dnsfailover.logs import fields
from dnsfailover.model import HealthChange, ZoneContent, answer_text
from dnsfailover.provider.sync import ZoneSync
from dnsfailover.runtime.serials import MAX_AHEAD, next_serial, serial_wait
from dnsfailover.runtime.store import Store
from dnsfailover.runtime.store_thread import AsyncStore
from dnsfailover.runtime.wiring import provider_records, with_serials
from dnsfailover.server.embedded import EmbeddedZones

log = logging.getLogger("dnsfailover.service")

Row = tuple[float, str, str, str]  # (at, kind, subject, message) for the history
RECORD_CHUNK = 1000  # names' state per store transaction behind the answers
LOGGED_TRANSITIONS = 20  # a regional outage changes thousands of names: the rest is summed up
# Serial floors (floors.py) are written once per this many serials of a zone, not per change.
SERIAL_BLOCK = 16
MAX_WAIT = 2.0  # longest a publish waits for the clock to let its serial (see `reserve`)


class Publisher:
    """Serials, the engine state the next decision starts from, and what is served.

    :param embedded: the zones the embedded DNS server serves.
    :param notify: where transition notices go (the node's current alerter).
    :param writes_external: whether this node may write external providers now.
    :param on_decision: called with every committed decision (the demo prints them).
    """

    def __init__(
        self,
        embedded: EmbeddedZones,
        metrics: Metrics,
        *,
        notify: Callable[[Notice], None],
        writes_external: Callable[[], bool],
        on_decision: Callable[[Decision], None] | None = None,
    ) -> None:
        self.embedded = embedded
        self.syncs: dict[str, ZoneSync] = {}  # external zones, by origin
        self.embedded_origins: set[str] = set()
        # embedded zones secondaries transfer: after a lost state file their serials start an
        # hour ahead (serials.next_serial); the others start at the clock
        self.transferred: set[str] = set()
        self.resign: set[str] = set()  # signed zones whose signatures are due (`Resigner`)
        self.published: Published | None = None
        self._metrics = metrics
        self._notify = notify
        self._writes_external = writes_external
        self._on_decision = on_decision
        self._store: AsyncStore | None = None
        self._serials: dict[str, int] = {}
        self._engine = EngineState()
        self._detected_at: float | None = None  # first health change not yet published
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Future[None]] = set()  # state and history being written
        self._floors: dict[str, int] = {}  # serial floors in the store, by origin
        self.store_error: str | None = None  # the last state write failed: why
        self._ahead_warned = False
        self._started: float | None = None  # when the store was opened

    @property
    def serials(self) -> Mapping[str, int]:
        return self._serials

    @property
    def engine(self) -> EngineState:
        """The engine state the next decision starts from."""
        return self._engine

    def restore(
        self,
        store: AsyncStore,
        serials: Mapping[str, int],
        engine: EngineState,
        now: float | None = None,
    ) -> None:
        """Start from what the store kept (cold start), opened at `now`."""
        self._store, self._started = store, now
        self._serials, self._engine = dict(serials), engine
        self._floors = dict(serials)

    def adopt(self, state: EngineState, serials: Mapping[str, int]) -> None:
        """A new cluster leader continues from the last published engine state and serials."""
        self._engine = state
        for origin, serial in serials.items():
            self._serials[origin] = max(serial, self._serials.get(origin, 0))

    def detected(self, at: float) -> None:
        """A health change the next publish reacts to (for the detection → publish metric)."""
        if self._detected_at is None:
            self._detected_at = at

    def changed(self, zones: Iterable[ZoneContent], *, force_all: bool = False) -> list[str]:
        """The origins of `zones` whose answers differ from what is served, and the signed
        zones whose signatures are due (a new serial re-signs what ages)."""
        before = {z.origin: z for z in self.published.zones} if self.published else {}
        due, self.resign = self.resign, set()
        return [
            z.origin
            for z in zones
            if force_all
            or z.origin in due
            or z.origin not in before
            or not z.same_answers(before[z.origin])
        ]

    def next_serials(self, changed: Iterable[str], now: float) -> dict[str, int]:
        return {
            o: next_serial(self._serials.get(o), now, self._started, held=o in self.transferred)
            for o in changed
        }

    async def reserve(self, changed: Sequence[str], clock: Callable[[], float]) -> dict[str, int]:
        """The next serials of `changed`, kept at most MAX_AHEAD seconds ahead of the clock:
        a burst beyond that waits (under a second) for the clock, so a node that lost its
        state file and starts at MAX_AHEAD + 1 past the second it opened its state is above
        every serial it served.  (Such a start waits for the next second itself.)"""
        now = clock()
        serials = self.next_serials(changed, now)
        wait = max((serial_wait(s, now) for s in serials.values()), default=0.0)
        if 0 < wait <= MAX_WAIT:
            await asyncio.sleep(wait)
            serials = self.next_serials(changed, clock())
        elif wait > MAX_WAIT and not self._ahead_warned:
            self._ahead_warned = True  # an older version's serials, or the clock went back
            log.warning(
                "publish: serials run %.0fs ahead of the clock (more than %ds): they are not "
                "throttled, and would go backwards if the state file were lost",
                wait + MAX_AHEAD,
                MAX_AHEAD,
            )
        return serials

    @property
    def recording(self) -> bool:
        """Whether a store is attached: a start that failed before `restore` has none."""
        return self._store is not None

    def later(self, job: Callable[[Store], None]) -> None:
        """Write `job` behind the answers; a failure is logged and shown (`store_error`)."""
        assert self._store is not None
        future = self._store.later(job)
        self._pending.add(future)
        future.add_done_callback(self._recorded)

    async def commit(
        self,
        decision: Decision,
        serials: Mapping[str, int],
        changed: Sequence[str],
        now: float,
        health: Sequence[HealthChange] = (),
        notes: Sequence[Row] = (),
    ) -> None:
        """Persist the serials, serve, then record the state and the history: a serial never
        goes backwards, and the answers do not wait on the history (10,000 names' state and
        transitions in a regional outage)."""
        store = self._store
        assert store is not None
        async with self._lock:
            floors = {
                o: max(serial, min(serial + SERIAL_BLOCK, int(now) + MAX_AHEAD))
                for o, serial in serials.items()
                if serial > self._floors.get(o, -1)
            }
            if floors:
                every = {**self._floors, **floors}
                try:
                    await store.run(lambda s: s.save_floors(every), urgent=True)
                except StoreError as e:
                    self._store_failed(e)
                    raise
                self._floors = every
            self._serials.update(serials)
            if serials:
                self.later(lambda s: s.save_serials(serials))
            self._engine = decision.state
            zones = with_serials(decision.zones, self._serials)
            by_origin = {z.origin: z for z in zones}
            served = [by_origin[o] for o in changed if o in self.embedded_origins]
            if served:  # first: 10,000 transitions' logs, metrics and notices come after
                await self.embedded.put_async(served)
            self.published = Published(tuple(zones), decision, now)
            if changed:
                log.info(
                    "publish: zones=%s serials=%s",
                    ",".join(changed),
                    ",".join(str(self._serials[o]) for o in changed),
                    extra=fields(serials={o: self._serials[o] for o in changed}),
                )
            for i, t in enumerate(decision.transitions):
                if i < LOGGED_TRANSITIONS:
                    self._log_transition(t, decision)
                self._metrics.transition(t)
                self._notify(Notice.from_transition(t))
            if len(decision.transitions) > LOGGED_TRANSITIONS:
                log.info(
                    "engine: %d more names changed their answers (each is in the events)",
                    len(decision.transitions) - LOGGED_TRANSITIONS,
                )
            detected, self._detected_at = self._detected_at, None
            for origin in changed:
                self._metrics.published(origin, self._serials[origin], detected, now)
            if self._on_decision is not None:
                self._on_decision(decision)
            if changed and self._writes_external():
                for origin in changed:
                    if origin in self.syncs:
                        content = by_origin[origin]
                        self.syncs[origin].submit(provider_records(content), content.steered)

            self._record(decision, health, notes)

    def _log_transition(self, t: Transition, decision: Decision) -> None:
        """One changed answer, at INFO: `a, b -> c` for people, and its data as fields."""
        name, group = split_group(t.name)
        nd = decision.names.get(t.name)
        log.info(
            "engine: %s %s: %s -> %s: %s",
            t.kind, t.name, answer_text(t.old), answer_text(t.new), t.reason,
            extra=fields(
                name=name, group=group, zone=nd.zone if nd else None, kind=t.kind,
                old=list(t.old), new=list(t.new), tier=nd.tier if nd else None,
                reason=t.reason,
            ),
        )  # fmt: skip

    def _record(
        self,
        decision: Decision,
        health: Sequence[HealthChange],
        notes: Sequence[Row],
    ) -> None:
        """Write the state and history of a committed decision behind the answers, in chunks
        (a later publish's serials go in between); reads queued later see it all."""
        state, changed = decision.state, decision.changed
        replace = len(changed) >= len(state.names)
        names = list(state.names) if replace else sorted(changed)
        chunks = [names[i : i + RECORD_CHUNK] for i in range(0, len(names), RECORD_CHUNK)]

        def first(s: Store) -> None:
            s.save_health(health)
            s.save_state(
                state, decision.transitions, notes, chunks[0] if chunks else (), replace=replace
            )

        jobs = [first] + [
            functools.partial(_save_names, state=state, names=chunk) for chunk in chunks[1:]
        ]
        for job in jobs:
            self.later(job)

    def _recorded(self, future: asyncio.Future[None]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._store_failed(error)
        elif self.store_error is not None:
            log.info("store: writing again")
            self.store_error = None

    def _store_failed(self, error: BaseException) -> None:
        """DNS goes on; the failure is an ERROR and makes /healthz fail until a write works."""
        if self.store_error is None:  # once per streak: a full disk fails every write
            log.error("store: cannot record state or history (still serving): %s", error)
        self.store_error = str(error)

    async def flush(self) -> None:
        """Wait for every decision's state and history to be written (before closing)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def serve_shared(
        self, decision: Decision, zones: tuple[ZoneContent, ...], now: float
    ) -> None:
        """Serve what the cluster's leader published (every node, the leader included)."""
        before = {z.origin: z for z in self.published.zones} if self.published else {}
        changed = [
            z.origin
            for z in zones
            if z.origin not in before
            or not z.same_answers(before[z.origin])
            or z.soa.serial != before[z.origin].soa.serial
        ]
        serials = {z.origin: z.soa.serial for z in zones if z.origin in changed}
        await self.commit(decision, serials, changed, now)


def _save_names(s: Store, *, state: EngineState, names: list[str]) -> None:
    s.save_state(state, (), (), names, replace=False)
