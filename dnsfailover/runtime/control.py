"""What operators do to a running node: overrides, reload, and the cluster's status.

A mixin of `Service`, kept apart so that the lifecycle and the decide → publish path stay
readable; everything here goes through the same engine wake-up as a health change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dnsfailover.alerts.alerter import Alerter, Notice
from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import vet_override
from dnsfailover.engine.overrides import Override, OverrideRefused, target_problem
from dnsfailover.engine.values import Decision, EngineState
from dnsfailover.health.tracker import HealthTracker
from dnsfailover.runtime.store import AsyncStore
from dnsfailover.runtime.wiring import cold_start_deadline, hysteresis, safety
from dnsfailover.server.notify import secondaries
from dnsfailover.server.tsig import make_keyring
from dnsfailover.server.xfr import transfer_acl

if TYPE_CHECKING:
    from dnsfailover.checks.scheduler import ProbeScheduler
    from dnsfailover.provider.sync import ZoneSync
    from dnsfailover.runtime.cluster_link import ClusterLink
    from dnsfailover.server.notify import Notifier
    from dnsfailover.server.xfr import TransferHandler

log = logging.getLogger("dnsfailover.service")

Event = tuple[float, str, str, str]  # (at, kind, subject, message) for the history


class Operations:
    config: Config
    region: str
    node_id: str
    store: AsyncStore | None
    alerter: Alerter
    syncs: dict[str, ZoneSync]
    _tracker: HealthTracker
    _engine: EngineState
    _overrides: list[Override]
    _clock: Callable[[], float]
    _wake: asyncio.Event
    _link: ClusterLink | None
    _scheduler: ProbeScheduler | None
    _transfers: TransferHandler | None
    _notifier: Notifier | None
    _decide_and_publish: Callable[..., Awaitable[None]]
    _reset_breaker: bool
    _frozen: str | None
    _refused: set[str]
    _over: set[str]
    _decide_lock: asyncio.Lock
    config_path: str | None
    published: Any

    # -- overrides ------------------------------------------------------------------------------

    def overrides(self) -> list[Override]:
        """The overrides in force now."""
        now = self._clock()
        return [o for o in self._overrides if o.active(now)]

    async def add_override(self, o: Override) -> None:
        """Validate, check interlocks, persist and audit `o`, then wake the engine.

        Raises ValueError for an override naming what does not exist, OverrideRefused when
        an interlock would trip and `o.force` is not set.
        """
        assert self.store is not None
        problem = target_problem(self.config, o)
        if problem is not None:
            raise ValueError(problem)
        now = self._clock()
        refusal = vet_override(
            self.config, self._tracker.states(), self._engine, self.overrides(), o, now
        )
        if refusal is not None:
            message = f"refused {o.describe()}: {refusal}"
            log.warning("override: %s", message)
            await self.store.run(lambda s: s.add_events([(now, "interlock", o.subject, message)]))
            self.alerter.emit(Notice("interlock", o.subject, message, now, "warning"))
            raise OverrideRefused(refusal)
        await self._persist_override(o, now)
        self._overrides = [x for x in self._overrides if x.id != o.id] + [o]
        log.info("override: set %s: %s", o.id, o.describe())
        self.alerter.emit(Notice("override", o.subject, f"set: {o.describe()}", now, "info"))
        self._wake.set()

    async def remove_override(self, override_id: str, who: str, reason: str) -> bool:
        assert self.store is not None
        now = self._clock()
        found = await self._unpersist_override(override_id, who, reason, now)
        before = len(self._overrides)
        self._overrides = [x for x in self._overrides if x.id != override_id]
        if found or len(self._overrides) != before:
            log.info("override: removed %s by %s: %s", override_id, who, reason)
            self.alerter.emit(
                Notice("override", override_id, f"removed by {who}: {reason}", now, "info")
            )
            self._wake.set()
            return True
        return False

    async def _persist_override(self, o: Override, now: float) -> None:
        assert self.store is not None
        if self._link is not None:
            # The cluster's copy is the one that counts; the local one is the audit trail.
            await self._link.cluster.put_override(o)
        await self.store.run(lambda s: s.put_override(o, now))

    async def _unpersist_override(self, oid: str, who: str, reason: str, now: float) -> bool:
        assert self.store is not None
        found = False
        if self._link is not None:
            found = await self._link.cluster.delete_override(oid)
        local = await self.store.run(lambda s: s.delete_override(oid, who, reason, now))
        return found or local

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

    def set_overrides(self, overrides: list[Override]) -> None:
        """The cluster's overrides changed (any node may have set them)."""
        self._overrides = list(overrides)
        self._wake.set()

    async def reset_breaker(self, who: str, reason: str) -> bool:
        """Release the circuit breaker: the next decision takes today's health as the
        baseline.  Returns whether it was frozen."""
        assert self.store is not None
        frozen = self.published is not None and self.published.decision.frozen is not None
        now = self._clock()
        message = f"circuit breaker reset by {who}: {reason}" + ("" if frozen else " (not frozen)")
        log.warning("interlock: %s", message)
        await self.store.run(
            lambda s: s.add_events([(now, "interlock", "circuit-breaker", message)])
        )
        self._reset_breaker = True
        self._wake.set()
        return frozen

    async def reload_from_file(self) -> str:
        """Re-read the config file this node was started with (SIGHUP, `dnsfailover reload`).

        Raises ConfigError (nothing changes) for a bad file, OSError when unreadable.
        """
        from dnsfailover.config.load import load

        if self.config_path is None:
            raise ValueError("this node was started without a config file")
        config = await asyncio.to_thread(load, self.config_path)
        return await self.reload(config)

    # -- reload -------------------------------------------------------------------------------

    async def reload(self, config: Config) -> str:
        """Switch to `config` (already validated) without a cold start.

        Health of unchanged targets is kept, removed targets stop being probed at once, new
        ones start at their phase, and what changes in DNS is published as one new serial
        per changed zone.  Adding or removing zones, or changing a zone's provider, needs a
        restart: refused with ValueError, and the running config stays.
        """
        old = self.config
        if set(config.zones) != set(old.zones) or any(
            (z.provider, z.options) != (old.zones[o].provider, old.zones[o].options)
            for o, z in config.zones.items()
        ):
            raise ValueError(
                "reload cannot add or remove zones or change a zone's provider; restart instead"
            )
        async with self._decide_lock:  # no decision sees half a reload
            return await self._reload(old, config)

    async def _reload(self, old: Config, config: Config) -> str:
        before = set(old.targets())
        self.config = config
        self._tracker.update_rules(hysteresis(config), config.votes())
        added = set(config.targets()) - before
        if self._scheduler is not None:
            self._scheduler.update(config.targets())
            if added:
                # New targets are probed once before deciding, so the reload publishes its
                # whole change at once instead of serving them as unknown first.
                await self._scheduler.run_round(cold_start_deadline(config), only=added)
        for origin, sync in self.syncs.items():
            sync.safety = safety(config, origin)
            sync.force = config.zones[origin].force
        if (config.tsig_keys, [z.allow_transfer for z in config.zones.values()]) != (
            old.tsig_keys,
            [z.allow_transfer for z in old.zones.values()],
        ) or [z.also_notify for z in config.zones.values()] != [
            z.also_notify for z in old.zones.values()
        ]:
            keyring = await asyncio.to_thread(make_keyring, config.tsig_keys)  # reads files
            if self._transfers is not None:
                self._transfers.update(transfer_acl(config), keyring)
            if self._notifier is not None:
                self._notifier.retarget(secondaries(config, keyring))
        if config.notifications != old.notifications:
            await self.alerter.stop()
            self.alerter = Alerter(config.notifications, node=self.node_id)
            await self.alerter.start()
        after = set(config.targets())
        summary = (
            f"{len(after - before)} target(s) added, {len(before - after)} removed, "
            f"{len(after & before)} kept"
        )
        log.info("reload: %s", summary)
        assert self.store is not None
        now = self._clock()
        await self.store.run(lambda s: s.add_events([(now, "reload", "config", summary)]))
        await self._decide_and_publish()
        return summary

    def _interlock_events(
        self, decision: Decision, now: float
    ) -> list[tuple[float, str, str, str]]:
        """What the interlocks did this time that they did not do last time: logged,
        alerted, and recorded in the history (once, not at every decision)."""
        events: list[Event] = []
        if decision.frozen != self._frozen:
            if decision.frozen is not None:
                message = f"circuit breaker tripped: {decision.frozen}"
                log.error("interlock: %s", message)
                self.alerter.emit(Notice("interlock", "circuit-breaker", message, now, "critical"))
            else:
                message = "circuit breaker released"
                log.warning("interlock: %s", message)
                self.alerter.emit(Notice("interlock", "circuit-breaker", message, now, "warning"))
            events.append((now, "interlock", "circuit-breaker", message))
            self._frozen = decision.frozen
        for oid, why in decision.refused.items():
            if oid not in self._refused:
                message = f"override {oid} set aside: {why}"
                log.warning("interlock: %s", message)
                self.alerter.emit(Notice("interlock", oid, message, now, "warning"))
                events.append((now, "interlock", oid, message))
        self._refused = set(decision.refused)
        over = {name for name, nd in decision.names.items() if nd.over_capacity}
        for name in sorted(over - self._over):
            message = f"{name} OVER CAPACITY: {decision.names[name].reason}"
            log.error("capacity: %s", message)
            self.alerter.emit(Notice("capacity", name, message, now, "critical"))
            events.append((now, "capacity", name, message))
        for name in sorted(self._over - over):
            message = f"{name} back within capacity"
            log.warning("capacity: %s", message)
            self.alerter.emit(Notice("capacity", name, message, now, "info"))
            events.append((now, "capacity", name, message))
        self._over = over
        return events
