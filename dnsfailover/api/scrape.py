"""The metrics that describe a node's *current* state, read from it at scrape time (on the
event loop: `Metrics.snapshot`): endpoint health, answers, modes and states of names,
overrides, provider sync, DNS responses, the cluster and notifications.

A name's `dnsfailover_name_state` is the state the status page and `dnsfailover status`
show (see `states.py`): healthy, degraded, failed_over, all_down, no_data, one-hot.
`dnsfailover_name_mode` is kept as it was: the engine's mode of the serving tier (a name
failed over to a complete backup tier is "healthy" there).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dnsfailover.api.states import NAME_STATES, name_state
from dnsfailover.config.schema import ActivePassive, Config
from dnsfailover.engine.steering import decided, split_group
from dnsfailover.model import State

if TYPE_CHECKING:
    from dnsfailover.api.ports import NodeView
    from dnsfailover.engine.settings import FailoverRecord

RCODES = (
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15",
)  # fmt: skip
"""Index = the header's 4-bit rcode, as counted by `DnsServer.response_counts`."""
STATES = tuple(s.value for s in State)
MODES = ("healthy", "degraded", "all_down", "no_data")


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


def decided_records(config: Config) -> dict[str, FailoverRecord]:
    """Each decision name (a steered name's groups too) → the record it is decided by."""
    return config.derived(
        "metrics.decided_records", lambda c: {name: record for _o, name, record in decided(c)}
    )


def node_families(node: NodeView) -> Iterator[Metric]:
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
    yield from _worker_families(node.workers_status())
    yield from _published_families(node)
    yield from _dns_families(node)
    yield from _cluster_families(node)
    yield from _alert_families(node)
    yield from _dnssec_families(node.dnssec_status())


def _dnssec_families(zones: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    expiry = GaugeMetricFamily(
        "dnsfailover_dnssec_signature_expiry_timestamp_seconds",
        "When the first signature served in a signed zone expires (unix time): alert well "
        "before it, validators refuse the zone after it",
        labels=["zone"],
    )
    refresh = GaugeMetricFamily(
        "dnsfailover_dnssec_refresh_timestamp_seconds",
        "When the next signatures of a signed zone are due for re-signing (unix time)",
        labels=["zone"],
    )
    made = CounterMetricFamily(
        "dnsfailover_dnssec_signatures",
        "Signatures made for a zone since start (failovers, refreshes, builds)",
        labels=["zone"],
    )
    cpu = CounterMetricFamily(
        "dnsfailover_dnssec_signing_cpu_seconds",
        "CPU time spent making signatures for a zone since start",
        labels=["zone"],
    )
    problem = GaugeMetricFamily(
        "dnsfailover_dnssec_problem",
        "1 while a signed zone's signatures cannot be re-made in time (signing fails, or "
        "they are overdue): they are served until they expire",
        labels=["zone"],
    )
    key = GaugeMetricFamily(
        "dnsfailover_dnssec_key",
        "1 per key a signed zone publishes and signs with",
        labels=["zone", "tag", "role", "algorithm"],
    )
    for zone, found in sorted(zones.items()):
        expiry.add_metric([zone], float(found["next_expiry"]))
        refresh.add_metric([zone], float(found["next_refresh"]))
        made.add_metric([zone], float(found["signatures_made"]))
        cpu.add_metric([zone], float(found["signing_cpu_seconds"]))
        problem.add_metric([zone], 1.0 if found["problem"] else 0.0)
        for k in found["keys"]:
            key.add_metric([zone, str(k["tag"]), k["role"], k["algorithm"]], 1.0)
    yield from (expiry, refresh, made, cpu, problem, key)


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


def _worker_families(status: Mapping[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "dnsfailover_workers",
        "DNS processes `serve --workers` runs besides the main one (0 without --workers)",
        value=float(status["count"]),
    )
    yield GaugeMetricFamily(
        "dnsfailover_workers_alive",
        "Of dnsfailover_workers, those serving now (one that died is being started again)",
        value=float(status["alive"]),
    )
    yield CounterMetricFamily(
        "dnsfailover_worker_restarts",
        "Times a --workers process was started again after it died",
        value=float(status["restarts"]),
    )
    responses = CounterMetricFamily(
        "dnsfailover_worker_responses",
        "DNS responses a --workers process sent (its processes since start, as of its "
        "latest write: one per second); dnsfailover_dns_responses_total includes them",
        labels=["worker"],
    )
    for index, sent in enumerate(status.get("responses", ()), start=1):
        responses.add_metric([str(index)], float(sent))
    yield responses


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
        "The engine's mode of each managed name's serving tier (healthy, degraded, all_down, "
        "no_data): 1 for the current; a name failed over to a complete tier is healthy here, "
        "see dnsfailover_name_state",
        labels=["zone", "name", "group", "mode"],
    )
    state = GaugeMetricFamily(
        "dnsfailover_name_state",
        "State of each managed name as the status shows it (healthy, degraded, failed_over, "
        "all_down, no_data): 1 for the current",
        labels=["zone", "name", "group", "state"],
    )
    failed_over = GaugeMetricFamily(
        "dnsfailover_name_failed_over",
        "1 while an active-passive name (or location group) answers from a tier other than "
        "its first: its primary tier is down or drained",
        labels=["zone", "name", "group"],
    )
    frozen = 0.0
    if node.published is not None:
        config, decision = node.config, node.published.decision
        firsts = first_tiers(config)
        records = decided_records(config)
        health, active = node.tracker.states(), node.overrides()
        frozen = 1.0 if decision.frozen is not None else 0.0
        for key, nd in sorted(decision.names.items()):
            name, group = split_group(key)
            answers.add_metric([nd.zone, name, group], float(len(nd.answer)))
            for m in MODES:
                mode.add_metric([nd.zone, name, group, m], 1.0 if nd.mode == m else 0.0)
            record = records.get(key)
            if record is not None:
                ns = decision.state.names.get(key)
                now = name_state(config, key, record, nd, ns, health, active, words=False)[0]
                for st in NAME_STATES:
                    state.add_metric([nd.zone, name, group, st], 1.0 if now == st else 0.0)
            first = firsts.get(key)
            if first is not None:
                off = nd.tier is not None and nd.tier != first
                failed_over.add_metric([nd.zone, name, group], 1.0 if off else 0.0)
    yield answers
    yield mode
    yield state
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
        "DNS responses sent by the embedded server (every --workers process included), by rcode",
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
