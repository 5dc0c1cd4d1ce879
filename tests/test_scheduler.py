"""ProbeScheduler against real TCP listeners on loopback."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from dnsfailover.checks.scheduler import ProbeScheduler, phase
from dnsfailover.config.checks import CheckConfig
from dnsfailover.model import Observation, Target

Targets = dict[str, tuple[Target, CheckConfig]]


def tcp_check(interval: float = 0.1, timeout: float = 0.05) -> CheckConfig:
    return CheckConfig(type="tcp", port=1, interval=interval, timeout=timeout)


def targets_for(addresses: list[tuple[str, int]], check: CheckConfig, name: str = "tcp") -> Targets:
    found: Targets = {}
    for address, port in addresses:
        target = Target(check=name, address=address, port=port)
        found[target.key] = (target, check)
    return found


class Recorder:
    """on_observation: keeps every observation with the loop time it arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, Observation]] = []

    def __call__(self, obs: Observation) -> None:
        self.seen.append((asyncio.get_running_loop().time(), obs))

    def count(self, key: str, since: float = 0.0) -> int:
        return sum(1 for t, o in self.seen if o.target == key and t >= since)

    def times(self, key: str) -> list[float]:
        return [t for t, o in self.seen if o.target == key]


@pytest.fixture
def listeners() -> Iterator[list[tuple[str, int]]]:
    """Five TCP servers on 127.0.0.1, accepting and closing in a thread of their own (so
    their work never shows up as tasks on the loop under test)."""
    servers = [socket.create_server(("127.0.0.1", 0), backlog=128) for _ in range(5)]
    selector = selectors.DefaultSelector()
    for server in servers:
        server.setblocking(False)
        selector.register(server, selectors.EVENT_READ)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for key, _events in selector.select(timeout=0.05):
                with contextlib.suppress(OSError):
                    conn, _peer = cast(socket.socket, key.fileobj).accept()
                    conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield [("127.0.0.1", s.getsockname()[1]) for s in servers]
    stop.set()
    thread.join()
    selector.close()
    for server in servers:
        server.close()


def closed_port() -> tuple[str, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return "127.0.0.1", port


def make(targets: Targets, recorder: Recorder, **kwargs: Any) -> ProbeScheduler:
    return ProbeScheduler(targets, region="eu", on_observation=recorder, **kwargs)


def assert_no_tasks_left() -> None:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


async def test_run_round_one_observation_per_target(listeners: list[tuple[str, int]]) -> None:
    down = closed_port()
    targets = targets_for([*listeners, down], tcp_check())
    recorder = Recorder()
    sched = make(targets, recorder, clock=lambda: 1234.5)
    observations = await sched.run_round(deadline=2.0)
    await sched.stop()
    assert sorted(o.target for o in observations) == sorted(targets)
    assert [o for _t, o in recorder.seen] == observations
    by_key = {o.target: o for o in observations}
    down_key = Target("tcp", *down).key
    assert not by_key[down_key].ok
    assert by_key[down_key].detail == "connection refused"
    assert all(o.ok for k, o in by_key.items() if k != down_key)
    assert {(o.region, o.at) for o in observations} == {("eu", 1234.5)}
    assert_no_tasks_left()


async def test_run_round_respects_deadline(
    listeners: list[tuple[str, int]], full_listener: tuple[str, int]
) -> None:
    targets = targets_for(listeners[:2], tcp_check())
    targets |= targets_for([full_listener], tcp_check(interval=5, timeout=3), name="slow")
    sched = make(targets, Recorder())
    started = time.monotonic()
    observations = await sched.run_round(deadline=0.3)
    assert time.monotonic() - started < 1.0
    await sched.stop()
    # the hung probe gave no observation: "no data" is not "down"
    assert sorted(o.target for o in observations) == sorted(targets_for(listeners[:2], tcp_check()))
    assert_no_tasks_left()


async def test_probes_every_interval(listeners: list[tuple[str, int]]) -> None:
    targets = targets_for(listeners[:3], tcp_check(interval=0.1))
    recorder = Recorder()
    sched = make(targets, recorder)
    sched.start()
    await asyncio.sleep(1.0)
    await sched.stop()
    for key in targets:
        assert 5 <= recorder.count(key) <= 15, (key, recorder.count(key))
    assert all(o.ok for _t, o in recorder.seen)
    assert sched.drift
    assert max(sched.drift) < 0.1
    stats = sched.stats
    assert stats.started == stats.finished
    assert 0 <= stats.finished - len(recorder.seen) <= len(targets)  # cancelled by stop()
    assert stats.in_flight == 0
    assert_no_tasks_left()


def test_phase_is_deterministic_and_spread() -> None:
    keys = [f"web@127.0.0.{i}:80" for i in range(1, 201)]
    phases = [phase(k) for k in keys]
    assert phases == [phase(k) for k in keys]
    assert all(0 <= p < 1 for p in phases)
    # 200 hashes land in every tenth of the interval
    assert {int(p * 10) for p in phases} == set(range(10))


async def test_targets_are_spread_over_the_interval(listeners: list[tuple[str, int]]) -> None:
    addresses = [(address, port) for address, port in listeners for _ in range(1)]
    addresses += [(f"127.0.0.{i}", listeners[0][1]) for i in range(2, 17)]  # 20 targets
    targets = targets_for(addresses, tcp_check(interval=0.5, timeout=0.2))
    recorder = Recorder()
    sched = make(targets, recorder)
    started = asyncio.get_running_loop().time()
    sched.start()
    await asyncio.sleep(0.49)
    await sched.stop()
    firsts = {key: recorder.times(key)[0] - started for key in targets if recorder.times(key)}
    assert len(firsts) >= 15  # nearly all probed in the first round
    spread = max(firsts.values()) - min(firsts.values())
    assert spread > 0.2, sorted(firsts.values())
    # and in phase order
    by_time = sorted(firsts, key=firsts.__getitem__)
    assert by_time == sorted(firsts, key=phase)


async def test_update_removes_adds_and_keeps(listeners: list[tuple[str, int]]) -> None:
    check = tcp_check(interval=0.1)
    a, b, c = (targets_for([x], check) for x in listeners[:3])
    (key_a,), (key_b,), (key_c,) = a, b, c
    recorder = Recorder()
    sched = make(a | b, recorder)
    sched.start()
    await asyncio.sleep(0.35)
    before_b = recorder.times(key_b)
    sched.update(b | c)
    changed_at = asyncio.get_running_loop().time()
    await asyncio.sleep(0.5)
    await sched.stop()
    assert recorder.count(key_a) >= 2
    assert recorder.count(key_a, since=changed_at) == 0  # stopped at once
    assert recorder.count(key_c, since=changed_at) >= 3  # started
    after_b = [t for t in recorder.times(key_b) if t >= changed_at]
    assert len(after_b) >= 3
    # b kept its schedule: no extra probe, no gap, across the update
    gaps = [y - x for x, y in zip(before_b[-1:] + after_b, after_b, strict=False)]
    assert all(0.05 < g < 0.15 for g in gaps), gaps
    assert_no_tasks_left()


async def test_update_with_changed_check_and_empty(listeners: list[tuple[str, int]]) -> None:
    recorder = Recorder()
    sched = make(targets_for(listeners[:1], tcp_check(interval=0.1)), recorder)
    sched.start()
    await asyncio.sleep(0.15)
    # same key, new interval: restarts under the new check
    sched.update(targets_for(listeners[:1], tcp_check(interval=0.2, timeout=0.1)))
    mark = asyncio.get_running_loop().time()
    await asyncio.sleep(0.65)
    slow = len([t for t, _o in recorder.seen if t >= mark])
    assert 2 <= slow <= 5, slow
    sched.update({})
    mark = asyncio.get_running_loop().time()
    await asyncio.sleep(0.25)
    assert not [t for t, _o in recorder.seen if t >= mark]
    await sched.stop()
    assert_no_tasks_left()


async def test_hanging_target_does_not_delay_others(
    listeners: list[tuple[str, int]], full_listener: tuple[str, int]
) -> None:
    targets = targets_for(listeners[:3], tcp_check(interval=0.1))
    slow = targets_for([full_listener], tcp_check(interval=0.5, timeout=0.4), name="slow")
    (slow_key,) = slow
    recorder = Recorder()
    sched = make(targets | slow, recorder, max_in_flight=2)
    sched.start()
    await asyncio.sleep(1.0)
    await sched.stop()  # also cancels the hung probe in flight
    for key in targets:
        assert recorder.count(key) >= 6, (key, recorder.count(key))
    slow_obs = [o for _t, o in recorder.seen if o.target == slow_key]
    assert slow_obs
    assert {o.detail for o in slow_obs} == {"timeout after 0.4s"}
    assert_no_tasks_left()


async def test_stop_cancels_in_flight_and_pending(full_listener: tuple[str, int]) -> None:
    targets = targets_for([full_listener], tcp_check(interval=1.0, timeout=0.9))
    recorder = Recorder()
    sched = make(targets, recorder)
    sched.start()
    async with asyncio.timeout(1.5):  # its phase comes within one interval
        while sched.stats.in_flight == 0:  # noqa: ASYNC110 (a counter, not an event)
            await asyncio.sleep(0.01)
    started = time.monotonic()
    await sched.stop()
    assert time.monotonic() - started < 0.2
    assert recorder.seen == []
    assert_no_tasks_left()


async def test_failing_callback_does_not_stop_probing(
    listeners: list[tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    calls: collections.Counter[str] = collections.Counter()

    def broken(obs: Observation) -> None:
        calls[obs.target] += 1
        raise RuntimeError("subscriber bug")

    targets = targets_for(listeners[:2], tcp_check(interval=0.1))
    sched = ProbeScheduler(targets, region="eu", on_observation=broken)
    sched.start()
    await asyncio.sleep(0.5)
    await sched.stop()
    assert all(calls[key] >= 3 for key in targets), calls
    assert "on_observation failed" in caplog.text
    assert_no_tasks_left()


async def test_http_targets_get_a_session_that_stop_closes() -> None:
    from aiohttp import web

    async def root(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", root)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        check = CheckConfig(type="http", interval=1, timeout=0.5)
        target = Target(check="web", address="127.0.0.1", port=port)
        sched = ProbeScheduler({target.key: (target, check)}, region="eu", on_observation=print)
        (obs,) = await sched.run_round(deadline=1.0)
        await sched.stop()
    finally:
        await runner.cleanup()
    assert obs.ok, obs
    assert obs.detail == "HTTP 200"


async def test_concurrency_is_bounded_and_survives_cancellation(
    listeners: list[tuple[str, int]], full_listener: tuple[str, int]
) -> None:
    check = tcp_check(interval=5, timeout=0.3)
    slow: Targets = {}
    for i in range(4):
        slow |= targets_for([full_listener], check, name=f"slow{i}")
    sched = make(slow, Recorder(), max_in_flight=2)
    started = time.monotonic()
    observations = await sched.run_round(deadline=3.0)
    elapsed = time.monotonic() - started
    assert len(observations) == 4
    assert {o.detail for o in observations} == {"timeout after 0.3s"}
    assert 0.55 < elapsed < 1.5  # two waves of two, not one wave of four
    # cut a round short while probes wait for a slot: the slots must all come back
    assert await sched.run_round(deadline=0.1) == []
    assert sched.stats.in_flight == 0
    sched.update(targets_for(listeners, tcp_check()))
    observations = await sched.run_round(deadline=1.0)
    assert len(observations) == len(listeners)
    assert all(o.ok for o in observations)
    await sched.stop()
    assert_no_tasks_left()


async def test_probes_leave_from_the_region_source_address() -> None:
    """A region's `source_address`: tcp and http targets both see the configured source."""
    from aiohttp import web

    seen: list[tuple[str, str]] = []

    async def root(request: web.Request) -> web.Response:
        seen.append(("http", str(request.remote)))
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", root)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    web_sock = socket.socket()
    web_sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, web_sock).start()
    tcp_sock = socket.create_server(("127.0.0.1", 0), backlog=16)
    web_target = Target(check="web", address="127.0.0.1", port=web_sock.getsockname()[1])
    tcp_target = Target(check="tcp", address="127.0.0.1", port=tcp_sock.getsockname()[1])
    targets: Targets = {
        web_target.key: (web_target, CheckConfig(type="http", interval=1, timeout=0.5)),
        tcp_target.key: (tcp_target, tcp_check(interval=1, timeout=0.5)),
    }
    try:
        sched = make(targets, Recorder(), source_address="127.0.0.42")
        observations = await sched.run_round(deadline=2.0)
        await sched.stop()
        tcp_sock.settimeout(2)
        conn, peer = tcp_sock.accept()
        conn.close()
        seen.append(("tcp", peer[0]))
    finally:
        tcp_sock.close()
        await runner.cleanup()
    assert sorted((o.target, o.ok) for o in observations) == sorted(
        [(web_target.key, True), (tcp_target.key, True)]
    )
    assert sorted(seen) == [("http", "127.0.0.42"), ("tcp", "127.0.0.42")]


async def test_a_stop_as_a_round_is_due_logs_no_error(
    listeners: list[tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    """A busy loop can run APScheduler's wake-up (which hands the round's tick to a task)
    and `stop` in one iteration: the tick must not be cancelled into an ERROR with a
    traceback ("Error running job") at every shutdown of a busy node."""
    caplog.set_level(logging.INFO)
    sched = make(targets_for(listeners[:1], tcp_check(interval=0.2)), Recorder())
    sched.start()
    loop = asyncio.get_running_loop()
    aps = sched._aps
    assert aps is not None
    due = aps.get_jobs()[0].next_run_time.timestamp() - time.time() + loop.time()
    # The loop blocked across the tick's time; then, in one iteration, what wakes the stop
    # runs first and APScheduler's wake-up second (it makes the tick's task): the stop runs
    # before that task does.
    woken = asyncio.Event()
    loop.call_at(due - 0.02, time.sleep, 0.12)
    loop.call_at(due - 0.005, woken.set)
    await woken.wait()
    await sched.stop()
    await asyncio.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
