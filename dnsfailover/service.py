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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from dnsfailover.embedded import EmbeddedProvider, EmbeddedZones
from dnsfailover.engine import Decision, EngineState, decide
from dnsfailover.health import HealthTracker, Hysteresis, log_change
from dnsfailover.model import HealthChange, Observation, RecordSet, State, ZoneContent
from dnsfailover.provider import Safety, create_provider, diff
from dnsfailover.scheduler import ProbeScheduler
from dnsfailover.schema import CheckConfig, Config
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.notify import Notifier, secondaries
from dnsfailover.server.rrl import RrlSettings
from dnsfailover.server.tsig import make_keyring
from dnsfailover.server.workers import WorkerPool
from dnsfailover.server.xfr import TransferHandler, transfer_acl
from dnsfailover.store import AsyncStore, Request, Store, next_serial
from dnsfailover.sync import SyncEvent, ZoneSync
from dnsfailover.tasks import cancel_and_wait

log = logging.getLogger("dnsfailover.service")

REQUEST_POLL = 0.5  # seconds between looks at the store for operator requests


def hysteresis(config: Config) -> dict[str, Hysteresis]:
    return {
        key: Hysteresis(check.rise, check.fall, check.interval)
        for key, (_target, check) in config.targets().items()
    }


def cold_start_deadline(config: Config) -> float:
    """How long the first round of probes may take: the slowest timeout, plus slack."""
    checks: list[CheckConfig] = [check for _t, check in config.targets().values()]
    return max((c.timeout for c in checks), default=0.0) + 0.5


def with_serials(zones: tuple[ZoneContent, ...], serials: Mapping[str, int]) -> list[ZoneContent]:
    return [replace(z, soa=replace(z.soa, serial=serials.get(z.origin, 0))) for z in zones]


def provider_records(content: ZoneContent) -> tuple[RecordSet, ...]:
    """What an external provider is given: everything but the apex NS, which it owns."""
    return tuple(r for r in content.records if not (r.name == content.origin and r.rtype == "NS"))


def safety(config: Config, origin: str) -> Safety:
    zone = config.zones[origin]
    empty_ok = frozenset(
        name
        for o, name, record in config.managed()
        if o == origin and record.all_down == "serve_none"
    )
    return Safety(max_change_pct=zone.max_change_pct, empty_ok=empty_ok, adopt=zone.adopt)


@dataclass(frozen=True, slots=True)
class Published:
    """What is being served now."""

    zones: tuple[ZoneContent, ...]
    decision: Decision
    at: float


class Service:
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
    ) -> None:
        self.config = config
        self.workers = workers  # DNS-serving processes, this one included
        self._pool: WorkerPool | None = None
        self._on_decision = on_decision
        self.region = region
        self._dns_host, self._dns_port = dns_host, dns_port
        self._state_path = state_path
        self._clock = clock
        self._tracker = HealthTracker(hysteresis(config))
        self._engine = EngineState()
        self._serials: dict[str, int] = {}
        self._pending_health: list[HealthChange] = []
        self._requests: list[Request] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._store: AsyncStore | None = None
        self._scheduler: ProbeScheduler | None = None
        self._server: DnsServer | None = None
        self._notifier: Notifier | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.embedded = EmbeddedZones()
        self.providers: dict[str, EmbeddedProvider] = {}
        self.syncs: dict[str, ZoneSync] = {}
        self.published: Published | None = None

    @property
    def tracker(self) -> HealthTracker:
        return self._tracker

    async def start(self) -> tuple[str, int]:
        """Cold-start and begin serving; returns the DNS address actually bound."""
        self._store = await AsyncStore.open(self._state_path)
        serials, saved, engine = await self._store.run(
            lambda s: (s.serials(), s.health(), s.engine_state())
        )
        self._serials, self._engine = serials, engine
        for h in saved:
            self._tracker.restore(h.target, h.region, h.state, h.since, h.reason)
        self._scheduler = ProbeScheduler(
            self.config.targets(), region=self.region, on_observation=self._on_observation
        )
        started = self._clock()
        await self._scheduler.run_round(cold_start_deadline(self.config))
        log.info(
            "start: first round of %d probes in %.3fs",
            len(self.config.targets()),
            self._clock() - started,
        )
        await asyncio.to_thread(self._make_providers)  # entry points read package metadata
        await self._decide_and_publish(force_all=True)
        keyring = await asyncio.to_thread(make_keyring, self.config.tsig_keys)  # reads files
        transfers = TransferHandler(self.embedded, transfer_acl(self.config), keyring)
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
        self._scheduler.start()
        self._tasks = [
            asyncio.create_task(self._engine_loop(), name="dnsfailover-engine"),
            asyncio.create_task(self._request_loop(), name="dnsfailover-requests"),
        ]
        # What start-up built lives as long as the process: keep it out of the collector's
        # full passes, which otherwise pause probes for tens of ms at 10k targets.
        gc.freeze()
        return bound

    async def stop(self) -> None:
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
        if self._pool is not None:
            await self._pool.stop()
        if self._server is not None:
            await self._server.stop()
        if self._store is not None:
            if self._pending_health:
                changes, self._pending_health = self._pending_health, []
                await self._store.run(lambda s: s.save_health(changes))
            await self._store.close()

    # -- the loop -----------------------------------------------------------------------------

    def _on_observation(self, obs: Observation) -> None:
        changes = self._tracker.observe(obs)
        if changes:
            for change in changes:
                # One region: the voted line says it all; several: log each region too.
                if change.region is None or len(self._tracker.regions(change.target)) > 1:
                    log_change(change)
            self._pending_health.extend(changes)
            self._wake.set()

    async def _engine_loop(self) -> None:
        while True:
            wake_at = self.published.decision.wake_at if self.published else None
            timeout = None if wake_at is None else max(0.0, wake_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                await self._decide_and_publish()
            except Exception:
                # Static stability: whatever failed, the last published answers stay served.
                log.exception("engine: decision failed; still serving the last answers")
                await asyncio.sleep(1.0)

    async def _request_loop(self) -> None:
        assert self._store is not None
        while True:
            await asyncio.sleep(REQUEST_POLL)
            try:
                pending = await self._store.run(Store.pending_requests)
            except Exception:
                log.exception("requests: cannot read operator requests from the store")
                continue
            known = {r.id for r in self._requests}
            fresh = [r for r in pending if r.id not in known]
            if fresh:
                for r in fresh:
                    log.info("request: %s %s (%s)", r.kind, r.name, r.reason)
                self._requests.extend(fresh)
                self._wake.set()

    async def _decide_and_publish(self, force_all: bool = False) -> None:
        """Decide; persist serials, state and reasons; then hand changed zones to providers."""
        assert self._store is not None
        now = self._clock()
        requests, self._requests = self._requests, []
        failback = frozenset(r.name for r in requests if r.kind == "failback")
        decision = decide(self.config, self._tracker.states(), self._engine, now, failback=failback)
        before = {z.origin: z for z in self.published.zones} if self.published else {}
        changed = [
            z.origin
            for z in decision.zones
            if force_all or z.origin not in before or not z.same_answers(before[z.origin])
        ]
        serials = {o: next_serial(self._serials.get(o), now) for o in changed}
        managed = {name for _o, name, _r in self.config.managed()}
        notes = [
            (
                now,
                "request",
                r.name,
                f"{r.kind}: no such managed name"
                if r.name not in managed
                else f"{r.kind} taken: {decision.names[r.name].reason}",
            )
            for r in requests
        ]
        health, self._pending_health = self._pending_health, []
        ids = [r.id for r in requests]

        def persist(store: Store) -> None:
            store.save_health(health)
            store.save_publish(serials, decision.state, decision.transitions, notes, ids, now)

        await self._store.run(persist)
        self._serials.update(serials)
        self._engine = decision.state
        for t in decision.transitions:
            log.info(
                "engine: %s %s %s -> %s: %s", t.kind, t.name, list(t.old), list(t.new), t.reason
            )
        zones = with_serials(decision.zones, self._serials)
        self.published = Published(tuple(zones), decision, now)
        if self._on_decision is not None:
            self._on_decision(decision)
        if not changed:
            return
        log.info(
            "publish: zones=%s serials=%s",
            ",".join(changed),
            ",".join(str(serials[o]) for o in changed),
        )
        by_origin = {z.origin: z for z in zones}
        for origin in changed:
            content = by_origin[origin]
            if origin in self.providers:
                provider = self.providers[origin]
                current = await provider.populate(())
                plan = diff(origin, current, content.records, soa=content.soa, keep_empty=True)
                await provider.apply(plan)
            else:
                self.syncs[origin].submit(provider_records(content))

    def _make_providers(self) -> None:
        for origin, zone in self.config.zones.items():
            if zone.provider == "embedded":
                self.providers[origin] = EmbeddedProvider(
                    origin, EmbeddedProvider.Options(), zones=self.embedded
                )
                continue
            provider = create_provider(zone.provider, origin, zone.options)
            self.syncs[origin] = ZoneSync(
                provider, safety(self.config, origin), force=zone.force, on_event=self._sync_event
            )

    def _sync_event(self, event: SyncEvent) -> None:
        if self._store is None:
            return
        row = (event.at, f"provider-{event.kind}", event.zone, event.message)
        store = self._store
        task = asyncio.create_task(store.run(lambda s: s.add_events([row])))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _rrl(self) -> RrlSettings:
        rrl = self.config.server.rrl
        return RrlSettings(rrl.responses_per_second, rrl.slip, rrl.window)

    def states(self) -> dict[str, State]:
        return self._tracker.states()
