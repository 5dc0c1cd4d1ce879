"""Prometheus metrics: counted cheaply as things happen, rendered when scraped.

`probe()` runs for every probe result (~10,000/s at scale), so probe counts and latency
buckets are plain ints in a dict, not prometheus-client children (each with a lock and a
label look-up).  Everything that describes *current* state (endpoint health, answers,
serials, overrides, DNS responses by rcode) is read from the node at scrape time rather
than mirrored (`scrape.py`).  Rare events (transitions, publishes, provider applies) use ordinary
prometheus-client metrics in this object's own registry, never the global one, so several
nodes in one process (tests) do not collide.

Scraping copies the live numbers on the event loop (`snapshot`) and renders the text on a
worker thread (`render`), so a big exposition never stalls probes or the engine.

Labels name one thing one way: a probe target or a voted health key is `check` plus
`endpoint` (`address:port`), and `quorum` where a record votes under its own quorum, never
the internal key (`web@127.0.0.31:8080#quorum=all`); names carry `zone` to join with the
provider's metrics.  No `_created` series (`disable_created_metrics`, this process only).
Alerting rules and a Grafana dashboard built on these names are in deploy/prometheus/.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dnsfailover import __version__
from dnsfailover.api.scrape import key_labels, node_families
from dnsfailover.checks.forward import PROBE_BUCKETS, Counts
from dnsfailover.engine.steering import split_group
from dnsfailover.model import HealthChange, Observation

__all__ = ["CONTENT_TYPE", "Metrics", "Snapshot", "key_labels"]

if TYPE_CHECKING:
    from dnsfailover.api.ports import NodeView
    from dnsfailover.engine.values import Transition
    from dnsfailover.provider.sync import SyncEvent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUBLISH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
APPLY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series: noise


@dataclass(slots=True)
class _ProbeStats:
    check: str
    counts: Counts = field(default_factory=Counts)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a scrape renders, copied on the event loop; safe to read on any thread."""

    probes: tuple[tuple[str, str, str, int, int, int, float, tuple[int, ...]], ...]
    families: tuple[Metric, ...]


class Metrics:
    """The node's metrics; every hook is cheap and never raises into the caller."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._probes: dict[tuple[str, str], _ProbeStats] = {}
        self._answer_changes: dict[tuple[str, str], int] = {}
        self.health_transitions = Counter(
            "dnsfailover_health_transitions",
            'Endpoint health changes, per region and voted (region="voted")',
            ["check", "endpoint", "quorum", "region", "to"],
            registry=r,
        )
        self.decisions = Counter(
            "dnsfailover_engine_decisions",
            "Decisions the engine made: of every name (scope all: a start, a reload, a new "
            "leader) or of the names a health change touched (scope changed)",
            ["scope"],
            registry=r,
        )
        self.publishes = Counter(
            "dnsfailover_zone_publishes", "New zone serials published", ["zone"], registry=r
        )
        self.serial = Gauge(
            "dnsfailover_zone_serial", "SOA serial being served", ["zone"], registry=r
        )
        self.last_publish = Gauge(
            "dnsfailover_zone_last_publish_timestamp_seconds",
            "When the zone last got a new serial (unix time)",
            ["zone"],
            registry=r,
        )
        self.detection_to_publish = Histogram(
            "dnsfailover_detection_to_publish_seconds",
            "From the first health change a decision reacts to, to its answer being published",
            ["zone"],
            buckets=PUBLISH_BUCKETS,
            registry=r,
        )
        self.provider_applies = Counter(
            "dnsfailover_provider_applies",
            "External provider apply rounds by result (applied, refused, failed, fenced)",
            ["zone", "result"],
            registry=r,
        )
        self.provider_errors = Counter(
            "dnsfailover_provider_apply_errors",
            "Provider applies that failed (each one is retried with backoff)",
            ["zone"],
            registry=r,
        )
        self.provider_retries = Counter(
            "dnsfailover_provider_apply_retries",
            "Provider applies retried after a failure",
            ["zone"],
            registry=r,
        )
        self.provider_latency = Histogram(
            "dnsfailover_provider_apply_duration_seconds",
            "How long one provider apply call took (successful or failed)",
            ["zone"],
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        Gauge("dnsfailover_build_info", "dnsfailover version", ["version"], registry=r).labels(
            __version__
        ).set(1)

    # -- hooks the node calls ------------------------------------------------------------

    def probe(self, obs: Observation, check: str) -> None:
        """One probe result; the hot path: a dict look-up and a few int increments."""
        key = (obs.target, obs.region)
        stats = self._probes.get(key)
        if stats is None:
            stats = self._probes[key] = _ProbeStats(check)
        stats.counts.add(obs)

    def probes_counted(self, region: str, counts: Mapping[str, Counts]) -> None:
        """What a probe process counted (`checks.forward.Tally.drain`), target by target."""
        for target, c in counts.items():
            key = (target, region)
            stats = self._probes.get(key)
            if stats is None:
                stats = self._probes[key] = _ProbeStats(target.partition("@")[0])
            stats.counts.merge(c)

    def health_change(self, change: HealthChange) -> None:
        region = change.region if change.region is not None else "voted"
        self.health_transitions.labels(*key_labels(change.target), region, change.new.value).inc()

    def transition(self, t: Transition) -> None:
        # A plain dict, like the probe counts: a regional outage changes 10,000 names at
        # once, and a prometheus-client child per name costs ~80 µs to create.
        key = (t.name, t.kind)
        self._answer_changes[key] = self._answer_changes.get(key, 0) + 1

    def published(self, zone: str, serial: int, detected_at: float | None, at: float) -> None:
        self.publishes.labels(zone).inc()
        self.serial.labels(zone).set(serial)
        self.last_publish.labels(zone).set(at)
        if detected_at is not None:
            self.detection_to_publish.labels(zone).observe(max(0.0, at - detected_at))

    def provider_event(self, event: SyncEvent) -> None:
        self.provider_applies.labels(event.zone, event.kind).inc()
        if event.kind == "failed":
            self.provider_errors.labels(event.zone).inc()
            self.provider_retries.labels(event.zone).inc()  # ZoneSync retries every failure
        if event.seconds is not None and event.kind in ("applied", "failed"):
            self.provider_latency.labels(event.zone).observe(event.seconds)

    # -- scraping ---------------------------------------------------------------------------

    def snapshot(self, node: NodeView | None = None) -> Snapshot:
        """Copy what a scrape shows; call on the event loop (the hooks' thread)."""
        probes = tuple(
            (
                target,
                region,
                s.check,
                s.counts.ok,
                s.counts.failed,
                s.counts.unknown,
                s.counts.total_seconds,
                tuple(s.counts.buckets),
            )
            for (target, region), s in self._probes.items()
        )
        changes = CounterMetricFamily(
            "dnsfailover_answer_changes",
            "Changes of a managed name's answer, by kind (answer, failover, failback, all_down); "
            'per location group of a steered name (group="": its default answer)',
            labels=["name", "group", "kind"],
        )
        for (key, kind), count in self._answer_changes.items():
            changes.add_metric([*split_group(key), kind], float(count))
        families = (changes, *(node_families(node) if node is not None else ()))
        return Snapshot(probes, families)

    def render(self, snap: Snapshot) -> bytes:
        """The text exposition of `snap` plus the registry's metrics; any thread."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Delegate(self.registry))
        registry.register(_Frozen(snap))
        return generate_latest(registry)


class _Delegate(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


class _Frozen(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from _probe_families(self._snap.probes)
        yield from self._snap.families


def _probe_families(
    probes: Iterable[tuple[str, str, str, int, int, int, float, tuple[int, ...]]],
) -> Iterator[Metric]:
    results = CounterMetricFamily(
        "dnsfailover_probes",
        "Probe results per check, endpoint (address:port), region and result (unknown: the "
        "probe could not run, e.g. out of file descriptors)",
        labels=["check", "endpoint", "region", "result"],
    )
    latency = HistogramMetricFamily(
        "dnsfailover_probe_duration_seconds",
        "Probe latency per check, endpoint and region",
        labels=["check", "endpoint", "region"],
    )
    for target, region, _check, ok, failed, unknown, total, buckets in probes:
        check, endpoint, _ = key_labels(target)
        results.add_metric([check, endpoint, region, "ok"], ok)
        results.add_metric([check, endpoint, region, "failed"], failed)
        results.add_metric([check, endpoint, region, "unknown"], unknown)
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*PROBE_BUCKETS, float("inf")), buckets, strict=True):
            running += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        latency.add_metric([check, endpoint, region], cumulative, total)
    yield results
    yield latency
