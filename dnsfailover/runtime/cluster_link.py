"""Glue between one node and the etcd cluster.

Every node probes from its region and reports its hysteresis-filtered view of each target
(`RegionReport`, changes only) and a beat that keeps its region fresh.  Every node watches
everyone's reports, so each holds the same region-by-region picture; only the leader feeds
it to the engine.  The leader publishes its decision
with fenced transactions (the names it changed, then a head with the serials; see
`runtime/shared.py`); every node, the leader included, serves a decision only once etcd
holds it, so all nodes answer the same records with the same serial.

Static stability: when etcd is unreachable nothing here changes what is served; probes go
on, the node says it is degraded, and when etcd returns the cluster layer re-delivers the
state and the nodes converge on the leader's next decision.  Every node keeps what it applied
in its state file, so a node restarted while etcd is down serves the cluster's last decision
with the cluster's serial (`serve_saved`), not one of its own.  A decision the leader cannot
publish is an ERROR, counted (`dnsfailover_cluster_publish_failures_total`), shown in status
(`degraded`) and notified (kind `cluster`), and retried with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from dnsfailover.alerts.alerter import Alerter
from dnsfailover.alerts.notice import Notice
from dnsfailover.backoff import Backoff
from dnsfailover.cluster.codec import CodecError, decode, encode
from dnsfailover.cluster.node import INLINE_ENTRIES, EtcdCluster
from dnsfailover.cluster.types import NameEntry, NodeBeat, Published, RegionReport, SharedDecision
from dnsfailover.config.cluster import ClusterConfig
from dnsfailover.config.schema import Config
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.values import Decision, EngineState
from dnsfailover.errors import StoreError
from dnsfailover.health.tracker import HealthTracker
from dnsfailover.model import HealthChange, ZoneContent
from dnsfailover.runtime.publish import Publisher
from dnsfailover.runtime.shared import SharedView, entries
from dnsfailover.runtime.store import Store
from dnsfailover.runtime.store_thread import AsyncStore
from dnsfailover.tasks import cancel_and_wait

SAVED = "cluster/"  # keys of the last applied decision in the state file


class LinkHost(Protocol):
    """What the link needs of its node (the node satisfies it; the link never imports it)."""

    @property
    def config(self) -> Config: ...

    @property
    def node_id(self) -> str: ...

    @property
    def region(self) -> str: ...

    @property
    def tracker(self) -> HealthTracker: ...

    def health_changed(self, changes: list[HealthChange]) -> None: ...

    async def serve_shared(self, decision: Decision, zones: tuple[ZoneContent, ...]) -> None: ...

    def set_overrides(self, overrides: list[Override]) -> None: ...

    def adopt(self, state: EngineState, serials: Mapping[str, int]) -> None: ...

    def wake(self, force: bool = False) -> None: ...

    @property
    def store(self) -> AsyncStore | None: ...

    @property
    def publisher(self) -> Publisher: ...

    @property
    def alerter(self) -> Alerter: ...


log = logging.getLogger("dnsfailover.cluster")


def config_digest(config: Config) -> str:
    """A short digest of the validated config (not the file: comments and order don't count),
    zone files' records included."""
    digest = hashlib.sha256(config.model_dump_json().encode())
    for origin, zone in config.zones.items():
        if zone.zone_file is not None:
            for r in zone.static_records(origin):
                digest.update(f"{r.name} {r.rtype} {r.ttl} {r.values}\n".encode())
    return digest.hexdigest()[:12]


def beat_period(node: LinkHost) -> float:
    """Beat often enough that a live region never looks stale (3 check intervals)."""
    intervals = [c.interval for _t, c in node.config.targets().values()]
    return max(0.05, min(min(intervals, default=1.0), 1.0) / 2)


class ClusterLink:
    def __init__(
        self, node: LinkHost, config: ClusterConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self._node = node
        self._clock = clock
        self.cluster = EtcdCluster(
            config,
            node=node.node_id,
            region=node.region,
            on_reports=self._on_reports,
            on_reports_gone=self._on_reports_gone,
            on_beat=self._on_beat,
            on_decision=self._on_decision,
            on_overrides=self._on_overrides,
            on_leader=self._on_leader,
            on_connected=self._on_connected,
            clock=clock,
        )
        self.decision: SharedDecision | None = None
        self.first_decision = asyncio.Event()
        self.leading = asyncio.Event()  # set while this node leads
        self.degraded: str | None = "not connected to etcd yet"
        self._last_probe = 0.0
        self._nodes: dict[str, NodeBeat] = {}
        self._beats: asyncio.Task[None] | None = None
        self._serving: asyncio.Task[None] | None = None
        self._pending: list[Published] = []  # heads to serve, oldest first
        self.shared = SharedView()
        self._unsent: set[str] = set()  # names of a publish that failed: written again
        # A publish that failed is retried with backoff, counted, and shown in `status`
        # until one succeeds: a leader never sits silently on a decision no node serves.
        self.publish_failures = 0  # since start
        self.publish_error: str | None = None  # the current streak's reason
        self._streak = 0
        self._retry: asyncio.TimerHandle | None = None
        self._backoff = Backoff(base=0.2, cap=5.0)
        self._drift: list[str] = []
        self._digest: tuple[Config | None, str] = (None, "")
        self.saved: SharedDecision | None = None  # serving the head kept locally, etcd down

    @property
    def leader(self) -> bool:
        return self.cluster.leader

    async def start(self) -> None:
        await self.cluster.start()
        self._beats = asyncio.create_task(self._beat_loop(), name="dnsfailover-cluster-beat")

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._beats is not None:
            await cancel_and_wait(self._beats)
        if self._serving is not None:
            await cancel_and_wait(self._serving)
        await self.cluster.stop()

    # -- this node → etcd ------------------------------------------------------------------

    def observed(self, at: float) -> None:
        self._last_probe = max(self._last_probe, at)

    def report(self, changes: Iterable[HealthChange]) -> None:
        """Share this region's state changes (not the voted ones: the leader votes)."""
        region = self._node.region
        reports = [
            RegionReport(c.target, region, self._node.node_id, c.new, c.at, c.reason)
            for c in changes
            if c.region == region
        ]
        if reports:
            self.cluster.report(reports)

    def report_all(self) -> None:
        """Share everything this region knows (after the cold-start round)."""
        region, node = self._node.region, self._node.node_id
        self.cluster.report(
            RegionReport(target, region, node, state, since, reason)
            for target, (state, since, reason) in self._node.tracker.region_states(region).items()
        )

    async def _beat_loop(self) -> None:
        period = beat_period(self._node)
        while True:
            now = self._clock()
            self.cluster.beat(
                NodeBeat(
                    self._node.node_id,
                    self._node.region,
                    now,
                    self._last_probe,
                    self.cluster.leader,
                    self._node.region in self._node.tracker.isolated(),
                    self._config_digest(),
                )
            )
            await asyncio.sleep(period)

    async def publish(
        self,
        decision: Decision,
        serials: Mapping[str, int],
        now: float,
        *,
        force: bool = False,
    ) -> bool:
        """Publish the leader's decision (its changed names, then a head with every zone's
        serial); False when this node may not (or etcd is down)."""
        term = self.cluster.term
        if term is None or not self.cluster.leader:
            return False
        seq = self.cluster.seq + 1
        # A failed publish's names are written again: etcd may lack them (or hold them staged
        # for this head), and a later decision need not re-decide them.  Thousands (a first
        # decision, a regional outage: ~60 us a name) are packed on a thread, so that the
        # lease's keep-alive goes on meanwhile.
        pack = functools.partial(entries, decision, seq, self.cluster.names, also=self._unsent)
        many = len(decision.changed) + len(self._unsent) > INLINE_ENTRIES
        written = await asyncio.to_thread(pack) if many else pack()
        last = self.decision
        same = last is not None and last.term == term and dict(last.serials) == dict(serials)
        if same and not written and not force and not decision.transitions:
            return True  # nothing new to say
        head = SharedDecision(
            term=term,
            leader=self._node.node_id,
            at=now,
            seq=seq,
            serials=dict(serials),
            frozen=decision.frozen,
            refused=dict(decision.refused),
            extra={"isolated_regions": sorted(self._node.tracker.isolated())},
        )
        try:
            ok = await self.cluster.publish(head, written)
            why = self.cluster.publish_error
        except Exception as e:  # the cluster layer should not raise; be safe anyway
            ok, why = False, repr(e)
        if ok:
            self._unsent.clear()
            self._published_again()
        else:
            self._unsent.update(written)
            self._publish_failed(why or "unknown")
        return ok

    def _publish_failed(self, why: str) -> None:
        self.publish_failures += 1
        if self.publish_error is None:  # a streak starts: tell the operators once
            message = f"decision not published: {why}; every node keeps the last published one"
            self._node.alerter.emit(Notice("cluster", "publish", message, self._clock(), "error"))
        self.publish_error = why
        if not self.cluster.leader:
            self._streak = 0  # the new leader publishes; nothing to retry here
            log.error("cluster: decision not published: %s", why)
            return
        delay = self._backoff.delay(self._streak)
        self._streak += 1
        log.error("cluster: decision not published (%s); retrying in %.1fs", why, delay)
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._node.wake(force=True)

    def _published_again(self) -> None:
        if self.publish_error is not None:
            message = f"publishing again after {self._streak or 1} failed attempt(s)"
            log.info("cluster: %s", message)
            self._node.alerter.emit(Notice("cluster", "publish", message, self._clock(), "info"))
        self.publish_error, self._streak = None, 0

    # -- etcd → this node ------------------------------------------------------------------

    def _on_reports(self, reports: list[RegionReport]) -> None:
        tracker, now = self._node.tracker, self._clock()
        changes: list[HealthChange] = []
        for r in reports:
            if r.region == self._node.region:
                continue  # this node's own probes are its region's truth
            changes.extend(tracker.set_remote(r.target, r.region, r.state, r.since, r.reason, now))
        if changes:
            self._node.health_changed(changes)

    def _on_reports_gone(self, node: str, region: str) -> None:
        self._nodes.pop(node, None)
        if region == self._node.region:
            return
        if any(b.region == region for b in self._nodes.values()):
            return  # another node still speaks for that region
        log.warning("cluster: node %s left; region %s no longer votes", node, region)
        changes = self._node.tracker.forget(region, self._clock())
        if changes:
            self._node.health_changed(changes)

    def _on_beat(self, beat: NodeBeat) -> None:
        self._nodes[beat.node] = beat
        if beat.region != self._node.region:
            self._node.tracker.seen(beat.region, beat.last_probe_at)
        self._check_drift()

    def _config_digest(self) -> str:
        """This node's config digest, computed once per config (a reload makes a new one)."""
        config = self._node.config
        if self._digest[0] is not config:
            self._digest = (config, config_digest(config))
        return self._digest[1]

    def drift(self) -> list[str]:
        """Nodes whose config differs from this node's (the leader decides with its own)."""
        mine = self._config_digest()
        return sorted(n for n, b in self._nodes.items() if b.config and b.config != mine)

    def _check_drift(self) -> None:
        drift = self.drift()
        if drift != self._drift:
            if drift:
                log.warning(
                    "cluster: node(s) %s run a different config than %s: answers follow the "
                    "leader's config; reload them all with the same file",
                    ", ".join(drift),
                    self._node.node_id,
                )
            else:
                log.info("cluster: every node runs the same config again")
            self._drift = drift

    def _on_decision(self, published: Published) -> None:
        head, last = published.head, self.decision
        if last is not None and (head.term, head.seq) < (last.term, last.seq):
            return  # an older leader's decision arriving late
        self.decision = head
        self._pending.append(published)
        if self._serving is None or self._serving.done():
            self._serving = asyncio.create_task(self._serve_pending(), name="dnsfailover-serve")

    async def _serve_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            config = self._node.config
            try:
                # Thousands of names (a join, a regional outage) are decoded and compiled on
                # a thread, so the lease keep-alive and the probes go on meanwhile.
                if self.shared.costly(batch, config):
                    decision = await asyncio.to_thread(self.shared.advance, batch, config)
                else:
                    decision = self.shared.advance(batch, config)
                await self._node.serve_shared(decision, decision.zones)
                self._save(batch)
                self.saved = None
            except Exception:
                log.exception("cluster: cannot serve the published decision; keeping the last")
            self.first_decision.set()

    def _save(self, batch: list[Published]) -> None:
        """Keep what was applied (behind the answers): see `serve_saved`."""
        if self._node.store is None:
            return
        values = [(n, e) for p in batch for n, e in p.entries.items()]
        head = batch[-1].head

        def job(store: Store) -> None:
            kept = {f"{SAVED}name/{n}": json.dumps(encode(e)) for n, e in values}
            kept[f"{SAVED}head"] = json.dumps(encode(head))
            store.save_values(kept)

        self._node.publisher.later(job)

    async def serve_saved(self) -> bool:
        """At a start without etcd: serve the last decision this node applied (kept in its
        state file), with the cluster's serials, until etcd delivers a newer one.  False
        when there is none (or etcd answered meanwhile)."""
        store = self._node.store
        if store is None:
            return False
        try:
            saved = _load_saved(await store.run(lambda s: s.saved(SAVED)))
        except (StoreError, CodecError, ValueError, TypeError, KeyError) as e:
            log.error("cluster: cannot read the decision kept in the state file: %s", e)
            return False
        if saved is None or self.decision is not None or self._pending:
            return False
        decision = await asyncio.to_thread(self.shared.advance, [saved], self._node.config)
        if self.decision is not None:
            return True  # etcd answered meanwhile: its decision is being served
        await self._node.serve_shared(decision, decision.zones)
        head = self.saved = saved.head
        self.degraded = (
            f"{self.degraded or 'etcd unreachable'}; serving the cluster's last decision kept "
            f"in the state file (leader {head.leader}, term {head.term}, seq {head.seq}) "
            "until etcd is back"
        )
        log.warning("cluster: %s", self.degraded)
        return True

    def _on_overrides(self, overrides: list[Override]) -> None:
        self._node.set_overrides(overrides)

    def _on_leader(self, leader: bool) -> None:
        (self.leading.set if leader else self.leading.clear)()
        if leader:
            log.info("cluster: node %s is now the leader", self._node.node_id)
            if self.decision is not None:
                # Continue where the last leader stopped: its tiers, hold-downs and serials.
                state = EngineState(dict(self.shared.states))
                self._node.adopt(state, self.decision.serials)
            self._node.wake(force=True)
        else:
            log.warning("cluster: node %s is no longer the leader", self._node.node_id)

    def _on_connected(self, connected: bool) -> None:
        if connected:
            if self.degraded is not None:
                log.info("cluster: etcd reachable again")
            self.degraded = None
            self.report_all()
        else:
            self.degraded = "etcd unreachable: serving the last published decision"
            log.warning("cluster: %s", self.degraded)

    def status(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "mode": "cluster",
            "node": self._node.node_id,
            "region": self._node.region,
            "leader": self.cluster.leader,
            "term": self.cluster.term,
            "connected": self.cluster.connected,
            "degraded": self.degraded
            or (None if self.publish_error is None else f"cannot publish: {self.publish_error}"),
            "publish_failures": self.publish_failures,
            "decision_source": "etcd" if self.saved is None else "state file (etcd down)",
            "isolated_regions": sorted(self._node.tracker.isolated()),
            "config": self._config_digest(),
            "config_drift": self.drift(),
            "decision": None
            if self.decision is None
            else {
                "leader": self.decision.leader,
                "term": self.decision.term,
                "at": self.decision.at,
                "serials": dict(self.decision.serials),
                "seq": self.decision.seq,
            },
            "nodes": {
                node: {
                    "region": b.region,
                    "leader": b.leader,
                    "isolated": b.isolated,
                    "last_beat_age": round(now - b.at, 3),
                    "config": b.config,
                }
                for node, b in sorted(self._nodes.items())
            },
        }


def _load_saved(values: Mapping[str, str]) -> Published | None:
    head = values.get(f"{SAVED}head")
    if head is None:
        return None
    prefix = f"{SAVED}name/"
    names = {
        k[len(prefix) :]: decode(NameEntry, json.loads(v))
        for k, v in values.items()
        if k.startswith(prefix)
    }
    return Published(decode(SharedDecision, json.loads(head)), names)
