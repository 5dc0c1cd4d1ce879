"""systemd's notify protocol, for real: the test binds the unix datagram socket systemd would
($NOTIFY_SOCKET), runs `dnsfailover serve` as a subprocess, and reads what it is told.

READY=1 comes only once the first decision is published and the DNS server answers (the
first probe is held open by the test meanwhile), WATCHDOG=1 keeps coming from the engine loop
and stops when that loop wedges, RELOADING=1 .. READY=1 bracket a reload, STOPPING=1 comes
on SIGTERM, and nothing is sent without $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest
from api_support import API, C, D, Live, live_service
from support import BIN

from dnsfailover.runtime.node import Node
from dnsfailover.runtime.systemd import (
    Notifier,
    Supervision,
    Supervisor,
    notify_address,
    status_line,
    watchdog_interval,
)

TOKEN = "notify-test-token-0123456789"
ADDRESS = "127.0.0.81"
ETCD_AWAY = "etcd unreachable: serving the last published decision"  # cluster_link.py's


class NotifySocket:
    """The socket systemd listens on: a path, or an abstract name ("@...")."""

    def __init__(self, where: Path | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if where is None:
            self.env = f"@dnsfailover-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + self.env[1:])
        else:
            self.env = str(where)
            self.sock.bind(self.env)
        self.seen: list[dict[str, str]] = []  # every datagram, as its assignments

    def _take(self, block: float | None) -> dict[str, str] | None:
        self.sock.settimeout(block)
        try:
            data = self.sock.recv(4096)
        except (TimeoutError, BlockingIOError):
            return None
        message = dict(line.split("=", 1) for line in data.decode().split("\n"))
        self.seen.append(message)
        return message

    def drain(self) -> list[dict[str, str]]:
        """What has arrived so far, without waiting."""
        got = []
        while (message := self._take(0)) is not None:
            got.append(message)
        return got

    def until(self, want: Callable[[dict[str, str]], bool], limit: float = 60) -> dict[str, str]:
        """Read until a datagram `want`s; fails the test after `limit` seconds."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            message = self._take(0.2)
            if message is not None and want(message):
                return message
        raise AssertionError(f"not told within {limit}s; told: {self.seen}")

    def close(self) -> None:
        self.sock.close()


def has(key: str, value: str = "1") -> Callable[[dict[str, str]], bool]:
    return lambda m: m.get(key) == value


@pytest.fixture
def notify_path(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify")
    yield s
    s.close()


class GatedEndpoint:
    """An HTTP health endpoint whose answers wait until `release()`."""

    def __init__(self, address: str) -> None:
        self.gate, self.hit = threading.Event(), threading.Event()
        gate, hit = self.gate, self.hit

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hit.set()
                gate.wait(60)
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gated() -> Iterator[GatedEndpoint]:
    ep = GatedEndpoint(ADDRESS)
    yield ep
    ep.close()


def write_config(tmp_path: Path, port: int) -> Path:
    """One name on one endpoint, probed every 30 s: the test holds the first probe open (the
    first decision waits for it up to its timeout)."""
    path = tmp_path / "config.yaml"
    path.write_text(f"""\
checks:
  web: {{type: http, path: /healthz, interval: 30s, timeout: 30s, rise: 1, fall: 1}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www:
        policy: active-active
        check: web
        endpoints: [{{address: {ADDRESS}, check_port: {port}}}]
""")
    return path


def start_serve(tmp_path: Path, config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`serve` as systemd starts it; `sh -c 'WATCHDOG_PID=$$ exec ...'` keeps the pid, so
    WATCHDOG_PID names the service's own process, as systemd sets it."""
    argv = [str(BIN), "serve", str(config), "--dns", "127.0.0.1:0", "--api", "127.0.0.1:0",
            "--state", str(tmp_path / "state.db")]  # fmt: skip
    own = "WATCHDOG_USEC" in env and "WATCHDOG_PID" not in env
    command = 'WATCHDOG_PID=$$ exec "$@"' if own else 'exec "$@"'
    with (tmp_path / "serve.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            ["/bin/sh", "-c", command, "sh", *argv],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **env},
        )


def addresses(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """The DNS port and API base URL from serve's first line."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    dns_port = re.search(r"on 127\.0\.0\.1:(\d+)", line)
    api = re.search(r"api (http://[^\s,]+)", line)
    assert dns_port is not None, line
    assert api is not None, line
    return int(dns_port.group(1)), api.group(1)


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def dns_responses(api: str) -> float:
    with urllib.request.urlopen(api + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dnsfailover_dns_responses_total{")
    )


def test_serve_is_ready_after_its_first_decision_answers_feeds_the_watchdog_and_stops(
    tmp_path: Path, notify_path: NotifySocket, gated: GatedEndpoint
) -> None:
    env = {
        "NOTIFY_SOCKET": notify_path.env,
        "WATCHDOG_USEC": "400000",  # fed every 0.2 s
        "DNSFAILOVER_API_TOKEN": TOKEN,
    }
    proc = start_serve(tmp_path, write_config(tmp_path, gated.port), env)
    try:
        starting = notify_path.until(lambda m: m.get("STATUS", "").startswith("starting"))
        assert "READY" not in starting
        # The process runs and probes, but its first decision waits for that probe.
        assert gated.hit.wait(60), (tmp_path / "serve.log").read_text()
        held = notify_path.drain()
        assert not [m for m in notify_path.seen if "READY" in m or "WATCHDOG" in m], held
        gated.release()
        ready = notify_path.until(has("READY"))
        assert ready["STATUS"] == "serving 1 name(s) in 1 zone(s): 1 healthy"
        dns_port, api = addresses(proc)
        # The server answered a query before READY=1: its own (the test has sent none).
        assert dns_responses(api) >= 1
        q = dns.message.make_query("www.example.test.", "A")
        r = dns.query.udp(q, "127.0.0.1", port=dns_port, timeout=5)
        assert [rd.to_text() for rrset in r.answer for rd in rrset] == [ADDRESS]

        for _ in range(3):  # the engine loop keeps feeding the watchdog
            notify_path.until(has("WATCHDOG"))

        proc.send_signal(signal.SIGHUP)
        reloading = notify_path.until(has("RELOADING"))
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify_path.until(has("READY"))

        request = urllib.request.Request(
            api + "/api/v1/reload", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.status == 200, json.load(resp)
        notify_path.until(has("RELOADING"))
        notify_path.until(has("READY"))

        proc.send_signal(signal.SIGTERM)
        assert notify_path.until(has("STOPPING"))["STATUS"] == "stopping"
        assert proc.wait(30) == 0
    finally:
        stop(proc)


def test_abstract_socket_and_a_watchdog_meant_for_another_process(
    tmp_path: Path, gated: GatedEndpoint
) -> None:
    """ "@name" is an abstract socket; WATCHDOG_PID of another process: no WATCHDOG=1."""
    gated.release()
    notify = NotifySocket(None)
    env = {"NOTIFY_SOCKET": notify.env, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    proc = start_serve(tmp_path, write_config(tmp_path, gated.port), env)
    try:
        notify.until(has("READY"))
        _dns, api = addresses(proc)
        with urllib.request.urlopen(api + "/livez", timeout=10) as r:
            assert json.load(r)["ok"] is True
        time.sleep(1.0)  # five watchdog periods: a wrongly armed watchdog would have sent
        proc.send_signal(signal.SIGTERM)
        notify.until(has("STOPPING"))
        assert proc.wait(30) == 0
        assert not [m for m in notify.seen if "WATCHDOG" in m], notify.seen
    finally:
        stop(proc)
        notify.close()


async def test_ready_is_sent_only_once_the_dns_server_answers(
    tmp_path: Path, notify_path: NotifySocket
) -> None:
    """The test plays the DNS server: READY=1 cannot come before it replies."""
    async with live_service(tmp_path) as live:
        supervision = Supervision()
        supervisor = Supervisor(live.service, supervision, Notifier(notify_path.env), None)
        fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fake.bind(("127.0.0.1", 0))
        try:
            silent = await supervisor.ready(fake.getsockname(), tries=2, wait=0.2)
            assert silent is False
            assert notify_path.drain() == []  # never answered: never ready
            while True:  # the two unanswered queries
                fake.settimeout(0)
                try:
                    fake.recv(512)
                except BlockingIOError:
                    break
            ready = asyncio.create_task(supervisor.ready(fake.getsockname(), wait=30.0))
            fake.settimeout(10)
            data, client = await asyncio.to_thread(fake.recvfrom, 512)
            query = dns.message.from_wire(data)
            assert query.question[0].rdtype == dns.rdatatype.SOA
            assert str(query.question[0].name) == "example.test."
            await asyncio.sleep(0.2)
            assert notify_path.drain() == []  # asked, not answered yet: not ready
            fake.sendto(dns.message.make_response(query).to_wire(), client)
            assert await ready is True
            told = await asyncio.to_thread(notify_path.until, has("READY"), 10)
            assert told["STATUS"].startswith("serving 2 name(s) in 1 zone(s)")
        finally:
            fake.close()
            supervisor.close()


async def until_status(live: Live, path: str, status: int, limit: float) -> None:
    async with asyncio.timeout(limit):
        while True:
            async with live.http.get(live.base + path) as r:
                if r.status == status:
                    return
            await asyncio.sleep(0.05)


async def test_a_wedged_engine_loop_stops_the_watchdog_and_fails_livez(
    tmp_path: Path, notify_path: NotifySocket
) -> None:
    async with live_service(tmp_path) as live:
        node = live.service
        node.supervision.stale_after = 1.0
        supervisor = Supervisor(node, node.supervision, Notifier(notify_path.env), 0.1)
        node.wake()  # the loop's next wait beats at the new period
        try:
            assert await supervisor.ready(("127.0.0.1", live.dns_port))
            await asyncio.to_thread(notify_path.until, has("WATCHDOG"), 10)
            assert (await live.get("/livez"))["ok"] is True

            async with node._decide_lock:  # a decision that never ends
                node.wake()
                await until_status(live, "/livez", 503, limit=30)
                body = await live.get("/livez", status=503)
                assert "engine loop has not run" in body["reason"]
                notify_path.drain()
                beats = node.supervision.beats
                await asyncio.sleep(1.0)  # ten watchdog periods
                assert [m for m in notify_path.drain() if "WATCHDOG" in m] == []
                assert node.supervision.beats == beats

            await asyncio.to_thread(notify_path.until, has("WATCHDOG"), 10)
            await until_status(live, "/livez", 200, limit=10)
        finally:
            supervisor.close()


async def test_status_says_when_a_name_fails_over(
    tmp_path: Path, notify_path: NotifySocket
) -> None:
    async with live_service(tmp_path) as live:
        supervisor = Supervisor(live.service, live.service.supervision,
                                Notifier(notify_path.env), None)  # fmt: skip
        try:
            assert await supervisor.ready(("127.0.0.1", live.dns_port))
            ready = await asyncio.to_thread(notify_path.until, has("READY"), 10)
            assert ready["STATUS"] == "serving 2 name(s) in 1 zone(s): 2 healthy"
            live.endpoints.set_status(C, 503)  # api's primary tier: api fails over to D
            await live.until_answer(API, (D,), limit=30)
            told = await asyncio.to_thread(
                notify_path.until, lambda m: "failed over" in m.get("STATUS", ""), 30
            )
            assert told["STATUS"] == "serving 2 name(s) in 1 zone(s): 1 failed over, 1 healthy"
            # etcd away (what the cluster link reports then): said after the counts
            away = EtcdAway(live.service)
            assert status_line(away) == (
                f"serving 2 name(s) in 1 zone(s): 1 failed over, 1 healthy; {ETCD_AWAY}"
            )
        finally:
            supervisor.close()


class EtcdAway:
    """The node's view, with the cluster status a node cut off from etcd has."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)

    def cluster_status(self) -> dict[str, Any]:
        return {
            "mode": "cluster",
            "degraded": "etcd unreachable: serving the last published decision",
        }


def test_nothing_is_sent_or_opened_without_notify_socket() -> None:
    supervision = Supervision()
    supervisor = Supervisor.from_environ(object(), supervision, {})  # type: ignore[arg-type]
    assert not supervisor.notifier.enabled
    assert supervision.observer is None  # the engine loop tells nobody
    assert asyncio.run(supervisor.ready(("127.0.0.1", 9))) is False  # and asks nothing


def test_notify_socket_and_watchdog_variables() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@sd-notify") == "\0sd-notify"
    assert notify_address("vsock:2:1234") is None
    assert notify_address("") is None
    assert notify_address(None) is None
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


async def test_supervision_waits_like_wait_for_and_beats_meanwhile() -> None:
    beat = Supervision(period=0.05)
    event = asyncio.Event()
    with pytest.raises(TimeoutError):
        await beat.wait(event, 0.3)
    assert beat.beats >= 3  # it beat while nothing happened
    asyncio.get_running_loop().call_later(0.2, event.set)
    await beat.wait(event, None)  # returns when set, however long the period
    assert event.is_set()
    await beat.wait(event, 0)  # already set: returns at once
    event.clear()
    with pytest.raises(TimeoutError):
        await beat.wait(event, 0)
    assert beat.alive()
    assert beat.age() is not None


def test_a_reload_before_ready_says_nothing(notify_path: NotifySocket) -> None:
    """READY=1 comes from the first decision's answer only, not from a SIGHUP at start."""
    supervision = Supervision()
    supervisor = Supervisor(object(), supervision, Notifier(notify_path.env), 1.0)  # type: ignore[arg-type]
    try:
        asyncio.run(supervision.reloading(asyncio.sleep(0)))
        supervision.beat()
        assert notify_path.drain() == []
    finally:
        supervisor.close()
