"""Prometheus metrics: counted cheaply as things happen, rendered when scraped.

`probe()` runs for every probe result (~10,000/s at scale), so probe counts and latency
buckets are plain ints in a dict, not prometheus-client children (each with a lock and a
label look-up).  Everything that describes *current* state (endpoint health, answers,
serials, overrides, DNS responses by rcode) is read from the node at scrape time rather
than mirrored.  Rare events (transitions, publishes, provider applies) use ordinary
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
from typing import TYPE_CHECKING, Any

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
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dnsfailover import __version__
from dnsfailover.checks.forward import PROBE_BUCKETS, Counts
from dnsfailover.config.schema import ActivePassive, Config
from dnsfailover.engine.steering import decided, split_group
from dnsfailover.model import HealthChange, Observation, State

if TYPE_CHECKING:
    from dnsfailover.api.ports import NodeView
    from dnsfailover.engine.values import Transition
    from dnsfailover.provider.sync import SyncEvent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUBLISH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
APPLY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RCODES = (
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15",
)  # fmt: skip
"""Index = the header's 4-bit rcode, as counted by `DnsServer.rcodes`."""
STATES = tuple(s.value for s in State)
MODES = ("healthy", "degraded", "all_down", "no_data")

disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series: noise


def key_labels(key: str) -> tuple[str, str, str]:
    """A target or health key as (check, endpoint, quorum): `web@127.0.0.31:8080#quorum=all`
    → `("web", "127.0.0.31:8080", "all")`; quorum is "" for the check's own."""
    key, _, quorum = key.partition("#quorum=")
    check, _, endpoint = key.partition("@")
    return check, endpoint, quorum


def first_tiers(config: Config) -> dict[str, str]:
    """Each active-passive decision name (a steered name's groups too) → its first tier."""
    return config.derived(
        "metrics.first_tiers",
        lambda c: {
            name: record.tiers[0].name
            for _origin, name, record in decided(c)
            if isinstance(record, ActivePassive)
        },
    )


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
        families = (changes, *(_node_families(node) if node is not None else ()))
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


def _node_families(node: NodeView) -> Iterator[Metric]:
    """Current state, read from the node at scrape time."""
    tracker = node.tracker
    states = tracker.states()
    voted = GaugeMetricFamily(
        "dnsfailover_endpoint_state",
        "Voted health of each endpoint per check (and per quorum when a record votes under "
        'its own, else quorum=""): 1 for its current state',
        labels=["check", "endpoint", "quorum", "state"],
    )
    for key, state in sorted(states.items()):
        labels = key_labels(key)
        for s in STATES:
            voted.add_metric([*labels, s], 1.0 if state.value == s else 0.0)
    yield voted
    per_region = GaugeMetricFamily(
        "dnsfailover_endpoint_region_state",
        "Health of each endpoint per check as seen from each region: 1 for its current state",
        labels=["check", "endpoint", "region", "state"],
    )
    for target in sorted(node.config.targets()):
        check, endpoint, _ = key_labels(target)
        for region, rh in sorted(tracker.regions(target).items()):
            for s in STATES:
                value = 1.0 if rh.state.value == s else 0.0
                per_region.add_metric([check, endpoint, region, s], value)
    yield per_region
    yield GaugeMetricFamily(
        "dnsfailover_probe_targets_unknown",
        "Targets whose latest probe could not run (out of file descriptors or socket "
        "buffers): their health is frozen, failover for them is blind",
        value=float(len(tracker.unprobed())),
    )
    yield from _probe_process_families(node.probe_status())
    yield from _published_families(node)
    yield from _dns_families(node)
    yield from _cluster_families(node)
    yield from _alert_families(node)


def _probe_process_families(status: Mapping[str, Any]) -> Iterator[Metric]:
    separate = status.get("where") == "process"
    problem = GaugeMetricFamily(
        "dnsfailover_probe_process_problem",
        "1 while the probe process has a problem (it died and is being restarted, or cannot "
        "start): no probe results arrive; 0 when it is fine or probes run inline",
        value=1.0 if separate and status.get("problem") else 0.0,
    )
    yield problem
    yield CounterMetricFamily(
        "dnsfailover_probe_process_restarts",
        "Times the probe process was restarted after it died",
        value=float(status.get("restarts") or 0) if separate else 0.0,
    )


def _alert_families(node: NodeView) -> Iterator[Metric]:
    notices = CounterMetricFamily(
        "dnsfailover_notifications",
        "Notices per destination: delivered, failed (gave up), suppressed (rate limit), "
        "dropped (queue full)",
        labels=["destination", "result"],
    )
    retries = CounterMetricFamily(
        "dnsfailover_notification_retries",
        "Delivery retries per destination",
        labels=["destination"],
    )
    disabled = GaugeMetricFamily(
        "dnsfailover_notification_disabled",
        "1 for a destination that cannot send (e.g. its secret is missing)",
        labels=["destination"],
    )
    for st in node.alert_stats():
        for result in ("delivered", "failed", "suppressed", "dropped"):
            notices.add_metric([st.label, result], float(getattr(st, result)))
        retries.add_metric([st.label], float(st.retries))
        disabled.add_metric([st.label], 1.0 if st.disabled else 0.0)
    yield notices
    yield retries
    yield disabled


def _published_families(node: NodeView) -> Iterator[Metric]:
    answers = GaugeMetricFamily(
        "dnsfailover_name_answers",
        "Addresses a managed name answers now, per location group of a steered name "
        '(group="": the name\'s default answer, the only one of a name not steered)',
        labels=["zone", "name", "group"],
    )
    mode = GaugeMetricFamily(
        "dnsfailover_name_mode",
        "Mode of each managed name (healthy, degraded, all_down, no_data): 1 for the current",
        labels=["zone", "name", "group", "mode"],
    )
    failed_over = GaugeMetricFamily(
        "dnsfailover_name_failed_over",
        "1 while an active-passive name (or location group) answers from a tier other than "
        "its first: its primary tier is down or drained",
        labels=["zone", "name", "group"],
    )
    frozen = 0.0
    if node.published is not None:
        firsts = first_tiers(node.config)
        frozen = 1.0 if node.published.decision.frozen is not None else 0.0
        for key, nd in sorted(node.published.decision.names.items()):
            name, group = split_group(key)
            answers.add_metric([nd.zone, name, group], float(len(nd.answer)))
            for m in MODES:
                mode.add_metric([nd.zone, name, group, m], 1.0 if nd.mode == m else 0.0)
            first = firsts.get(key)
            if first is not None:
                off = nd.tier is not None and nd.tier != first
                failed_over.add_metric([nd.zone, name, group], 1.0 if off else 0.0)
    yield answers
    yield mode
    yield failed_over
    yield GaugeMetricFamily(
        "dnsfailover_circuit_breaker_frozen",
        "1 while the circuit breaker holds every answer (too many failovers at once); "
        "release it with `dnsfailover reset-breaker` once the cause is understood",
        value=frozen,
    )
    overrides = GaugeMetricFamily(
        "dnsfailover_overrides_active", "Operator overrides in force, by action", labels=["action"]
    )
    counts: dict[str, int] = {}
    for o in node.overrides():
        counts[o.action.value] = counts.get(o.action.value, 0) + 1
    for action, n in sorted(counts.items()):
        overrides.add_metric([action], float(n))
    yield overrides
    in_sync = GaugeMetricFamily(
        "dnsfailover_provider_in_sync",
        "1 when the external provider's zone matches the latest decision",
        labels=["zone"],
    )
    calls = CounterMetricFamily(
        "dnsfailover_provider_calls", "Provider API calls made by applies", labels=["zone"]
    )
    held = GaugeMetricFamily(
        "dnsfailover_provider_held_record_sets",
        "Record sets of the latest decision held back from the provider (a conflict, a "
        "foreign record set, an interlock); see the status for why",
        labels=["zone"],
    )
    for zone, status in sorted(node.sync_statuses().items()):
        in_sync.add_metric([zone], 1.0 if status.in_sync else 0.0)
        calls.add_metric([zone], float(status.calls))
        held.add_metric([zone], float(len(status.held)))
    yield in_sync
    yield calls
    yield held


def _dns_families(node: NodeView) -> Iterator[Metric]:
    rcodes = node.dns_counts()
    queries = CounterMetricFamily(
        "dnsfailover_dns_responses",
        "DNS responses sent by this process's embedded server, by rcode",
        labels=["rcode"],
    )
    dropped = CounterMetricFamily(
        "dnsfailover_dns_dropped",
        "DNS queries answered with nothing (unparseable, or dropped by rate limiting)",
    )
    if rcodes is not None:
        counts = list(rcodes)
        for i, name in enumerate(RCODES):
            if counts[i] or i in (0, 3, 5, 2):
                queries.add_metric([name], float(counts[i]))
        dropped.add_metric([], float(counts[len(RCODES)]))
    yield queries
    yield dropped
    steered = CounterMetricFamily(
        "dnsfailover_dns_steered_queries",
        "Queries of steered names this process's embedded server answered, per location "
        "group the client was placed in",
        labels=["name", "group"],
    )
    for (name, group), count in sorted(node.dns_steered_queries().items()):
        steered.add_metric([name, group], float(count))
    yield steered


def _cluster_families(node: NodeView) -> Iterator[Metric]:
    status: Mapping[str, Any] = node.cluster_status()
    leader = GaugeMetricFamily(
        "dnsfailover_cluster_leader",
        "1 when this node is the cluster's leader (or runs alone)",
        labels=["node", "region", "mode"],
    )
    is_leader = status.get("leader")
    leader.add_metric(
        [str(status.get("node")), str(status.get("region")), str(status.get("mode"))],
        1.0 if is_leader or is_leader is None else 0.0,
    )
    yield leader
    isolated = GaugeMetricFamily(
        "dnsfailover_region_isolated",
        "1 for a region flagged isolated (its results do not vote)",
        labels=["region"],
    )
    # Both always described (no samples on a single node), so dashboards and rules that
    # name them check out against any node's scrape.
    failures = CounterMetricFamily(
        "dnsfailover_cluster_publish_failures",
        "Decisions the leader could not write to etcd (each is retried with backoff)",
        labels=["node"],
    )
    publishing = GaugeMetricFamily(
        "dnsfailover_cluster_degraded",
        "1 while this node is degraded (etcd unreachable, or its decision not published)",
        labels=["node"],
    )
    if status.get("mode") == "cluster":
        node_id = str(status.get("node"))
        failures.add_metric([node_id], float(status.get("publish_failures", 0)))
        publishing.add_metric([node_id], 1.0 if status.get("degraded") else 0.0)
    yield failures
    yield publishing
    flagged = set(status.get("isolated_regions") or ())
    for region in sorted(set(node.config.regions) | flagged | {node.region}):
        isolated.add_metric([region], 1.0 if region in flagged else 0.0)
    yield isolated
