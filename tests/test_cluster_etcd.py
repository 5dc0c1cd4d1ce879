"""EtcdCluster against a real etcd: election, fencing, shared reports, decisions, outages."""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from etcd_support import Etcd, etcd  # noqa: F401 - the fixture

from dnsfailover.cluster.etcd import ClusterUnavailable
from dnsfailover.cluster.keys import Keys
from dnsfailover.cluster.node import EtcdCluster
from dnsfailover.cluster.types import NodeBeat, Published, RegionReport, SharedDecision
from dnsfailover.config.cluster import ClusterConfig
from dnsfailover.engine.overrides import Action, Override
from dnsfailover.model import State

T = TypeVar("T")


class Node:
    """An EtcdCluster and everything its callbacks told, as a service would keep it."""

    def __init__(self, config: ClusterConfig, name: str, region: str) -> None:
        self.name = name
        self.reports: dict[tuple[str, str], RegionReport] = {}  # (node, target)
        self.report_seen: dict[str, float] = {}  # reason → perf_counter when delivered
        self.gone: list[tuple[str, str]] = []
        self.beats: list[NodeBeat] = []
        self.decisions: list[SharedDecision] = []
        self.decision_seen: dict[float, float] = {}  # decision.at → perf_counter
        self.overrides: list[Override] = []
        self.leads: list[bool] = []
        self.links: list[bool] = []
        self.cluster = EtcdCluster(
            config, node=name, region=region, on_reports=self._on_reports,
            on_reports_gone=self._on_gone, on_beat=self.beats.append,
            on_decision=self._on_decision, on_overrides=self._on_overrides,
            on_leader=self.leads.append, on_connected=self.links.append,
        )  # fmt: skip

    def _on_reports(self, reports: list[RegionReport]) -> None:
        for r in reports:
            self.reports[(r.node, r.target)] = r
            self.report_seen.setdefault(r.reason, time.perf_counter())

    def _on_gone(self, node: str, region: str) -> None:
        self.gone.append((node, region))
        self.reports = {k: v for k, v in self.reports.items() if k[0] != node}

    def _on_decision(self, published: Published) -> None:
        decision = published.head
        self.decisions.append(decision)
        self.decision_seen.setdefault(decision.at, time.perf_counter())

    def _on_overrides(self, overrides: list[Override]) -> None:
        self.overrides = overrides


def config(endpoint: str) -> ClusterConfig:
    prefix = f"/dnsfailover/test-{uuid.uuid4().hex[:8]}"
    return ClusterConfig.model_validate(
        {"etcd": {"endpoints": [endpoint], "prefix": prefix, "timeout": 1.0}, "lease_ttl": 2}
    )


def report(node: str, target: str, reason: str, state: State = State.UP) -> RegionReport:
    return RegionReport(target, f"region-{node}", node, state, time.time(), reason)


async def until(check: Callable[[], bool], what: str, limit: float = 10.0) -> float:
    """Wait for `check()`; return how long it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            raise AssertionError(f"not within {limit} s: {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
async def nodes(etcd: Etcd) -> AsyncIterator[Callable[[int], Coroutine[Any, Any, list[Node]]]]:  # noqa: F811
    """Start N nodes on one prefix; fail the test on any exception that escapes a task."""
    started: list[Node] = []
    escaped: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: escaped.append(ctx))
    cfg = config(etcd.endpoint)

    async def start(n: int) -> list[Node]:
        group = [Node(cfg, f"n{len(started) + i}", f"region-n{len(started) + i}") for i in range(n)]
        for node in group:
            await node.cluster.start()
        started.extend(group)
        return group

    yield start
    for node in started:
        await node.cluster.stop()
    assert [ctx for ctx in escaped if not grpc_leftover(ctx)] == []


def grpc_leftover(ctx: dict[str, Any]) -> bool:
    """grpc's process-wide poller hands a call's last completion to whichever loop is
    running; for a call made on a loop that is closed by now (an earlier test's, or
    `other_loop`'s) that hand-over fails with 'Event loop is closed'.  One `serve` has one
    loop for its life, so this only exists in a test session with a loop per test; it is
    not an exception of ours."""
    exc = ctx.get("exception")
    return (
        str(ctx.get("message", "")).startswith("Exception in callback PollerCompletionQueue")
        and isinstance(exc, RuntimeError)
        and str(exc) == "Event loop is closed"
    )


@pytest.fixture
async def admin(etcd: Etcd) -> AsyncIterator[aetcd.Client]:  # noqa: F811
    host, port = etcd.endpoint.rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port), timeout=5) as client:
        yield client


def seen_by(group: list[Node], reason: str) -> bool:
    return all(reason in n.report_seen for n in group)


def decided(group: list[Node], at: float) -> bool:
    return all(at in n.decision_seen for n in group)


def leaders(group: list[Node]) -> list[Node]:
    return [n for n in group if n.cluster.leader]


def decision(node: Node, at: float, serial: int = 1) -> SharedDecision:
    assert node.cluster.term is not None
    return SharedDecision(term=node.cluster.term, leader=node.name, at=at,
                          extra={"serial": serial})  # fmt: skip


@pytest.fixture
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx(["dnsfailover"]) as bb:
        yield bb


async def test_one_leader_and_reports_reach_the_others_within_milliseconds(
    nodes: Callable[[int], Coroutine[Any, Any, list[Node]]], blockbuster: BlockBuster
) -> None:
    a, b, c = await nodes(3)
    await until(lambda: len(leaders([a, b, c])) == 1, "a leader")
    await asyncio.sleep(0.5)
    assert len(leaders([a, b, c])) == 1
    leader = leaders([a, b, c])[0]
    assert {n.cluster.leader_node for n in (a, b, c)} == {leader.name}
    assert [n.leads for n in (a, b, c) if n is not leader] == [[], []]

    latencies = []
    for i in range(30):
        sent = time.perf_counter()
        reason = f"r{i}"
        a.cluster.report([report("n0", "http@[2001:db8::1]:443", reason, State.DOWN)])
        await until(partial(seen_by, [b, c], reason), "report")
        latencies.append(max(b.report_seen[reason], c.report_seen[reason]) - sent)
        await asyncio.sleep(0.01)
    print(f"report→callback on both others: median {statistics.median(latencies) * 1000:.1f} ms,"
          f" max {max(latencies) * 1000:.1f} ms")  # fmt: skip
    assert statistics.median(latencies) < 0.05
    assert b.reports[("n0", "http@[2001:db8::1]:443")].state == State.DOWN
    assert not any(node == "n0" for node, _ in a.reports)  # no echo of its own reports

    a.cluster.beat(NodeBeat("n0", "region-n0", time.time(), time.time()))
    await until(lambda: any(beat.node == "n0" for beat in c.beats), "beat")


async def test_the_leaders_decision_reaches_all_and_a_follower_cannot_publish(
    nodes: Callable[[int], Coroutine[Any, Any, list[Node]]], admin: aetcd.Client
) -> None:
    group = await nodes(3)
    await until(lambda: len(leaders(group)) == 1, "a leader")
    leader = leaders(group)[0]
    follower = next(n for n in group if n is not leader)
    latencies = []
    for i in range(20):
        sent = time.perf_counter()
        assert await leader.cluster.publish(decision(leader, at=float(i), serial=100 + i))
        await until(partial(decided, group, float(i)), "decision")
        latencies.append(max(n.decision_seen[float(i)] for n in group) - sent)
    print(f"publish→on_decision on all: median {statistics.median(latencies) * 1000:.1f} ms")
    assert statistics.median(latencies) < 0.05
    assert all(n.cluster.last_decision == n.decisions[-1] for n in group)
    assert {n.decisions[-1].extra["serial"] for n in group} == {119}

    forged = SharedDecision(term=leader.cluster.term or 0, leader=follower.name, at=99.0)
    assert not await follower.cluster.publish(forged)
    assert await leader.cluster.still_leader()
    assert not await follower.cluster.still_leader()
    kv = await admin.get(f"{leader.cluster._keys.prefix}/decision".encode())
    assert kv is not None
    assert b'"serial":119' in kv.value


class LoopThread:
    """A second event loop in its own thread: a node whose process can be 'paused'."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def other_loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


async def test_a_deposed_leader_that_still_believes_it_leads_is_fenced(
    etcd: Etcd,  # noqa: F811
    admin: aetcd.Client,
    other_loop: LoopThread,
) -> None:
    cfg = config(etcd.endpoint)

    async def make() -> Node:
        node = Node(cfg, "old", "region-old")
        await node.cluster.start()
        return node

    old = await other_loop.run(make())
    await until(lambda: old.cluster.leader, "the first node leads")
    new = Node(cfg, "new", "region-new")
    await new.cluster.start()
    try:
        frozen, thaw = threading.Event(), threading.Event()

        async def paused_then_publish() -> tuple[bool, bool]:
            frozen.set()
            thaw.wait(10)  # the old leader's whole process stalls here (GC pause, SIGSTOP)
            believed = old.cluster.leader
            return believed, await old.cluster.publish(decision(old, at=1.0, serial=1))

        result = asyncio.ensure_future(other_loop.run(paused_then_publish()))
        await until(frozen.is_set, "the old leader is paused")
        leader_kv = await admin.get(f"{cfg.etcd.prefix}/leader".encode())
        await admin.revoke_lease(leader_kv.lease)  # its lease is gone, as after a long pause
        await until(lambda: new.cluster.leader, "the other node takes over")
        assert await new.cluster.publish(decision(new, at=2.0, serial=2))
        thaw.set()
        believed, published = await result
        assert believed
        assert not published
        await until(lambda: not old.cluster.leader and old.leads[-1:] == [False], "old steps down")
        await asyncio.sleep(0.2)
        assert new.cluster.last_decision is not None
        assert new.cluster.last_decision.at == 2.0
        assert new.cluster.leader
        assert not old.cluster.leader
    finally:
        await new.cluster.stop()
        await other_loop.run(old.cluster.stop())


async def test_a_stalled_node_loses_its_reports_and_leadership_then_rejoins(
    etcd: Etcd,  # noqa: F811
    other_loop: LoopThread,
) -> None:
    cfg = config(etcd.endpoint)

    async def make() -> Node:
        node = Node(cfg, "stalled", "region-s")
        await node.cluster.start()
        node.cluster.report([report("stalled", "tcp@192.0.2.7:80", "before")])
        return node

    stalled = await other_loop.run(make())
    await until(lambda: stalled.cluster.leader, "the first node leads")
    other = Node(cfg, "other", "region-o")
    await other.cluster.start()
    try:
        await until(lambda: ("stalled", "tcp@192.0.2.7:80") in other.reports, "report arrives")
        stall_started = time.monotonic()
        other_loop.loop.call_soon_threadsafe(time.sleep, 4.5)  # longer than the 2 s lease
        took = await until(lambda: other.cluster.leader, "takeover", limit=2 + 3 + 4.5)
        assert took < 2 + 2.0  # lease TTL + etcd's expiry granularity + slack
        assert ("stalled", "region-s") in other.gone
        assert ("stalled", "tcp@192.0.2.7:80") not in other.reports
        # Back from the stall: it must notice it lost, step down, and re-put its report.
        await until(lambda: time.monotonic() - stall_started > 4.5, "stall over", limit=6)
        await until(lambda: stalled.leads[-1:] == [False], "the stalled node steps down")
        await until(lambda: ("stalled", "tcp@192.0.2.7:80") in other.reports, "report re-put")
        await asyncio.sleep(0.3)
        assert other.cluster.leader
        assert not stalled.cluster.leader
    finally:
        await other.cluster.stop()
        await other_loop.run(stalled.cluster.stop())


async def test_leader_stop_hands_over_at_once_and_removes_its_reports(
    nodes: Callable[[int], Coroutine[Any, Any, list[Node]]],
) -> None:
    group = await nodes(3)
    await until(lambda: len(leaders(group)) == 1, "a leader")
    leader = leaders(group)[0]
    rest = [n for n in group if n is not leader]
    leader.cluster.report([report(leader.name, "dns@192.0.2.53:53", "up")])
    await until(lambda: all((leader.name, "dns@192.0.2.53:53") in n.reports for n in rest), "rep")
    await leader.cluster.stop()
    assert leader.leads[-1] is False
    took = await until(lambda: len(leaders(rest)) == 1, "a new leader", limit=2 + 3)
    assert took < 1.0  # the lease was revoked: no need to wait for its TTL
    # its reports went with its lease (delivered in the same watch batch or the next turn)
    gone = (leader.name, f"region-{leader.name}")
    await until(lambda: all(gone in n.gone for n in rest), "its reports gone", limit=2)


async def test_etcd_outage_keeps_the_last_decision_then_converges(
    nodes: Callable[[int], Coroutine[Any, Any, list[Node]]],
    etcd: Etcd,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dnsfailover.cluster")
    a, b = await nodes(2)
    await until(lambda: len(leaders([a, b])) == 1, "a leader")
    leader = leaders([a, b])[0]
    follower = b if leader is a else a
    assert await leader.cluster.publish(decision(leader, at=5.0, serial=5))
    await until(lambda: follower.cluster.last_decision is not None, "decision")

    etcd.stop()
    await until(lambda: a.links[-1:] == [False] and b.links[-1:] == [False], "degraded", 5)
    assert not a.cluster.connected
    assert not b.cluster.connected
    assert not await leader.cluster.publish(decision(leader, at=6.0, serial=6))
    with pytest.raises(ClusterUnavailable, match="unreachable"):
        await follower.cluster.put_override(
            Override("o1", Action.DRAIN, None, "192.0.2.1", None, "test", "me", time.time())
        )
    await until(lambda: not leader.cluster.leader, "leadership dropped after the TTL", 2 + 2)
    a.cluster.report([report(a.name, "http@192.0.2.9:80", "during-outage", State.DOWN)])
    await asyncio.sleep(1.5)  # several reconnect attempts
    for n in (a, b):
        assert n.cluster.last_decision is not None
        assert n.cluster.last_decision.at == 5.0
        assert n.cluster.degraded_since is not None
    # One warning per node and outage, not one per reconnect attempt.
    assert len([r for r in caplog.records if "unreachable (" in r.getMessage()]) == 2

    etcd.start()
    await until(lambda: a.links[-1:] == [True] and b.links[-1:] == [True], "reconnected", 10)
    await until(lambda: len(leaders([a, b])) == 1, "leadership re-established", 2 + 5)
    await until(lambda: (a.name, "http@192.0.2.9:80") in b.reports, "report re-put", 5)
    new_leader = leaders([a, b])[0]
    assert await new_leader.cluster.publish(decision(new_leader, at=7.0, serial=7))
    await until(lambda: all(n.cluster.last_decision.at == 7.0 for n in (a, b)  # type: ignore[union-attr]
                            ), "converged")  # fmt: skip
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_paused_etcd_is_detected_and_survived(
    nodes: Callable[[int], Coroutine[Any, Any, list[Node]]],
    etcd: Etcd,  # noqa: F811
) -> None:
    (a,) = await nodes(1)
    await until(lambda: a.cluster.leader, "leads")
    etcd.pause()
    try:
        await until(lambda: a.links[-1:] == [False], "degraded while etcd hangs", 5)
        await until(lambda: not a.cluster.leader, "no longer trusts its lease", 4)
    finally:
        etcd.resume()
    await until(lambda: a.links[-1:] == [True] and a.cluster.leader, "back and leading", 10)


async def test_overrides_are_shared_and_deleted(
    nodes: Callable[[int], Coroutine[Any, Any, list[Node]]],
) -> None:
    a, b = await nodes(2)
    o = Override("drain-1", Action.DRAIN, "www.example.test.", "192.0.2.1", None, "maint", "ops",
                 time.time())  # fmt: skip
    await a.cluster.put_override(o)
    await until(lambda: a.overrides == [o] and b.overrides == [o], "override everywhere")
    assert await b.cluster.delete_override("drain-1")
    await until(lambda: a.overrides == [] and b.overrides == [], "override gone everywhere")
    assert not await b.cluster.delete_override("drain-1")


async def test_start_returns_while_etcd_is_down_and_connects_when_it_comes(
    nodes: Callable[[int], Coroutine[Any, Any, list[Node]]],
    etcd: Etcd,  # noqa: F811
) -> None:
    etcd.stop()
    started = time.monotonic()
    (a,) = await nodes(1)
    assert time.monotonic() - started < 2.0
    assert a.links == [False]
    assert not a.cluster.connected
    a.cluster.report([report(a.name, "t@192.0.2.1:1", "early")])
    etcd.start()
    await until(lambda: a.links[-1:] == [True] and a.cluster.leader, "connected and leading")
    (b,) = await nodes(1)
    await until(lambda: (a.name, "t@192.0.2.1:1") in b.reports, "the early report was written")


def drain(override_id: str, why: str) -> Override:
    return Override(override_id, Action.DRAIN, "www.example.test.", "192.0.2.1", None, why,
                    "ops", 1.0)  # fmt: skip


async def test_a_node_joins_a_cluster_whose_prefix_is_past_grpcs_reply_limit(
    etcd: Etcd,  # noqa: F811
    admin: aetcd.Client,
) -> None:
    """A cluster of 10,000 names holds more under its prefix than one gRPC reply may carry
    (4 MB): the joining node reads it in pages, as of one revision, and sees all of it."""
    cfg = config(etcd.endpoint)
    keys = Keys(cfg.etcd.prefix)
    why = "maintenance window " * 50  # ~1 KB an override: 5,000 of them are ~5 MB
    t = admin.transactions
    for start in range(0, 5_000, 100):
        batch = [drain(f"o{i}", why) for i in range(start, start + 100)]
        await admin.transaction(
            compare=[], success=[t.put(keys.override(o.id), o.to_json().encode()) for o in batch],
            failure=[],
        )  # fmt: skip
    node = Node(cfg, "late", "region-late")
    await node.cluster.start()
    try:
        await until(lambda: node.links[-1:] == [True], "connected", 20)
        await until(lambda: len(node.overrides) == 5_000, "every override read", 20)
    finally:
        await node.cluster.stop()


async def test_a_decision_etcd_refuses_is_an_error_and_a_notification(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Any publish failure is an ERROR, counted, shown in status and notified (kind
    `cluster`), and so is its end: never only a log line."""
    from aiohttp import web

    from dnsfailover.config.load import load
    from dnsfailover.runtime.node import Node as ServiceNode

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server = Etcd(extra=("--max-request-bytes", "8192"))
    await asyncio.to_thread(server.start)
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", 0))
    big = ", ".join(
        f"{{address: 127.5.{i // 250}.{1 + i % 250}, check_address: 127.0.0.1}}" for i in range(400)
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        f"cluster:\n  etcd: {{endpoints: ['{server.endpoint}'], prefix: /refused}}\n"
        "  lease_ttl: 2\n"
        f"notifications:\n  webhooks:\n    - {{url: 'http://127.0.0.1:{hook_port}/hook', "
        "events: [cluster]}\n"
        f"checks:\n  tcp: {{type: tcp, port: {probe.getsockname()[1]}, interval: 100ms, "
        "timeout: 100ms, fall: 1, rise: 1}\n"
        "zones:\n  example.test.:\n"
        "    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}\n"
        "    nameservers: [ns1.example.test.]\n"
        "    records: {ns1: {type: A, value: 127.0.0.1}}\n"
        "    failover:\n"
        "      big: {policy: active-active, check: tcp, all_down: serve_none, "
        f"endpoints: [{big}]}}\n"
    )
    cfg = await asyncio.to_thread(load, path)
    node = ServiceNode(cfg, dns_port=0, state_path=tmp_path / "s.db", node_id="n1", api=None)
    try:
        await node.start()

        async def until_async(check: Callable[[], bool], what: str) -> None:
            async with asyncio.timeout(15):
                while not check():  # noqa: ASYNC110 - another process's state
                    await asyncio.sleep(0.05)

        await until_async(lambda: node.cluster_status()["leader"] is True, "leader")
        probe.listen(64)  # every endpoint up: `big`'s entry is more than etcd takes
        await until_async(lambda: any(r["kind"] == "cluster" for r in received), "notified")
        failed = next(r for r in received if r["kind"] == "cluster")
        assert failed["severity"] == "error"
        assert "not published" in failed["message"]
        errors = [
            r for r in caplog.records if r.levelname == "ERROR" and "not published" in r.message
        ]
        assert errors, "an ERROR, not a WARNING"
        assert "cannot publish" in (node.cluster_status()["degraded"] or "")
        assert node.cluster_status()["publish_failures"] >= 1
        assert sum(r["kind"] == "cluster" for r in received) == 1, "once per streak"

        probe.close()  # every endpoint down: the decision fits again
        await until_async(lambda: len([r for r in received if r["kind"] == "cluster"]) == 2, "ok")
        assert "publishing again" in received[-1]["message"]
        assert node.cluster_status()["degraded"] is None
    finally:
        probe.close()
        await node.stop()
        await runner.cleanup()
        await asyncio.to_thread(server.close)
