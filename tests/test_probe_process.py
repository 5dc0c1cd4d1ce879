"""Probes in their own process (`checks.process`): a real child process probing real TCP
listeners on loopback, and the forwarding rule it relies on (pure logic, checked against the
real health tracker)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import BIN
from test_scheduler import closed_port, listeners, targets_for, tcp_check

from dnsfailover.checks.forward import Counts, Forwarder
from dnsfailover.checks.process import ProbeProcess
from dnsfailover.health.tracker import HealthTracker, Hysteresis
from dnsfailover.model import Observation, State, Target

__all__ = ["listeners"]  # the fixture

# -- the forwarding rule -------------------------------------------------------------------------

KEYS = ("a@127.0.0.1:1", "b@127.0.0.1:2")
RESULT = st.sampled_from(["ok", "fail", "unknown"])


@settings(max_examples=300, deadline=None)
@given(
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
    steps=st.lists(st.tuples(st.sampled_from(KEYS), RESULT), max_size=80),
)
def test_a_tracker_fed_what_is_forwarded_goes_through_the_same_states(
    rise: int, fall: int, steps: list[tuple[str, str]]
) -> None:
    """Fed every result, or only what the probe process sends (never refreshing), a tracker
    makes the same health changes at the same results, with the same reasons."""
    rules = {key: Hysteresis(rise, fall, 1.0) for key in KEYS}
    everything, forwarded = HealthTracker(rules), HealthTracker(rules)
    forwarder = Forwarder(refresh=float("inf"))
    for key in KEYS:
        forwarder.track(key, rise)
    for i, (key, result) in enumerate(steps):
        obs = Observation(
            key, "local", result == "ok", 1000.0 + i, 0.001, result, result == "unknown"
        )
        want = everything.observe(obs)
        got = forwarded.observe(obs) if forwarder.keep(obs, float(i)) else []
        assert got == want, (i, key, result)
        for k in KEYS:
            assert forwarded.state(k) is everything.state(k)
            assert forwarded.reason(k) == everything.reason(k)
        assert forwarded.unprobed().keys() == everything.unprobed().keys()


def test_a_target_that_stays_up_sends_rise_results_then_one_per_refresh() -> None:
    forwarder = Forwarder(refresh=1.0)
    forwarder.track(KEYS[0], 2)
    sent = [
        forwarder.keep(Observation(KEYS[0], "local", True, t / 10, 0.001, ""), t / 10)
        for t in range(30)  # 3 s of probes every 100 ms
    ]
    assert [t / 10 for t, kept in enumerate(sent) if kept] == [0.0, 0.1, 1.1, 2.1]  # rise, then 1/s


# -- the probe process ---------------------------------------------------------------------------


class Node:
    """What the node does with the probe process's output: a tracker, counts, beats."""

    def __init__(self, rules: Mapping[str, Hysteresis]) -> None:
        self.tracker = HealthTracker(rules)
        self.seen: list[Observation] = []
        self.counts: dict[str, Counts] = {}
        self.beats: list[float] = []
        self.drains: list[Mapping[str, Counts]] = []  # every `on_counts`, in order

    def observe(self, obs: Observation) -> None:
        self.seen.append(obs)
        self.tracker.observe(obs)

    def counted(self, counts: Mapping[str, Counts]) -> None:
        self.drains.append(counts)
        for key, c in counts.items():
            total = self.counts.setdefault(key, Counts())
            total.ok += c.ok
            total.failed += c.failed
            total.unknown += c.unknown

    def probes(self, ok: bool = True) -> int:
        return sum(c.ok if ok else c.failed for c in self.counts.values())

    def process(self, targets: Mapping[str, tuple[Target, object]]) -> ProbeProcess:
        return ProbeProcess(
            targets,  # type: ignore[arg-type]
            region="local",
            on_observation=self.observe,
            on_probing=self.beats.append,
            on_counts=self.counted,
        )


async def until(check: Callable[[], bool], seconds: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def rules_for(targets: Mapping[str, object]) -> dict[str, Hysteresis]:
    return {key: Hysteresis(2, 3, 0.1) for key in targets}


async def running(
    node: Node, targets: Mapping[str, tuple[Target, object]]
) -> tuple[ProbeProcess, Callable[[], Awaitable[None]]]:
    process = node.process(targets)
    await process.open()
    return process, process.stop


async def test_probes_run_in_a_child_and_only_what_matters_comes_back(
    listeners: list[tuple[str, int]],
) -> None:
    down = closed_port()
    targets = targets_for([*listeners, down], tcp_check(interval=0.1))
    down_key = Target("tcp", *down).key
    node = Node(rules_for(targets))
    process, stop = await running(node, targets)
    try:
        assert process.pid is not None
        assert process.pid != os.getpid()
        await process.run_round(2.0)
        # the cold round's results have reached the tracker when run_round returns
        assert {o.target for o in node.seen} == set(targets)
        assert node.tracker.state(down_key) is State.DOWN
        assert all(node.tracker.state(k) is State.UP for k in targets if k != down_key)
        started = time.monotonic()
        process.start()
        # counted: every probe of the 5 up targets (~10/s each) and of the closed port
        await until(lambda: node.probes() >= 5 * 20 and node.probes(ok=False) >= 10, 15)
        elapsed = time.monotonic() - started
        # sent: per up target, its cold result, `rise` (2) more, then one a second at most
        for key in targets:
            if key != down_key:
                sent = sum(1 for o in node.seen if o.target == key and o.ok)
                assert sent <= 1 + 2 + elapsed + 1, (key, sent, elapsed)
        # every failure is sent: the node sees them all
        assert sum(1 for o in node.seen if not o.ok) >= node.probes(ok=False) - 5
        assert node.beats
        assert time.time() - node.beats[-1] < 3.0  # beats every 100 ms: recent
    finally:
        await stop()


async def test_a_killed_endpoint_goes_down_through_the_child(
    listeners: list[tuple[str, int]],
) -> None:
    """An endpoint that stops listening is DOWN within 5x its detection time (3 x 100 ms)."""
    spare = socket.create_server(("127.0.0.1", 0))
    target = targets_for([spare.getsockname()[:2]], tcp_check(interval=0.1))
    (key,) = target
    node = Node(rules_for(target))
    process, stop = await running(node, target)
    try:
        await process.run_round(2.0)
        process.start()
        assert node.tracker.state(key) is State.UP
        spare.close()
        await until(lambda: node.tracker.state(key) is State.DOWN, 5 * 0.3 + 1.0)
        assert node.tracker.reason(key).startswith("3 consecutive failures")
    finally:
        spare.close()
        await stop()


async def test_a_reload_adds_and_removes_targets_in_the_child(
    listeners: list[tuple[str, int]],
) -> None:
    check = tcp_check(interval=0.1)
    first, second = targets_for(listeners[:1], check), targets_for(listeners[1:2], check)
    (key_a,), (key_b,) = first, second
    node = Node(rules_for(first | second))
    process, stop = await running(node, first)
    try:
        await process.run_round(2.0)
        process.start()
        staged = await process.stage_update(second)
        process.commit(staged)
        await process.run_round(2.0, only=[key_b])
        assert node.tracker.state(key_b) is State.UP
        # The first counts after the commit may hold probes from before it; the next ones
        # are all after it.
        after = len(node.drains) + 1
        await until(lambda: len(node.drains) >= after + 2, 5)
        for counts in node.drains[after:]:
            assert key_a not in counts  # no longer probed
            assert counts[key_b].ok >= 5  # probed every 100 ms
    finally:
        await stop()


async def test_a_dead_probe_process_is_restarted_and_says_so(
    listeners: list[tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    targets = targets_for(listeners[:2], tcp_check(interval=0.1))
    node = Node(rules_for(targets))
    process, stop = await running(node, targets)
    try:
        await process.run_round(2.0)
        process.start()
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: process.problem is not None, 5)
        assert "ended" in (process.problem or "")
        assert any(
            r.levelno == logging.ERROR and "probe process" in r.getMessage() for r in caplog.records
        )
        await until(lambda: process.problem is None and process.pid != first, 10)
        assert process.restarts == 1
        since = time.time()
        await until(lambda: bool(node.beats) and node.beats[-1] > since, 5)  # probing again
        # health was held meanwhile: nothing went DOWN
        assert all(node.tracker.state(k) is State.UP for k in targets)
    finally:
        await stop()


async def test_the_childs_log_records_are_logged_by_the_node(
    listeners: list[tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    targets = targets_for(listeners[:1], tcp_check(interval=0.1))
    node = Node(rules_for(targets))
    process, stop = await running(node, targets)
    pid = process.pid
    await process.run_round(2.0)
    process.start()
    await asyncio.sleep(0.3)
    await stop()
    # the child's scheduler logs its start and its stop; the node logs them as its own
    scheduler = [r for r in caplog.records if r.name == "dnsfailover.scheduler"]
    assert any(r.getMessage().startswith("start: targets=1") for r in scheduler)
    assert any(r.getMessage().startswith("stop: probes=") for r in scheduler)
    assert all(r.processName == "probes" for r in scheduler)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # it has exited (and been reaped)


# Imported by every Python process that `serve` starts with PYTHONPATH pointing at it: the
# first (serve itself) arms it for its children, which then exit as they start.
_CHILDREN_DIE = """\
import os
if os.environ.get("DNSFAILOVER_TEST_CHILDREN") == "die":
    os._exit(3)
os.environ["DNSFAILOVER_TEST_CHILDREN"] = "die"
"""


def test_serve_says_why_when_its_probe_process_cannot_start(tmp_path: Path) -> None:
    """A probe process that dies as it starts is a one-line error and exit 1, not a
    traceback out of the shutdown that follows."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_CHILDREN_DIE)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"checks:\n  tcp: {{type: tcp, port: {closed_port()[1]}, interval: 1s, timeout: 200ms}}\n"
        "zones:\n  example.test.:\n"
        "    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}\n"
        "    nameservers: [ns1.example.test.]\n"
        "    records: {ns1: {type: A, value: 127.0.0.1}}\n"
        "    failover:\n"
        "      www: {policy: active-active, check: tcp, endpoints: [127.0.0.1]}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DNSFAILOVER_TEST_CHILDREN"}
    done = subprocess.run(
        [str(BIN), "serve", str(config), "--dns", "127.0.0.1:0", "--api", "off",
         "--state", str(tmp_path / "s.db")],
        capture_output=True, text=True, timeout=60,
        env={**env, "PYTHONPATH": str(tmp_path / "site")},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "error: the probe process ended" in done.stderr
    assert "Traceback" not in done.stderr
