"""/metrics: scraped over real HTTP from a live service, parsed as Prometheus does."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from api_support import API, WWW, A, B, C, D, Live, live_service
from prometheus_client.parser import text_string_to_metric_families

from dnsfailover.api.metrics import Metrics, key_labels
from dnsfailover.model import HealthChange, Observation, State
from dnsfailover.provider.sync import SyncEvent

ZONE = "example.test."
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == metric and want <= ls]
    assert found, f"no sample {metric}{labels}"
    return sum(found)


async def scrape(live: Live) -> Samples:
    async with live.http.get(live.base + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return parse(await r.text())


async def test_metrics_follow_probes_dns_queries_and_a_failure(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        b = {"check": "web", "endpoint": f"{B}:{live.endpoints.ports[B]}"}
        first = await scrape(live)
        assert value(first, "dnsfailover_probes_total", **b, result="ok") >= 1
        assert value(first, "dnsfailover_probe_duration_seconds_count", **b) >= 1
        assert value(first, "dnsfailover_endpoint_state", **b, quorum="", state="up") == 1
        assert value(first, "dnsfailover_endpoint_state", **b, state="down") == 0
        assert value(first, "dnsfailover_endpoint_region_state", **b, region="local",
                     state="up") == 1  # fmt: skip
        assert value(first, "dnsfailover_name_answers", zone=ZONE, name=WWW, group="") == 2

        before = value(first, "dnsfailover_dns_responses_total", rcode="NOERROR")
        for _ in range(5):
            assert await live.answer(WWW) == (A, B)
        assert await live.rcode("nothing.example.test.") == "NXDOMAIN"
        assert await live.rcode("www.elsewhere.test.") == "REFUSED"
        dns = await scrape(live)
        assert value(dns, "dnsfailover_dns_responses_total", rcode="NOERROR") == before + 5
        assert value(dns, "dnsfailover_dns_responses_total", rcode="NXDOMAIN") == 1
        assert value(dns, "dnsfailover_dns_responses_total", rcode="REFUSED") == 1

        await asyncio.to_thread(live.endpoints.stop, B)
        await live.until_answer(WWW, (A,))
        after = await scrape(live)
        assert value(after, "dnsfailover_probes_total", **b, result="failed") >= 2
        assert value(after, "dnsfailover_endpoint_state", **b, state="down") == 1
        assert value(after, "dnsfailover_health_transitions_total", **b, quorum="",
                     region="voted", to="down") == 1  # fmt: skip
        assert value(after, "dnsfailover_answer_changes_total", name=WWW, kind="answer") == 1
        assert value(after, "dnsfailover_name_mode", zone=ZONE, name=WWW, group="",
                     mode="degraded") == 1  # fmt: skip
        serial = value(after, "dnsfailover_zone_serial", zone="example.test.")
        status = await live.get("/api/v1/status")
        assert serial == status["zones"][0]["serial"]
        # From B's failure being detected to the new answer being served: well under a second.
        count = value(after, "dnsfailover_detection_to_publish_seconds_count")
        total = value(after, "dnsfailover_detection_to_publish_seconds_sum")
        assert count >= 1
        assert total / count < 1.0


def test_provider_events_count_applies_latency_errors_and_retries() -> None:
    m = Metrics()
    now = time.time()
    m.provider_event(SyncEvent("ext.test.", "failed", "Throttling", now, 0.4))
    m.provider_event(SyncEvent("ext.test.", "failed", "Throttling", now, 0.6))
    m.provider_event(SyncEvent("ext.test.", "applied", "2 changes", now, 1.5))
    m.provider_event(SyncEvent("ext.test.", "refused", "unsafe", now))
    s = parse(m.render(m.snapshot()).decode())
    assert value(s, "dnsfailover_provider_applies_total", zone="ext.test.", result="failed") == 2
    assert value(s, "dnsfailover_provider_applies_total", result="applied") == 1
    assert value(s, "dnsfailover_provider_applies_total", result="refused") == 1
    assert value(s, "dnsfailover_provider_apply_errors_total", zone="ext.test.") == 2
    assert value(s, "dnsfailover_provider_apply_retries_total", zone="ext.test.") == 2
    assert value(s, "dnsfailover_provider_apply_duration_seconds_count") == 3
    assert value(s, "dnsfailover_provider_apply_duration_seconds_sum") == pytest.approx(2.5)
    assert value(s, "dnsfailover_provider_apply_duration_seconds_bucket", le="0.5") == 1


def test_probe_histogram_buckets_and_separate_registries() -> None:
    one, two = Metrics(), Metrics()  # two services in one process must not collide
    for latency in (0.002, 0.02, 0.2, 20.0):
        one.probe(Observation("web@127.0.0.1:80", "eu", True, 0.0, latency, "200"), "web")
    one.probe(Observation("web@127.0.0.1:80", "eu", False, 0.0, 0.1, "refused"), "web")
    s = parse(one.render(one.snapshot()).decode())
    labels = {"endpoint": "127.0.0.1:80", "region": "eu", "check": "web"}
    assert value(s, "dnsfailover_probes_total", result="ok", **labels) == 4
    assert value(s, "dnsfailover_probes_total", result="failed", **labels) == 1
    assert value(s, "dnsfailover_probe_duration_seconds_bucket", le="0.0025", **labels) == 1
    assert value(s, "dnsfailover_probe_duration_seconds_bucket", le="0.25", **labels) == 4
    assert value(s, "dnsfailover_probe_duration_seconds_bucket", le="+Inf", **labels) == 5
    assert value(s, "dnsfailover_probe_duration_seconds_sum", **labels) == pytest.approx(20.322)
    assert "dnsfailover_probes_total{" not in two.render(two.snapshot()).decode()


def test_probe_hook_is_cheap() -> None:
    m = Metrics()
    observations = [
        Observation(f"web@127.0.{i // 250}.{i % 250}:80", "eu", i % 7 != 0, 0.0, 0.01, "200")
        for i in range(10_000)
    ]
    started = time.perf_counter()
    for obs in observations * 10:
        m.probe(obs, "web")
    per_probe = (time.perf_counter() - started) / 100_000
    assert per_probe < 20e-6  # measured ~0.4 µs; 10,000 probes/s would cost < 1% of a core


async def test_notifications_are_sent_on_a_failure_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service → alerter wiring: a real webhook receives the answer change."""
    import hashlib
    import hmac
    import json

    from aiohttp import web

    received: list[dict[str, object]] = []
    secret = "webhook-secret-0123456789"

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers["X-Dnsfailover-Timestamp"]
        mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        assert request.headers["X-Dnsfailover-Signature"] == "sha256=" + mac.hexdigest()
        received.append(json.loads(body))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("TEST_WEBHOOK_KEY", secret)
    extra = f"""\
notifications:
  webhooks:
    - {{url: "http://127.0.0.1:{port}/hook", secret_env: TEST_WEBHOOK_KEY,
        events: [transition, health]}}
"""
    try:
        async with live_service(tmp_path, extra=extra) as live:
            await asyncio.to_thread(live.endpoints.stop, B)
            await live.until_answer(WWW, (A,))
            for _ in range(100):
                if any(r["kind"] == "answer" and r["subject"] == WWW for r in received):
                    break
                await asyncio.sleep(0.05)
            change = next(r for r in received if r["kind"] == "answer")
            assert B in str(change["message"])
            assert any(r["kind"] == "health" for r in received)
            samples = await scrape(live)
            assert value(samples, "dnsfailover_notifications_total", result="delivered") >= 2
            assert value(samples, "dnsfailover_notifications_total", result="failed") == 0
    finally:
        await runner.cleanup()


async def test_failed_over_name_and_no_internal_keys_or_created_series(tmp_path: Path) -> None:
    """api (active-passive) answering from its backup tier is failed over; no label value
    is an internal key (check@address:port); no `_created` series."""
    async with live_service(tmp_path) as live:
        await live.until_answer(API, (C,))
        before = await scrape(live)
        labels = {"zone": ZONE, "name": API, "group": ""}
        assert value(before, "dnsfailover_name_failed_over", **labels) == 0
        assert value(before, "dnsfailover_circuit_breaker_frozen") == 0
        assert value(before, "dnsfailover_probe_process_problem") == 0
        assert not [
            k for k in before if k[0] == "dnsfailover_name_failed_over" and ("name", WWW) in k[1]
        ]  # active-active: no tiers to fail over from

        await asyncio.to_thread(live.endpoints.stop, C)
        await live.until_answer(API, (D,))
        after = await scrape(live)
        assert value(after, "dnsfailover_name_failed_over", **labels) == 1
        assert value(after, "dnsfailover_name_mode", **labels, mode="all_down") == 0
        assert value(after, "dnsfailover_health_transitions_total", check="web",
                     endpoint=f"{C}:{live.endpoints.ports[C]}", to="down") >= 1  # fmt: skip
        for (metric, ls), _v in after.items():
            assert not metric.endswith("_created"), metric
            for label, text in ls:
                assert "@" not in text, (metric, label, text)
                assert "#" not in text, (metric, label, text)


def test_a_records_own_quorum_is_a_label_not_part_of_the_endpoint() -> None:
    m = Metrics()
    key = "web@127.0.0.31:8080#quorum=all"
    m.health_change(HealthChange(key, None, State.UP, State.DOWN, time.time(), "2 failed"))
    s = parse(m.render(m.snapshot()).decode())
    voted = {"check": "web", "endpoint": "127.0.0.31:8080", "quorum": "all", "region": "voted"}
    assert value(s, "dnsfailover_health_transitions_total", **voted, to="down") == 1
    assert key_labels("web@[::1]:53") == ("web", "[::1]:53", "")


async def test_a_frozen_circuit_breaker_shows_in_the_metrics(tmp_path: Path) -> None:
    """Any one of the four endpoints going down (25% > 20%) trips the breaker."""
    extra = "policy:\n  circuit_breaker: {down_pct: 20, min_endpoints: 4}\n"
    async with live_service(tmp_path, extra=extra) as live:
        await live.until_answer(WWW, (A, B))
        assert value(await scrape(live), "dnsfailover_circuit_breaker_frozen") == 0
        await asyncio.to_thread(live.endpoints.stop, B)
        await live.until("/api/v1/status", lambda s: s["frozen"] is not None)
        frozen = await scrape(live)
        assert value(frozen, "dnsfailover_circuit_breaker_frozen") == 1
        b = f"{B}:{live.endpoints.ports[B]}"
        assert value(frozen, "dnsfailover_endpoint_state", endpoint=b, state="down") == 1
        assert await live.answer(WWW) == (A, B)  # held
