"""Notifications against real receivers: an aiohttp webhook on loopback and SNS on moto's
server (delivered to a real SQS queue and read back).  Nothing under test is mocked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from aiohttp import web
from blockbuster import BlockBuster, blockbuster_ctx
from pydantic import ValidationError

from dnsfailover.alerts import Alerter, Notice, NotificationsConfig
from dnsfailover.config.load import loads
from dnsfailover.engine.values import Transition
from dnsfailover.errors import ConfigError
from dnsfailover.model import HealthChange, State
from dnsfailover.provider.sync import SyncEvent

SECRET = "s3cr3t-hmac-key-7f1c9e"
SECRET_ENV = "DNSFAILOVER_TEST_WEBHOOK_KEY"
URL_TOKEN = "T0KEN-in-the-path-91"
FAST_RETRY = {"attempts": 3, "backoff": "10ms", "max_backoff": "50ms"}


def verify(secret: bytes, headers: Mapping[str, str], body: bytes, tolerance: int = 300) -> bool:
    """The receiver-side check, exactly as docs/notifications.md tells users to write it."""
    timestamp = headers.get("X-Dnsfailover-Timestamp", "")
    signature = headers.get("X-Dnsfailover-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False  # missing, or too old / too far ahead: a possible replay
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(signature, "sha256=" + mac.hexdigest())


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110 - counters, not events
            await asyncio.sleep(0.01)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class Receiver:
    """A webhook endpoint: answers `script` statuses in turn (then 200), or hangs."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    hang: bool = False
    got: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, limit: float = 5.0) -> list[Received]:
        await until(lambda: len(self.got) >= count, limit)
        return self.got


async def _receiver(path: str = f"/hooks/{URL_TOKEN}") -> AsyncIterator[Receiver]:
    receiver = Receiver()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(SECRET.encode(), request.headers, body)
        receiver.got.append(Received(dict(request.headers), body, ok))
        if receiver.hang:
            await receiver.release.wait()
        status = receiver.script.pop(0) if receiver.script else 200
        return web.Response(status=status if ok else 401, text="thanks\n")

    app = web.Application()
    app.router.add_post(path, hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}{path}?token={URL_TOKEN}"
    try:
        yield receiver
    finally:
        receiver.release.set()
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for r in _receiver():
        yield r


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET_ENV


@pytest.fixture
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx(["dnsfailover"]) as bb:
        yield bb


def notifications(*webhooks: dict[str, Any], **extra: Any) -> NotificationsConfig:
    return NotificationsConfig.model_validate({"webhooks": list(webhooks), **extra})


def webhook(url: str, **fields: Any) -> dict[str, Any]:
    return {"url": url, "secret_env": SECRET_ENV, "retry": FAST_RETRY, **fields}


def failover(at: float = 1_700_000_000.0) -> Notice:
    t = Transition(
        name="api.example.test.",
        at=at,
        kind="failover",
        old=("192.0.2.1",),
        new=("198.51.100.1",),
        reason="tier primary below min_healthy (0/1 up)",
    )
    return Notice.from_transition(t)


def health(i: int) -> Notice:
    change = HealthChange(f"web/192.0.2.{i}:80", None, State.UP, State.DOWN, 1e9, "HTTP 503")
    return Notice.from_health(change)


async def running(config: NotificationsConfig, **kwargs: Any) -> Alerter:
    alerter = Alerter(config, **kwargs)
    await alerter.start()
    return alerter


# -- webhooks -------------------------------------------------------------------------------


async def test_webhook_gets_signed_json(
    receiver: Receiver, secret_env: str, blockbuster: BlockBuster
) -> None:
    alerter = await running(notifications(webhook(receiver.url)), node="node-a")
    alerter.emit(failover())
    (got,) = await receiver.wait_for(1)
    await alerter.stop()
    assert got.verified, got.headers
    assert not verify(b"another key", got.headers, got.body)
    assert not verify(SECRET.encode(), got.headers, got.body + b" ")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Dnsfailover-Event"] == "failover"
    assert got.json == {
        "kind": "failover",
        "subject": "api.example.test.",
        "message": "failover api.example.test.: 192.0.2.1 -> 198.51.100.1: "
        "tier primary below min_healthy (0/1 up)",
        "at": 1_700_000_000.0,
        "time": "2023-11-14T22:13:20.000Z",
        "severity": "warning",
        "data": {
            "name": "api.example.test.",
            "old": ["192.0.2.1"],
            "new": ["198.51.100.1"],
            "reason": "tier primary below min_healthy (0/1 up)",
        },
        "node": "node-a",
    }
    (stats,) = alerter.stats()
    port = urlsplit(receiver.url).port
    assert (stats.label, stats.delivered, stats.failed) == (f"webhook 127.0.0.1:{port}", 1, 0)


async def test_secret_file_signs_too(receiver: Receiver, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")
    config = notifications({"url": receiver.url, "secret_file": str(key), "retry": FAST_RETRY})
    alerter = await running(config)
    alerter.emit(failover())
    (got,) = await receiver.wait_for(1)
    await alerter.stop()
    assert got.verified


@pytest.mark.parametrize("script", [[500], [503, 502], [429]])
async def test_webhook_retries_server_errors_then_delivers(
    receiver: Receiver, secret_env: str, script: list[int]
) -> None:
    receiver.script = list(script)
    alerter = await running(notifications(webhook(receiver.url)))
    alerter.emit(failover())
    got = await receiver.wait_for(len(script) + 1)
    await alerter.stop()
    assert all(g.verified for g in got)
    # One delivery, tried again: same delivery id, signed afresh each time.
    assert len({g.headers["X-Dnsfailover-Delivery"] for g in got}) == 1
    (stats,) = alerter.stats()
    assert (stats.delivered, stats.retries, stats.failed) == (1, len(script), 0)


async def test_webhook_4xx_is_not_retried(receiver: Receiver, secret_env: str) -> None:
    receiver.script = [400]
    alerter = await running(notifications(webhook(receiver.url)))
    alerter.emit(failover())
    await receiver.wait_for(1)
    await asyncio.sleep(0.3)  # FAST_RETRY would have tried twice more by now
    await alerter.stop()
    assert len(receiver.got) == 1
    (stats,) = alerter.stats()
    assert (stats.delivered, stats.retries, stats.failed) == (0, 0, 1)


async def test_webhook_gives_up_after_the_attempts(receiver: Receiver, secret_env: str) -> None:
    receiver.script = [500] * 10
    alerter = await running(notifications(webhook(receiver.url)))
    alerter.emit(failover())
    await receiver.wait_for(3)
    await asyncio.sleep(0.2)
    await alerter.stop()
    assert len(receiver.got) == FAST_RETRY["attempts"]
    assert alerter.stats()[0].failed == 1


async def test_events_filter(receiver: Receiver, secret_env: str) -> None:
    failback = Notice.from_transition(
        Transition("api.example.test.", 1.0, "failback", ("b",), ("a",), "primary healthy 60s")
    )
    alerter = await running(notifications(webhook(receiver.url, events=["transition"])))
    for notice in (health(1), failback, health(2), failover()):
        alerter.emit(notice)
    got = await receiver.wait_for(2)
    await asyncio.sleep(0.1)
    await alerter.stop()
    assert [g.json["kind"] for g in got] == ["failback", "failover"]


async def test_a_storm_is_rate_limited_to_burst_plus_one_summary(
    receiver: Receiver, secret_env: str
) -> None:
    config = notifications(webhook(receiver.url), rate_limit={"burst": 5, "per": "1s"})
    alerter = await running(config)
    for i in range(100):
        alerter.emit(health(i))
    got = await receiver.wait_for(6)  # the summary comes with the next token, ~0.2 s on
    await asyncio.sleep(0.5)
    await alerter.stop()
    assert len(receiver.got) == 6
    assert [g.json["subject"] for g in got[:5]] == [f"web/192.0.2.{i}:80" for i in range(5)]
    summary = got[5].json
    assert summary["kind"] == "suppressed"
    assert summary["message"].startswith("95 notices suppressed in the last ")
    assert summary["message"].endswith("(rate limit 5 per 1s): 95 health")
    assert summary["data"]["suppressed"] == 95
    assert summary["severity"] == "warning"  # the worst of what was suppressed
    assert alerter.stats()[0].suppressed == 95


async def test_emit_never_waits_and_a_dead_webhook_delays_no_one(
    secret_env: str, blockbuster: BlockBuster
) -> None:
    async for hung in _receiver():
        async for healthy in _receiver():
            hung.hang = True
            config = notifications(
                webhook(hung.url, name="hung"),
                webhook(healthy.url, name="healthy"),
                rate_limit={"burst": 1000, "per": "1s"},
            )
            alerter = await running(config)
            started = time.perf_counter()
            for i in range(100):
                alerter.emit(health(i))
            elapsed = time.perf_counter() - started
            await healthy.wait_for(100, limit=10)
            assert len(hung.got) == 1  # stuck on the first one
            stopping = time.perf_counter()
            await alerter.stop(deadline=0.5)
            assert time.perf_counter() - stopping < 2.0
    assert elapsed < 0.5, elapsed
    stats = {s.label: s for s in alerter.stats()}
    assert stats["healthy"].delivered == 100
    assert stats["hung"].delivered == 0
    assert stats["hung"].dropped == 99  # still queued at the stop deadline


async def test_queue_full_drops_the_oldest(receiver: Receiver, secret_env: str) -> None:
    config = notifications(webhook(receiver.url), queue=10, rate_limit={"burst": 100})
    alerter = Alerter(config)  # not started: nothing drains the queue yet
    for i in range(25):
        alerter.emit(health(i))
    await alerter.start()
    got = await receiver.wait_for(10)
    await asyncio.sleep(0.1)
    await alerter.stop()
    assert [g.json["subject"] for g in got] == [f"web/192.0.2.{i}:80" for i in range(15, 25)]
    assert alerter.stats()[0].dropped == 15


async def test_secrets_never_reach_the_logs(
    receiver: Receiver, secret_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    receiver.script = [500, 400]
    config = notifications(
        webhook(receiver.url),
        webhook(f"http://127.0.0.1:{dead_port}/hooks/{URL_TOKEN}?token={URL_TOKEN}"),
        {"url": receiver.url, "secret_env": "DNSFAILOVER_TEST_UNSET_KEY"},
    )
    alerter = await running(config)
    alerter.emit(failover())
    await receiver.wait_for(2)
    await until(lambda: [s.failed for s in alerter.stats()[:2]] == [1, 1])
    await alerter.stop()
    stats = alerter.stats()
    assert (
        stats[2].disabled == "environment variable DNSFAILOVER_TEST_UNSET_KEY is not set or empty"
    )
    text = caplog.text
    assert "HTTP 400; not retryable" in text  # the errors themselves are logged
    assert "cannot connect" in text
    assert "DNSFAILOVER_TEST_UNSET_KEY is not set" in text
    assert SECRET not in text
    assert URL_TOKEN not in text


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ({"url": "ftp://h/x"}, "must be an http:// or https:// URL"),
        ({"url": "https://user:pw@h/x"}, "must not carry credentials"),
        ({"url": "https://h/x", "secret_env": "abc+/=KEYVALUE9"}, "NAME of an environment"),
        ({"url": "https://h/x", "secret_env": "A", "secret_file": "/k"}, "not both"),
        ({"url": "https://h/x", "secret": "inline"}, "Extra inputs are not permitted"),
        ({"url": "https://h/x", "events": ["nonsense"]}, "events"),
    ],
)
def test_webhook_config_is_validated(hook: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("+", r"\+")):
        NotificationsConfig.model_validate({"webhooks": [hook]})


def test_notifications_errors_name_the_file_line() -> None:
    text = (
        "zones:\n  example.test.:\n    provider: embedded\n"
        "    soa: {mname: ns1.example.test., rname: h.example.test.}\n"
        "    nameservers: [ns1.example.test.]\n"
        "notifications:\n  sns:\n    - topic_arn: not-an-arn\n"
    )
    with pytest.raises(ConfigError) as info:
        loads(text, "cfg.yaml")
    assert any(
        "cfg.yaml:8" in str(p) and "notifications.sns[0].topic_arn" in str(p)
        for p in info.value.problems
    ), info.value.problems


def test_notice_constructors_read_well() -> None:
    change = HealthChange("web/192.0.2.1:80", None, State.UP, State.DOWN, 5.0, "HTTP 503")
    assert Notice.from_health(change).message == "web/192.0.2.1:80 up -> down: HTTP 503"
    assert Notice.from_health(change).severity == "warning"
    event = SyncEvent("example.test.", "failed", "Throttling: rate exceeded", 7.0, 1.23456)
    notice = Notice.from_sync_event(event)
    assert (notice.kind, notice.severity, notice.subject) == (
        "provider_error",
        "error",
        "example.test.",
    )
    assert notice.message == "provider failed for example.test.: Throttling: rate exceeded"
    assert notice.data == {"zone": "example.test.", "result": "failed", "seconds": 1.235}
    all_down = Transition("www.example.test.", 1.0, "all_down", ("a",), ("a", "b"), "0/2 up")
    assert Notice.from_transition(all_down).severity == "critical"


# -- SNS (moto) -----------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def sns_to_sqs(endpoint: str, name: str) -> tuple[str, Any, str]:
    """A topic subscribed by a queue: (topic ARN, SQS client, queue URL)."""
    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=endpoint)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, sqs, queue_url


def read_queue(sqs: Any, queue_url: str, want: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(found) < want and time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        found += [json.loads(m["Body"]) for m in reply.get("Messages", [])]
    return found


async def test_sns_publishes_through_moto(moto_session: str, aws: None) -> None:
    topic, sqs, queue_url = await asyncio.to_thread(sns_to_sqs, moto_session, "dnsf-alerts")
    config = NotificationsConfig.model_validate(
        {"sns": [{"topic_arn": topic, "endpoint_url": moto_session, "retry": FAST_RETRY}]}
    )
    alerter = await running(config, node="node-b")
    long_name = "x" * 120 + ".example.test."
    alerter.emit(failover())
    alerter.emit(Notice("interlock", long_name, "drain refused: last healthy", 9.0, "warning"))
    with blockbuster_ctx(["dnsfailover"]):  # boto3 runs in a thread, off the loop
        await until(lambda: alerter.stats()[0].delivered >= 2)
    await alerter.stop()
    envelopes = await asyncio.to_thread(read_queue, sqs, queue_url, 2)
    assert [e["Subject"] for e in envelopes] == [
        "[warning] failover api.example.test.",
        ("[warning] interlock " + long_name)[:97] + "...",
    ]
    first = json.loads(envelopes[0]["Message"])
    assert (first["kind"], first["subject"], first["node"]) == (
        "failover",
        "api.example.test.",
        "node-b",
    )
    assert first["data"]["new"] == ["198.51.100.1"]
    assert envelopes[0]["MessageAttributes"]["severity"]["Value"] == "warning"
    assert alerter.stats()[0].label == "sns dnsf-alerts"


async def test_sns_unknown_topic_fails_without_retrying(
    moto_session: str, aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    arn = "arn:aws:sns:us-east-1:123456789012:dnsf-no-such-topic"
    config = NotificationsConfig.model_validate(
        {"sns": [{"topic_arn": arn, "endpoint_url": moto_session, "retry": FAST_RETRY}]}
    )
    alerter = await running(config)
    alerter.emit(failover())
    await until(lambda: alerter.stats()[0].failed >= 1)
    await alerter.stop()
    stats = alerter.stats()[0]
    assert (stats.delivered, stats.retries, stats.failed) == (0, 0, 1)
    assert "SNS NotFound" in caplog.text
    assert "testing" not in caplog.text  # no credential in any message
