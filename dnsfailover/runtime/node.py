"""Wiring and lifecycle: store → checks → health → engine → published zones.

The order of a start is fixed (deterministic cold start): restore what the store knows,
run one bounded round of probes, decide, persist the new serials, and only then bind the
DNS server with that first snapshot.  After that the scheduler probes on its own, every
health change wakes the engine loop, and each decision that changes a zone is persisted
before it is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dnsfailover.alerts.alerter import Alerter, Notice
from dnsfailover.api.metrics import Metrics
from dnsfailover.checks.scheduler import ProbeScheduler
from dnsfailover.config.schema import Config
from dnsfailover.drills.scheduler import DrillScheduler
from dnsfailover.engine.decide import decide
from dnsfailover.engine.overrides import Action, Override
from dnsfailover.engine.values import Decision, EngineState, Published
from dnsfailover.errors import DnsFailoverError
from dnsfailover.health.tracker import HealthTracker, log_change
from dnsfailover.model import HealthChange, Observation, State, ZoneContent
from dnsfailover.provider.contract import create_provider
from dnsfailover.provider.plan import diff
from dnsfailover.provider.sync import SyncEvent, ZoneSync
from dnsfailover.runtime.cluster_link import ClusterLink
from dnsfailover.runtime.control import Operations
from dnsfailover.runtime.store import AsyncStore, Store, next_serial
from dnsfailover.runtime.wiring import (
    cold_start_deadline,
    hysteresis,
    provider_records,
    region_source,
    safety,
    with_serials,
)
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.embedded import EmbeddedProvider, EmbeddedZones
from dnsfailover.server.notify import Notifier, secondaries
from dnsfailover.server.rrl import RrlSettings
from dnsfailover.server.tsig import make_keyring
from dnsfailover.server.workers import WorkerPool
from dnsfailover.server.xfr import TransferHandler, transfer_acl
from dnsfailover.tasks import cancel_and_wait

log = logging.getLogger("dnsfailover.service")


class Service(Operations):
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
    ) -> None:
        self.config = config
        self.config_path = config_path
        self._reset_breaker = False
        self._frozen: str | None = None
        self._refused: set[str] = set()
        self._over: set[str] = set()
        self.node_id = node_id or socket.gethostname()
        self._api_addr = api
        self.api_address: tuple[str, int] | None = None
        self._api: Any = None  # dnsfailover.api.server.ApiServer, imported when serving
        self.metrics = Metrics()
        self.alerter = Alerter(config.notifications, node=self.node_id)
        self._overrides: list[Override] = []
        self._detected_at: float | None = None  # first health change not yet published
        self.workers = workers  # DNS-serving processes, this one included
        self._pool: WorkerPool | None = None
        self._on_decision = on_decision
        self.region = region
        self._dns_host, self._dns_port = dns_host, dns_port
        self._state_path = state_path
        self._clock = clock
        self._tracker = HealthTracker(hysteresis(config), config.votes())
        self._engine = EngineState()
        self._serials: dict[str, int] = {}
        self._pending_health: list[HealthChange] = []
        self._wake = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._decide_lock = asyncio.Lock()
        self._link: ClusterLink | None = None
        self._drills: DrillScheduler | None = None
        self._force_publish = False
        if config.cluster is not None:
            self._link = ClusterLink(self, config.cluster, clock)
        self._tasks: list[asyncio.Task[None]] = []
        self.store: AsyncStore | None = None
        self._scheduler: ProbeScheduler | None = None
        self._server: DnsServer | None = None
        self._notifier: Notifier | None = None
        self._transfers: TransferHandler | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.embedded = EmbeddedZones()
        self.providers: dict[str, EmbeddedProvider] = {}
        self.syncs: dict[str, ZoneSync] = {}
        self.published: Published | None = None

    @property
    def tracker(self) -> HealthTracker:
        return self._tracker

    @property
    def dns_server(self) -> DnsServer | None:
        return self._server

    async def start(self) -> tuple[str, int]:
        """Cold-start and begin serving; returns the DNS address actually bound."""
        self.store = await AsyncStore.open(self._state_path)
        serials, saved, engine, overrides = await self.store.run(
            lambda s: (s.serials(), s.health(), s.engine_state(), s.overrides())
        )
        self._serials, self._engine, self._overrides = serials, engine, overrides
        for h in saved:
            self._tracker.restore(h.target, h.region, h.state, h.since, h.reason)
        self._scheduler = ProbeScheduler(
            self.config.targets(),
            region=self.region,
            on_observation=self._on_observation,
            source_address=region_source(self.config, self.region),
        )
        await self.alerter.start()
        started = self._clock()
        await self._scheduler.run_round(cold_start_deadline(self.config))
        log.info(
            "start: first round of %d probes in %.3fs",
            len(self.config.targets()),
            self._clock() - started,
        )
        await asyncio.to_thread(self._make_providers)  # entry points read package metadata
        if self._link is None:
            await self._decide_and_publish(force_all=True)
        else:
            await self._cluster_cold_start()
        keyring = await asyncio.to_thread(make_keyring, self.config.tsig_keys)  # reads files
        transfers = TransferHandler(self.embedded, transfer_acl(self.config), keyring)
        self._transfers = transfers
        self._server = DnsServer(
            self.embedded.snapshot,
            self._dns_host,
            self._dns_port,
            tcp_handler=transfers,
            reuse_port=self.workers > 1,
            rrl=self._rrl(),
            # A blocking recvfrom/sendto thread costs less per datagram than a loop callback
            # (bench/dns_qps.py); DNSFAILOVER_UDP=loop answers on the event loop instead.
            udp_thread=os.environ.get("DNSFAILOVER_UDP", "thread") != "loop",
        )
        bound = await self._server.start()
        self.embedded.attach(self._server)
        if self.workers > 1:
            level = log.getEffectiveLevel()
            self._pool = WorkerPool(self.workers - 1, *bound, rrl=self._rrl(), log_level=level)
            self.embedded.subscribe(self._pool.publish)
            await self._pool.start(list(self.embedded.contents.values()))
        # NOTIFY secondaries of every later serial, and now: they may hold an older one.
        self._notifier = Notifier(secondaries(self.config, keyring))
        self.embedded.subscribe(self._notifier)
        self._notifier.notify(self.embedded.contents.values())
        for sync in self.syncs.values():
            sync.start()
        if self._api_addr is not None:
            from dnsfailover.api.server import ApiServer
            from dnsfailover.config.secrets import resolve_token

            token = await asyncio.to_thread(resolve_token, self.config.api)  # may read a file
            self._api = ApiServer(self, *self._api_addr, token=token)
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
        ]
        if self._link is not None:  # only other regions' results can go stale unnoticed
            self._tasks.append(asyncio.create_task(self._revote_loop(), name="dnsfailover-revote"))
        # What start-up built lives as long as the process: keep it out of the collector's
        # full passes, which otherwise pause probes for tens of ms at 10k targets.
        gc.freeze()
        return bound

    async def _cluster_cold_start(self) -> None:
        """Join the cluster and serve its decision; without one in time, a local one."""
        assert self._link is not None
        assert self.config.cluster is not None
        self._link.report_all()
        await self._link.start()
        wait = self.config.cluster.lease_ttl + 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._link.first_decision.wait(), wait)
        if self.published is not None:
            return
        log.warning(
            "cluster: no published decision within %.1fs (%s); serving a local decision "
            "until the leader's arrives",
            wait,
            self._link.degraded or "no leader yet",
        )
        now = self._clock()
        decision = decide(
            self.config, self._tracker.states(), self._engine, now, overrides=self.overrides()
        )
        changed = [z.origin for z in decision.zones]
        serials = {o: next_serial(self._serials.get(o), now) for o in changed}
        await self._commit(decision, serials, changed, now)

    async def stop(self) -> None:
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
        for sync in self.syncs.values():
            await sync.stop()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._notifier is not None:
            await self._notifier.stop()
        await self.alerter.stop()
        if self._pool is not None:
            await self._pool.stop()
        if self._server is not None:
            await self._server.stop()
        if self.store is not None:
            if self._pending_health:
                changes, self._pending_health = self._pending_health, []
                await self.store.run(lambda s: s.save_health(changes))
            await self.store.close()

    # -- the loop -----------------------------------------------------------------------------

    def _on_observation(self, obs: Observation) -> None:
        self.metrics.probe(obs, obs.target.partition("@")[0])
        changes = self._tracker.observe(obs)
        if self._link is not None:
            self._link.observed(obs.at)
            if changes:
                self._link.report(changes)
        if changes:
            self.health_changed(changes)

    def wake(self, force: bool = False) -> None:
        """Re-decide now; `force` re-publishes to the cluster even if nothing changed."""
        self._force_publish = self._force_publish or force
        self._wake.set()

    def adopt(self, state: EngineState, serials: Mapping[str, int]) -> None:
        """A new cluster leader continues from the last published engine state and serials."""
        self._engine = state
        for origin, serial in serials.items():
            self._serials[origin] = max(serial, self._serials.get(origin, 0))

    def health_changed(self, changes: list[HealthChange]) -> None:
        for change in changes:
            # One region: the voted line says it all; several: log each region too.
            if change.region is None or len(self._tracker.regions(change.target)) > 1:
                log_change(change)
            self.metrics.health_change(change)
            if change.region is None:
                self.alerter.emit(Notice.from_health(change))
                if self._detected_at is None:
                    self._detected_at = change.at
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
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                async with self._decide_lock:
                    await self._decide_and_publish()
            except Exception:
                # Static stability: whatever failed, the last published answers stay served.
                log.exception("engine: decision failed; still serving the last answers")
                await asyncio.sleep(1.0)

    async def _decide_and_publish(self, force_all: bool = False) -> None:
        """Decide; persist serials, state and reasons; then hand changed zones to providers.

        In a cluster only the leader decides, and what it decided is served by every node
        (this one included) once etcd has it: see `serve_shared`.
        """
        assert self.store is not None
        now = self._clock()
        link = self._link
        if link is not None and not link.leader:
            health, self._pending_health = self._pending_health, []
            if health:
                await self.store.run(lambda s: s.save_health(health))
            return
        overrides = self.overrides()
        expired = [o for o in self._overrides if not o.active(now)]
        reset, self._reset_breaker = self._reset_breaker, False
        decision = decide(
            self.config,
            self._tracker.states(),
            self._engine,
            now,
            overrides=overrides,
            reset_breaker=reset,
        )
        interlocks = self._interlock_events(decision, now)
        before = {z.origin: z for z in self.published.zones} if self.published else {}
        changed = [
            z.origin
            for z in decision.zones
            if force_all or z.origin not in before or not z.same_answers(before[z.origin])
        ]
        serials = {o: next_serial(self._serials.get(o), now) for o in changed}
        health, self._pending_health = self._pending_health, []
        if link is not None:
            zones = tuple(with_serials(decision.zones, {**self._serials, **serials}))
            force, self._force_publish = self._force_publish, False
            if not await link.publish(decision, zones, now, force=force or force_all):
                self._pending_health = health + self._pending_health
                return

            def persist(store: Store) -> None:
                store.save_health(health)
                store.add_events(interlocks)

            await self.store.run(persist)
        else:
            await self._commit(decision, serials, changed, now, health, interlocks)
        # A failback is taken once, and ends the failovers of its name; an expired override
        # is over.
        backs = [o for o in overrides if o.action is Action.FAILBACK]
        ended = [
            o
            for o in overrides
            if o.action is Action.FAILOVER and any(b.name == o.name for b in backs)
        ]
        for o in backs + ended + expired:
            why = (
                "expired"
                if o in expired
                else "ended by a failback"
                if o in ended
                else "taken by the engine"
            )
            await self.remove_override(o.id, "engine", why)

    async def _commit(
        self,
        decision: Decision,
        serials: Mapping[str, int],
        changed: list[str],
        now: float,
        health: Sequence[HealthChange] = (),
        notes: Sequence[tuple[float, str, str, str]] = (),
    ) -> None:
        """Persist, then serve: the new serials, engine state and reasons are written before
        the zones change, so a serial never goes backwards."""
        assert self.store is not None
        async with self._commit_lock:

            def persist(store: Store) -> None:
                store.save_health(health)
                store.save_publish(serials, decision.state, decision.transitions, notes)

            await self.store.run(persist)
            self._serials.update(serials)
            self._engine = decision.state
            for t in decision.transitions:
                log.info(
                    "engine: %s %s %s -> %s: %s",
                    t.kind,
                    t.name,
                    list(t.old),
                    list(t.new),
                    t.reason,
                )
                self.metrics.transition(t)
                self.alerter.emit(Notice.from_transition(t))
            detected, self._detected_at = self._detected_at, None
            for origin in changed:
                self.metrics.published(origin, self._serials[origin], detected, now)
            zones = with_serials(decision.zones, self._serials)
            self.published = Published(tuple(zones), decision, now)
            if self._on_decision is not None:
                self._on_decision(decision)
            if not changed:
                return
            log.info(
                "publish: zones=%s serials=%s",
                ",".join(changed),
                ",".join(str(self._serials[o]) for o in changed),
            )
            by_origin = {z.origin: z for z in zones}
            for origin in changed:
                content = by_origin[origin]
                if origin in self.providers:
                    provider = self.providers[origin]
                    current = await provider.populate(())
                    plan = diff(origin, current, content.records, soa=content.soa, keep_empty=True)
                    await provider.apply(plan)
                elif self._link is None or self._link.leader:
                    # In a cluster only the leader writes to external providers.
                    self.syncs[origin].submit(provider_records(content))

    async def serve_shared(self, decision: Decision, zones: tuple[ZoneContent, ...]) -> None:
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
        await self._commit(decision, serials, changed, self._clock())

    def _make_providers(self) -> None:
        for origin, zone in self.config.zones.items():
            if zone.provider == "embedded":
                self.providers[origin] = EmbeddedProvider(
                    origin, EmbeddedProvider.Options(), zones=self.embedded
                )
                continue
            provider = create_provider(zone.provider, origin, zone.options)
            self.syncs[origin] = ZoneSync(
                provider,
                safety(self.config, origin),
                force=zone.force,
                on_event=self._sync_event,
                fence=None if self._link is None else self._link.cluster.still_leader,
            )

    def _sync_event(self, event: SyncEvent) -> None:
        self.metrics.provider_event(event)
        if event.kind in ("failed", "refused"):
            self.alerter.emit(Notice.from_sync_event(event))
        if self.store is None:
            return
        row = (event.at, f"provider-{event.kind}", event.zone, event.message)
        store = self.store
        task = asyncio.create_task(store.run(lambda s: s.add_events([row])))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _rrl(self) -> RrlSettings:
        rrl = self.config.server.rrl
        return RrlSettings(rrl.responses_per_second, rrl.slip, rrl.window)

    def states(self) -> dict[str, State]:
        return self._tracker.states()
