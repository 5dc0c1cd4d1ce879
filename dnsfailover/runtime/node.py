"""The node: the one place where the stages are put together.

Lifecycle, the engine loop and reload.  The order of a start is fixed (deterministic cold
start): restore what the store knows, run one bounded round of probes, decide, persist the
new serials, and only then bind the DNS server with that first snapshot.  After that the
scheduler probes on its own, every health change wakes the engine loop, and each decision
that changes a zone goes through the `Publisher` (persisted before it is served).

What the node is made of, and who sees what of it:
- `Publisher` (publish.py): the only writer of serials and of what is served;
- `OverrideBook` (control.py): the operator overrides;
- `ClusterLink` (cluster_link.py): etcd, when the config has a `cluster:` section;
- the API and the drill scheduler see the node only through their own Protocols
  (`api.ports`, `drills.scheduler.DrillHost`), which it satisfies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnsfailover.alerts.alerter import Alerter, Notice
from dnsfailover.api.metrics import Metrics
from dnsfailover.api.server import ApiServer
from dnsfailover.checks.process import ProbeProcess, Started
from dnsfailover.checks.scheduler import Prober, ProbeScheduler
from dnsfailover.config.load import load
from dnsfailover.config.schema import Config
from dnsfailover.config.secrets import resolve_token
from dnsfailover.drills.scheduler import DrillScheduler
from dnsfailover.engine.decide import decide, redecide, vet_override
from dnsfailover.engine.edges import edges
from dnsfailover.engine.endings import ended
from dnsfailover.engine.index import index
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.values import Decision, EngineState, Published
from dnsfailover.errors import DnsFailoverError, StoreError
from dnsfailover.health.tracker import HealthTracker, log_change
from dnsfailover.model import HealthChange, Observation, ZoneContent
from dnsfailover.runtime import reload as reloading
from dnsfailover.runtime import signing, systemd, wiring
from dnsfailover.runtime.control import OverrideBook
from dnsfailover.runtime.publish import Publisher
from dnsfailover.runtime.reload import ReloadRefused
from dnsfailover.runtime.reports import NodeReports
from dnsfailover.runtime.serving import Serving
from dnsfailover.runtime.store_thread import AsyncStore
from dnsfailover.runtime.syncs import ProviderSyncs
from dnsfailover.runtime.wiring import cold_start_deadline, hysteresis, make_syncs, region_source
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.tasks import any_set, cancel_and_wait, settle

if TYPE_CHECKING:
    from dnsfailover.runtime.cluster_link import ClusterLink

log = logging.getLogger("dnsfailover.service")

INLINE_NAMES = 500  # a decision re-deciding more names than this runs on a thread
LEADER_PATIENCE = 30.0  # seconds a first leader waits for its published decision at start
GATHER = 0.1  # seconds an outage's first detections may wait for the rest of the probe round
GATHER_STEP = 0.02  # ... as long as more arrive within this
TRIM_AFTER = 5.0  # seconds after a decision of many names, the heap is trimmed (if none came)


class Node(ProviderSyncs, NodeReports):
    """One dnsfailover node serving its zones from the embedded DNS server."""

    def __init__(
        self,
        config: Config,
        *,
        region: str = "local",
        dns_host: str = "127.0.0.1",
        dns_port: int = 5353,
        state_path: str | Path = "dnsfailover.db",
        clock: Callable[[], float] = time.time,
        on_decision: Callable[[Decision], None] | None = None,
        workers: int = 1,
        node_id: str | None = None,
        api: tuple[str, int] | None = None,
        config_path: str | None = None,
        state_recover: bool = False,
        probe_process: bool = False,
        early_probes: Started | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.node_id = node_id or socket.gethostname()
        self.region = region
        self.workers = workers  # DNS-serving processes, this one included
        self.metrics = Metrics()
        self.alerter = Alerter(config.notifications, node=self.node_id)
        self.store: AsyncStore | None = None
        self.api_address: tuple[str, int] | None = None
        self.embedded = EmbeddedZones()
        self._api_addr = api
        self._api: ApiServer | None = None
        self._state_path, self._state_recover = state_path, state_recover
        self._clock = clock
        self._tracker = HealthTracker(hysteresis(config), config.votes())
        self._wake = asyncio.Event()
        self._decide_lock = asyncio.Lock()
        self._pending_health: list[HealthChange] = []
        self._last_decided: Decision | None = None  # for the edges of the next decision
        # What the next decision re-decides from (None: decide every name): the last one
        # committed, and the health keys whose voted state changed since.
        self._base: Decision | None = None
        self._changed_keys: set[str] = set()
        self._reset_breaker = False
        self._force_publish = False
        self._due = True  # the next wake decides (a region's change moving no vote: recorded)
        self._link: ClusterLink | None = None
        if config.cluster is not None:
            # Imported only for a cluster: etcd's gRPC client costs ~20 MB and ~50 ms.
            from dnsfailover.runtime.cluster_link import ClusterLink

            self._link = ClusterLink(self, config.cluster, clock)
        self.publisher = Publisher(
            self.embedded,
            self.metrics,
            notify=self._notify,
            writes_external=lambda: self._link is None or self._link.leader,
            on_decision=on_decision,
        )
        self.book = OverrideBook(
            clock=clock,
            config=lambda: self.config,
            vet=self._vet,
            notify=self._notify,
            wake=self.wake,
            shared=None if self._link is None else self._link.cluster,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._trim = wiring.HeapTrimmer(self._decide_lock, TRIM_AFTER)
        self._scheduler: Prober | None = None
        self._probe_process = probe_process  # probes in a child process (`serve`'s default)
        self._early_probes = early_probes  # one started before the config loaded
        self.prober: ProbeProcess | None = None
        self.serving = Serving(self.embedded, dns_host, dns_port, workers)
        self.supervision = systemd.Supervision()  # the engine loop's heartbeat (/livez, watchdog)
        self._drills: DrillScheduler | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        """Cold-start and begin serving; returns the DNS address actually bound."""
        gc.collect()  # the config out of full passes: here, before a lease waits on the loop
        gc.freeze()
        spawning = None
        if self._probe_process:  # it imports while the store opens
            self.prober = self._scheduler = self._probe_process_for(self.config)
            spawning = asyncio.create_task(self.prober.open())
        try:
            self.store = await AsyncStore.open(self._state_path, recover=self._state_recover)
        finally:
            if spawning is not None:
                await spawning
        restored = self.store.restored  # bad rows skipped, logged and recorded
        self.publisher.restore(self.store, restored.serials, restored.engine, self._clock())
        self.book.open(self.store, restored.overrides)
        for h in restored.health:
            self._tracker.restore(h.target, h.region, h.state, h.since, h.reason)
        if self._scheduler is None:
            self._scheduler = ProbeScheduler(
                self.config.targets(),
                region=self.region,
                on_observation=self._on_observation,
                source_address=region_source(self.config, self.region),
            )
        await self.alerter.start()
        started = self._clock()
        await self._scheduler.run_round(cold_start_deadline(self.config))
        took = self._clock() - started
        log.info("start: first round of %d probes in %.3fs", len(self.config.targets()), took)
        fence = None if self._link is None else self._link.cluster.still_leader
        # entry points read package metadata
        syncs = await asyncio.to_thread(make_syncs, self.config, self._sync_event, fence)
        self.publisher.syncs.update(syncs)
        embedded = {o: z for o, z in self.config.zones.items() if z.provider == "embedded"}
        self.publisher.embedded_origins.update(embedded)
        self.publisher.transferred.update(  # others hold these serials: peers, secondaries
            o for o, z in embedded.items() if self._link or z.allow_transfer or z.also_notify
        )
        self.embedded.sign_with(await signing.signers(self.config, self._state_path, self._clock))
        if self._link is None:
            await self._decide_and_publish(force_all=True)
        else:
            await self._cluster_cold_start()
        bound = await self.serving.start(self.config)
        for sync in self.publisher.syncs.values():
            sync.start()
        if self._api_addr is not None:
            token = await asyncio.to_thread(resolve_token, self.config.api)  # may read a file
            self._api = ApiServer(self, self, *self._api_addr, token=token, metrics=self.metrics)
            try:
                self.api_address = await self._api.start()
            except OSError as e:
                host, port = self._api_addr
                raise DnsFailoverError(
                    f"cannot serve the API on {host}:{port}: {e.strerror or e}; "
                    "pick another with --api HOST:PORT, or --api off"
                ) from e
        self._scheduler.start()
        self._drills = DrillScheduler(self)
        self._drills.start()
        self._tasks = [
            asyncio.create_task(self._engine_loop(), name="dnsfailover-engine"),
            asyncio.create_task(signing.resign(self), name="dnsfailover-resign"),
        ]
        if self._link is not None:  # only other regions' results can go stale unnoticed
            self._tasks.append(asyncio.create_task(self._revote_loop(), name="dnsfailover-revote"))
        gc.collect(1)  # what start-up built, likewise; a full pass: 0.7 s of blocked loop
        gc.freeze()
        wiring.trim_heap()
        return bound

    def _probe_process_for(self, config: Config) -> ProbeProcess:
        return ProbeProcess(
            config.targets(),
            region=self.region,
            on_observation=self._observed,
            on_probing=self._probing,
            on_counts=lambda counts: self.metrics.probes_counted(self.region, counts),
            source_address=region_source(config, self.region),
            early=self._early_probes,
        )

    async def _cluster_cold_start(self) -> None:
        """Join the cluster and serve its decision; without one in time, a local one.  A node
        that leads by now (the first one up) decides and publishes it itself."""
        link = self._link
        assert link is not None
        assert self.config.cluster is not None
        link.report_all()
        began = self._clock()
        await link.start()
        wait = self.config.cluster.lease_ttl + 1.0
        await any_set(link.first_decision, link.leading, timeout=wait)
        if link.leader and not link.first_decision.is_set():
            async with self._decide_lock:  # served once etcd has it, like every decision
                await self._decide_and_publish(force_all=True)
            # Written: it comes back through the watch (10,000 names take seconds).
            patience = LEADER_PATIENCE if link.publish_error is None else wait
            await any_set(link.first_decision, timeout=patience)
        if self.published is not None or await link.serve_saved():
            return
        leader = link.cluster.leader_node
        log.warning(
            "cluster: no published decision within %.1fs (%s); serving a local decision "
            "until the leader's arrives",
            self._clock() - began,
            link.degraded or (f"leader {leader} has not published" if leader else "no leader"),
        )
        now = self._clock()
        # Every name: on a thread, so the loop keeps the lease alive meanwhile.
        decision = await asyncio.to_thread(
            decide, self.config, self._tracker.states(), self.publisher.engine, now,
            overrides=self.overrides(),
        )  # fmt: skip
        if link.decision is not None:  # the cluster's arrived meanwhile: it wins over ours
            await any_set(link.first_decision, timeout=wait)
            if self.published is not None:
                return
        changed = [z.origin for z in decision.zones]
        await self.publisher.commit(
            decision, self.publisher.next_serials(changed, now), changed, now
        )

    async def stop(self) -> None:
        await self._trim.stop()
        if self._drills is not None:
            await self._drills.stop()  # first: its override is removed while all is running
        if self._link is not None:
            await self._link.stop()
        if self._api is not None:
            await self._api.stop()
        for task in self._tasks:
            await cancel_and_wait(task)
        if self._scheduler is not None:
            await self._scheduler.stop()
        for sync in self.publisher.syncs.values():
            await sync.stop()
        await self.serving.stop_notify()
        await self.alerter.stop()
        await self.serving.stop()
        if self.store is not None:
            if self.publisher.recording:  # (not when the start failed before restoring)
                changes, self._pending_health = self._pending_health, []
                self.publisher.later(lambda s: s.save_health(changes))
                await self.publisher.flush()  # logged: a full disk must not stop a stop
            await self.store.close()

    # -- health → engine ----------------------------------------------------------------------

    def _on_observation(self, obs: Observation) -> None:
        """Every probe result of a scheduler running here."""
        self.metrics.probe(obs, obs.target.partition("@")[0])
        self._observed(obs)

    def _observed(self, obs: Observation) -> None:
        """A result the tracker must see (all of them, or what the probe process sends)."""
        changes = self._tracker.observe(obs)
        if self._link is not None and not obs.unknown:  # a probe that could not run saw nothing
            self._link.observed(obs.at)
            if changes:
                self._link.report(changes)
        if changes:
            self.health_changed(changes)

    def _probing(self, at: float) -> None:
        """The probe process's beat: this region probed at `at`, so its results are fresh."""
        self._tracker.seen(self.region, at)
        if self._link is not None:
            self._link.observed(at)

    def wake(self, force: bool = False) -> None:
        """Re-decide now; `force` re-publishes to the cluster even if nothing changed."""
        self._force_publish = self._force_publish or force
        self._due = True
        self._wake.set()

    def adopt(self, state: EngineState, serials: Mapping[str, int]) -> None:
        """A new cluster leader continues from the last published engine state and serials."""
        self.publisher.adopt(state, serials)
        self._base = None  # another node's decisions: decide every name once

    def health_changed(self, changes: list[HealthChange]) -> None:
        for change in changes:
            # One region: the voted line says it all; several: log each region too.
            if change.region is None or len(self._tracker.regions(change.target)) > 1:
                log_change(change)
            self.metrics.health_change(change)
            if change.region is None:
                self.alerter.emit(Notice.from_health(change))
                self.publisher.detected(change.at)
                self._changed_keys.add(change.target)
                self._due = True
        self._pending_health.extend(changes)
        self._wake.set()

    async def _revote_loop(self) -> None:
        """Regions whose results go stale stop voting even when nothing else happens."""
        period = min((c.interval for _t, c in self.config.targets().values()), default=1.0)
        while True:
            await asyncio.sleep(max(0.25, min(period, 1.0)))
            changes = self._tracker.revote(self._clock())
            if changes:
                self.health_changed(changes)

    async def _engine_loop(self) -> None:
        while True:
            wake_at = self.published.decision.wake_at if self.published else None
            timeout = None if wake_at is None else max(0.0, wake_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await self.supervision.wait(self._wake, timeout)
            if not (self._due or self._base is None or not self._wake.is_set()):
                self._wake.clear()  # (not set: a timer of the decision is due)
                self._save_health()
                continue
            pending = index(self.config).affected(self._changed_keys)
            if self._base is not None and pending > INLINE_NAMES:
                # An outage's detections come over a probe round: wait for them, one pass
                await settle(lambda: len(self._changed_keys), GATHER_STEP, GATHER)
            self._wake.clear()
            self._due = False
            try:
                async with self._decide_lock:
                    await self._decide_and_publish()
                if pending > INLINE_NAMES:
                    self._trim.later()
            except StoreError as e:  # the serial floor cannot be written (logged by publish)
                log.error("engine: cannot publish: %s; still serving the last answers", e)
                await asyncio.sleep(1.0)
            except Exception:
                # Static stability: whatever failed, the last published answers stay served.
                log.exception("engine: decision failed; still serving the last answers")
                await asyncio.sleep(1.0)

    async def _decide_and_publish(self, force_all: bool = False) -> None:
        """Decide; persist serials, state and reasons; then hand changed zones to providers.
        In a cluster only the leader decides, and what it decided is served by every node
        (this one included) once etcd has it: see `serve_shared`."""
        assert self.store is not None
        now = self._clock()
        link = self._link
        if link is not None and not link.leader:
            self._changed_keys.clear()
            self._save_health()
            return
        overrides, held = self.overrides(), self.book.held()
        reset, self._reset_breaker = self._reset_breaker, False
        base, self._base = self._base, None  # until this one is committed
        keys, self._changed_keys = self._changed_keys, set()
        states = self._tracker.states()
        if base is None or force_all:
            decision = await asyncio.to_thread(
                decide, self.config, states, self.publisher.engine, now,
                overrides=overrides, reset_breaker=reset,
            )  # fmt: skip
        else:
            run = functools.partial(
                redecide, self.config, states, base, now, changed=keys, overrides=overrides,
                reset_breaker=reset,
            )  # fmt: skip
            # A few names are decided right here (less than a thread's hand-over costs on a
            # busy loop); thousands (a regional outage) on a thread, so probes go on meanwhile.
            big = index(self.config).affected(keys) > INLINE_NAMES
            decision = await asyncio.to_thread(run) if big else run()
        self.metrics.decisions.labels("all" if base is None or force_all else "changed").inc()
        told = wiring.tell(edges(self._last_decided, decision), now, self.alerter)
        self._last_decided = decision
        changed = self.publisher.changed(decision.zones, force_all=force_all)
        serials = await self.publisher.reserve(changed, self._clock)
        health, self._pending_health = self._pending_health, []
        if link is not None:
            every = {**self.publisher.serials, **serials}
            served = {z.origin: every.get(z.origin, 0) for z in decision.zones}
            force, self._force_publish = self._force_publish, False
            if not await link.publish(decision, served, now, force=force or force_all):
                self._pending_health = health + self._pending_health
                return

            self.publisher.later(lambda s: s.save_health(health, told))
        else:
            await self.publisher.commit(decision, serials, changed, now, health, told)
        self._base = decision
        for end in ended(overrides, held, now):
            await self.remove_override(end.override.id, "engine", end.why)

    def _save_health(self) -> None:  # (the changes no decision takes with it)
        health, self._pending_health = self._pending_health, []
        if health:
            self.publisher.later(lambda s: s.save_health(health))

    async def serve_shared(self, decision: Decision, zones: tuple[ZoneContent, ...]) -> None:
        """Serve what the cluster's leader published (every node, the leader included)."""
        await self.publisher.serve_shared(decision, zones, self._clock())

    def _vet(self, o: Override, in_force: list[Override], now: float) -> str | None:
        return vet_override(
            self.config, self._tracker.states(), self.publisher.engine, in_force, o, now
        )

    def _notify(self, notice: Notice) -> None:
        self.alerter.emit(notice)  # the alerter a reload made, if any

    # -- what the API, drills and cluster link see (api.ports, drills.scheduler.DrillHost) ----

    @property
    def tracker(self) -> HealthTracker:
        return self._tracker

    @property
    def published(self) -> Published | None:
        return self.publisher.published

    def overrides(self) -> list[Override]:
        """The overrides in force now."""
        return self.book.in_force()

    def set_overrides(self, overrides: list[Override]) -> None:
        """The cluster's overrides changed (any node may have set them)."""
        self.book.replace(overrides)

    def cluster_status(self) -> dict[str, Any]:
        if self._link is not None:
            return self._link.status()
        return {
            "mode": "single",
            "node": self.node_id,
            "region": self.region,
            "leader": None,
            "connected": True,
            "degraded": None,
            "isolated_regions": sorted(self._tracker.isolated()),
        }

    async def add_override(self, o: Override) -> None:
        """See `OverrideBook.add`."""
        await self.book.add(o)

    async def remove_override(self, override_id: str, who: str, reason: str) -> bool:
        return await self.book.remove(override_id, who, reason)

    async def reset_breaker(self, who: str, reason: str) -> bool:
        """Release the circuit breaker: the next decision takes today's health as the
        baseline.  Returns whether it was frozen."""
        published = self.published
        frozen = published is not None and published.decision.frozen is not None
        message = f"circuit breaker reset by {who}: {reason}" + ("" if frozen else " (not frozen)")
        log.warning("interlock: %s", message)
        await self.record_event("interlock", "circuit-breaker", message)
        self._reset_breaker = True
        self.wake()
        return frozen

    # -- reload -------------------------------------------------------------------------------

    async def reload_from_file(self) -> str:
        """Re-read the config file (SIGHUP, `dnsfailover reload`) on a thread and `reload` it.
        A bad file raises ConfigError, logged and recorded as `reload`; nothing changes."""
        if self.config_path is None:
            raise ReloadRefused("this node was started without a config file")
        try:
            config = await asyncio.to_thread(load, self.config_path)
        except Exception as e:
            await reloading.report_failure(e, self.config_path, self.record_event)
            raise
        return await self.supervision.reloading(self.reload(config))  # RELOADING=1 .. READY=1

    async def reload(self, config: Config) -> str:
        """Switch to `config` (validated) without a cold start, all or nothing (reload.py).

        Health of unchanged targets is kept, removed targets stop being probed at once, new
        ones start at their phase, and a changed zone gets one new serial.  ReloadRefused
        (zones added or removed: restart) or ReloadFailed leave the running config whole.
        """
        old = self.config
        async with self._decide_lock:  # no decision sees half a reload
            try:
                staged = await reloading.stage(
                    old, config, scheduler=self._scheduler, serving=self.serving,
                    node_id=self.node_id,
                )  # fmt: skip
            except Exception as e:
                await reloading.report_failure(e, self.config_path, self.record_event)
                raise
            # Everything is built: from here on each step swaps in what was.
            self.config, self._base = config, None  # another config: decide every name once
            self._tracker.update_rules(staged.rules, staged.votes)
            if staged.alerter is not None:
                await self.alerter.stop()
                self.alerter = staged.alerter
                await self.alerter.start()
            summary = await reloading.commit(
                old, staged, scheduler=self._scheduler, syncs=self.publisher.syncs,
                serving=self.serving,
            )  # fmt: skip
            log.info("reload: %s", summary)
            await self.record_event("reload", "config", summary)
            await self._decide_and_publish()
            return summary
