"""The HTTP API against hostile clients: raw bytes over real sockets to a real service.

Each test is what an attacker or a broken client can do without the token (or with it, for
the bodies), and what a user would notice: a secret in the log, a 500, a flood of log lines,
a forged log line, a page readable through someone else's host name, a socket held forever.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.message
import dns.query
from api_support import TOKEN, WWW, A, B, live_service
from support import BIN, HttpEndpoints, wait_for

from dnsfailover.api.server import ApiServer
from dnsfailover.logs import make_handler

# What a human-format log line starts with; anything else is a continuation line.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


@contextmanager
def captured(fmt: str = "human") -> Iterator[io.StringIO]:
    """The process's log output as `serve` writes it (root handler, redaction filter)."""
    buf = io.StringIO()
    handler = make_handler(fmt, buf)  # type: ignore[arg-type]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def raw(base: str, data: bytes, *, limit: float = 5.0) -> bytes:
    """Send `data` on a fresh connection; all the server sends back until it closes (send
    `Connection: close` or a request the server refuses: aiohttp closes on a half-close)."""
    reader, writer = await asyncio.open_connection(*address(base))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(limit):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


CLOSE = b"Connection: close\r\n\r\n"


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def body_of(reply: bytes) -> Any:
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


def post(path: str, body: bytes, *, token: bytes = TOKEN.encode(), extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
        + b"Authorization: Bearer "
        + token
        + b"\r\nContent-Type: application/json\r\n"
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


# -- 1. the token never reaches a log ----------------------------------------------------------


async def test_the_token_never_reaches_the_log_whatever_the_header_looks_like(
    tmp_path: Path,
) -> None:
    token = TOKEN.encode()
    attempts = [
        # folded (obsolete line folding): aiohttp's parser error quotes the token's line alone
        b"POST /api/v1/overrides HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer\r\n "
        + token
        + b"\r\nContent-Length: 0\r\n\r\n",
        # a control character after the token: the error quotes the whole header line
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token + b"\x01\r\n\r\n",
        # the token with a non-UTF-8 byte, through the route and its wrong-token warning
        post("/api/v1/overrides", b"{}", token=token + b"\xff"),
        # the token in the query string and in a made-up header
        b"GET /api/v1/status?token=" + token + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-Debug: " + token + b"\r\nConnection: close\r\n\r\n",
    ]
    for fmt in ("human", "json"):
        (tmp_path / fmt).mkdir()
        with captured(fmt) as log:
            async with live_service(tmp_path / fmt) as live:
                replies = [await raw(live.base, attempt) for attempt in attempts]
        text = log.getvalue()
        assert TOKEN not in text
        assert TOKEN[:16] not in text
        assert "bad request from" in text  # the parser errors were seen, and logged
        assert "Traceback" not in text
        assert [status_of(r) for r in replies] == [400, 400, 401, 200]


# -- 2. Host allow-list and security headers ---------------------------------------------------


async def test_a_foreign_host_name_gets_421_and_known_ones_are_served(tmp_path: Path) -> None:
    extra = "api:\n  allowed_hosts: [status.example.net]\n"
    async with live_service(tmp_path, extra=extra) as live:
        _host, port = address(live.base)
        for host in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", "Status.Example.Net"):
            async with live.http.get(live.base + "/api/v1/status", headers={"Host": host}) as r:
                assert r.status == 200, host
        for host in ("attacker.example", f"rebind.attacker.example:{port}", "localhost.evil"):
            for path in ("/api/v1/status", "/", "/metrics"):
                async with live.http.get(live.base + path, headers={"Host": host}) as r:
                    assert r.status == 421, (host, path)
                    assert "api.allowed_hosts" in (await r.json())["error"]
        reply = await raw(live.base, b"GET / HTTP/1.1\r\nHost: a b\r\n" + CLOSE)
        assert status_of(reply) == 400


async def test_the_page_and_the_data_carry_security_headers(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        async with live.http.get(live.base + "/") as r:
            html = await r.text()
            csp = r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}'", csp)
        assert "<script>" in html  # the inline script the hash pins
        for path in ("/api/v1/status", "/metrics", "/nope"):
            async with live.http.get(live.base + path) as r:
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]


# -- 3./4. malformed bodies are 400s, and what they log is bounded ------------------------------

BAD_BODIES = [
    (b"[" * 30_000 + b"]" * 30_000, "nested more than"),
    ('{"action": "drain"}'.encode("utf-16"), "UTF-8"),
    (b'{"action": "drain", "reason": "caf\xe9"}', "UTF-8"),
    (b'{"action": "drain", "endpoint": "%s", "reason": "\\ud800"}' % A.encode(), "surrogate"),
    (b'{"action": "drain", "endpoint": "%s", "reason": "r", "expires_at": NaN}' % A.encode(),
     "NaN is not a JSON number"),
    (b'{"action": "drain", "endpoint": "%s", "reason": "r", "expires_in": Infinity}'
     % A.encode(), "Infinity is not a JSON number"),
    (b'{"action": "drain", "endpoint": "%s", "reason": "r", "expires_at": 1e400}' % A.encode(),
     "too large"),
    (b'{"action": "drain", "endpoint": "%s", "reason": "r", "expires_at": 1%s}'
     % (A.encode(), b"0" * 5000), "not acceptable JSON"),
    (b'{"action": "drain", "endpoint": "%s", "reason": "r", "expires_in": 1e15}' % A.encode(),
     "at most 366 days"),
    (b'{"action": "drain", "endpoint": "%s", "reason": "r", "expires_at": 9e15}' % A.encode(),
     "more than 366 days ahead"),
    (b'{"action": "drain", "endpoint": "%s", "reason": "r", "expires_in": -5}' % A.encode(),
     "negative"),
]  # fmt: skip


async def test_malformed_bodies_get_a_clear_400_and_change_nothing(tmp_path: Path) -> None:
    with captured() as log:
        async with live_service(tmp_path) as live:
            for body, message in BAD_BODIES:
                reply = await raw(live.base, post("/api/v1/overrides", body))
                assert status_of(reply) == 400, (body[:80], reply[:300])
                assert message in body_of(reply)["error"], (body[:80], body_of(reply))
            # Non-ASCII in the Authorization header: refused as a wrong token, not a 500.
            for token in ("tökén-0123456789abcdef".encode(), b"\xff\xfe" * 10):
                reply = await raw(live.base, post("/api/v1/overrides", b"{}", token=token))
                assert status_of(reply) == 401, reply[:300]
            assert (await live.get("/api/v1/overrides"))["overrides"] == []
            # Brackets inside a string are text, not nesting.
            odd = {"action": "drain", "endpoint": A, "name": WWW, "reason": "[" * 100}
            await live.call("POST", "/api/v1/overrides", odd, status=201)
    assert "Traceback" not in log.getvalue()
    assert " 500 " not in log.getvalue()


async def test_a_flood_of_bad_requests_logs_a_bounded_number_of_lines(tmp_path: Path) -> None:
    with captured() as log:
        async with live_service(tmp_path) as live:
            for i in range(150):
                await raw(live.base, post("/api/v1/overrides", b"{}", token=b"x" * 20))
                await raw(live.base, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: %d\r\n\r\n" % i)
                await raw(live.base, b"GET / HTTP/1.1\r\nHost: evil.example\r\n" + CLOSE)
            assert (await live.get("/api/v1/overrides"))["overrides"] == []
    lines = [ln for ln in log.getvalue().splitlines() if "dnsfailover.api" in ln]
    # 450 bad requests; three budgets of at most 10 lines a minute each
    assert len(lines) <= 40, "\n".join(lines)
    assert "Traceback" not in log.getvalue()


# -- 5. a client's text cannot forge a log line -------------------------------------------------


async def test_a_newline_in_reason_or_who_cannot_forge_a_log_line(tmp_path: Path) -> None:
    forged = "2026-01-01 00:00:00,000 WARNING dnsfailover.api: override removed by admin"
    reason = f"kernel upgrade\n{forged}"
    who = "mallory\r\x1b[2K" + forged
    with captured() as log:
        async with live_service(tmp_path) as live:
            body = {"action": "drain", "endpoint": A, "name": WWW, "reason": reason, "who": who}
            made = await live.call("POST", "/api/v1/overrides", body, status=201)
            stored = (await live.get("/api/v1/overrides"))["overrides"]
    assert [o["reason"] for o in stored] == [reason]  # kept as given
    assert stored[0]["who"] == who
    lines = log.getvalue().splitlines()
    assert not [ln for ln in lines if ln.startswith(forged)]
    assert all(RECORD.match(ln) for ln in lines), lines  # every line is a record of its own
    (line,) = [ln for ln in lines if made["override"]["id"] in ln and "set by" in ln]
    assert "kernel upgrade\\n2026-01-01" in line
    assert "mallory\\r\\x1b[2K" in line


# -- 6. connections are bounded and idle ones time out ------------------------------------------


async def test_connections_are_bounded_and_idle_or_half_sent_ones_are_closed(
    tmp_path: Path,
) -> None:
    async with live_service(tmp_path) as live:
        api = ApiServer(
            live.service,
            live.service,
            "127.0.0.1",
            0,
            token=TOKEN,
            metrics=live.service.metrics,
            max_connections=20,
            idle_timeout=0.5,
        )
        host, port = await api.start()
        socks: list[socket.socket] = []
        try:
            for _ in range(60):
                s = socket.create_connection((host, port))
                socks.append(s)
            # three half-sent requests among the idle ones, trickling a byte at a time
            for s in socks[:3]:
                s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            refused = await asyncio.to_thread(_refused, socks[20:])
            assert refused == 40  # 503 at once and closed
            # a byte every 0.1 s does not keep a request that never ends alive
            trickling = list(socks[:3])
            async with asyncio.timeout(10):
                while trickling:
                    await asyncio.sleep(0.1)
                    for s in list(trickling):
                        try:
                            s.sendall(b"a")
                        except OSError:  # closed by the server
                            trickling.remove(s)
            assert api.guard.timed_out >= 20
            assert api.guard.open == 0  # every idle and half-sent one was closed
            closed = await asyncio.to_thread(lambda: sum(_is_closed(s) for s in socks[:20]))
            assert closed == 20
            async with live.http.get(f"http://{host}:{port}/healthz") as r:
                assert r.status == 200
            async with live.http.get(f"http://{host}:{port}/metrics") as r:
                text = await r.text()
            assert "dnsfailover_api_connections_refused_total 40.0" in text
            assert re.search(r"dnsfailover_api_connections_timed_out_total (\d+)", text)
        finally:
            for s in socks:
                s.close()
            await api.stop()


def _refused(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        s.settimeout(5)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        n += data.startswith(b"HTTP/1.1 503 ") and "too many" in body_of(data)["error"]
    return n


def _is_closed(s: socket.socket) -> bool:
    s.settimeout(5)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


async def test_a_body_that_never_arrives_gets_408(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        api = ApiServer(
            live.service, live.service, "127.0.0.1", 0, token=TOKEN,
            metrics=live.service.metrics, idle_timeout=0.3,
        )  # fmt: skip
        host, port = await api.start()
        try:
            head = post("/api/v1/overrides", b"").replace(
                b"Content-Length: 0", b"Content-Length: 100"
            )
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(head + b'{"action": ')
            async with asyncio.timeout(20):
                reply = await reader.read()
            writer.close()
            await writer.wait_closed()
            assert status_of(reply) == 408
        finally:
            await api.stop()
        assert (await live.get("/api/v1/overrides"))["overrides"] == []


# -- 6. (2b) idle API connections never read as endpoint failure --------------------------------

CONFIG = """\
checks:
  web: {{type: http, path: /healthz, interval: 500ms, timeout: 500ms, fall: 2, rise: 2}}
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
        endpoints: [{{address: {a}, check_port: {pa}}}, {{address: {b}, check_port: {pb}}}]
"""
NOFILE = 256


class Serve:
    """`dnsfailover serve` as a subprocess, optionally with a low file-descriptor limit."""

    def __init__(self, tmp_path: Path, endpoints: HttpEndpoints, nofile: int | None) -> None:
        ports = {a: endpoints.start(a) for a in (A, B)}
        config = tmp_path / "dnsfailover.yaml"
        config.write_text(CONFIG.format(a=A, b=B, pa=ports[A], pb=ports[B]))
        self.log = tmp_path / "serve.log"
        self._log_file = self.log.open("wb")

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [str(BIN), "serve", str(config), "--dns", "127.0.0.1:0", "--api", "127.0.0.1:0",
             "--state", str(tmp_path / "state.db")],
            stdout=subprocess.PIPE, stderr=self._log_file, text=True, preexec_fn=limit,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        dns = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        api = re.search(r"api http://([\d.]+):(\d+)", line)
        assert dns, (line, self.log.read_text())
        assert api, (line, self.log.read_text())
        self.dns_port = int(dns.group(1))
        self.api = (api.group(1), int(api.group(2)))

    def answer(self) -> tuple[str, ...]:
        r = dns.query.udp(dns.message.make_query(WWW, "A"), "127.0.0.1", port=self.dns_port,
                          timeout=2)  # fmt: skip
        return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))

    def serial(self) -> int:
        q = dns.message.make_query("example.test.", "SOA")
        r = dns.query.udp(q, "127.0.0.1", port=self.dns_port, timeout=2)
        return int(r.answer[0][0].serial)

    def get(self, path: str) -> tuple[int, bytes]:
        with socket.create_connection(self.api, timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + CLOSE)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return status_of(data), data.split(b"\r\n\r\n", 1)[1]

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._log_file.close()


@contextmanager
def serving(tmp_path: Path, endpoints: HttpEndpoints, nofile: int | None) -> Iterator[Serve]:
    server = Serve(tmp_path, endpoints, nofile)
    try:
        wait_for(lambda: server.answer() == (A, B), 10)
        yield server
    finally:
        server.stop()


def hold_connections(server: Serve, count: int, seconds: float) -> list[tuple[str, ...]]:
    """Open `count` idle connections to the API, keep them `seconds` while asking DNS every
    0.1 s; the answers seen meanwhile."""
    socks: list[socket.socket] = []
    seen = []
    try:
        for _ in range(count):
            try:
                socks.append(socket.create_connection(server.api, timeout=0.5))
            except OSError:  # the listen backlog is full: the server cannot accept more
                break
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen.append(server.answer())
            time.sleep(0.1)
    finally:
        for s in socks:
            s.close()
    return seen


def test_idle_api_connections_cannot_take_the_probes_descriptors(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    """With 256 descriptors, 400 idle API connections: the API keeps to its share (64), so
    probes keep running, nothing goes DOWN and the serial stays; /healthz answers after."""
    with serving(tmp_path, http_endpoints, NOFILE) as server:
        serial = server.serial()
        seen = hold_connections(server, 400, 2.0)
        assert set(seen) == {(A, B)}
        assert server.serial() == serial
        assert wait_for(lambda: server.get("/healthz")[0] == 200, 10) < 10
        assert server.fds() < NOFILE // 2
        log = server.log.read_text()
    assert "-> down" not in log
    assert "connections open, the limit" in log


def test_probes_that_cannot_open_a_socket_are_unknown_not_down(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    """The limits lowered under a running node: the probe process's to what it has open, so
    its probes cannot open sockets, and the node's below what the API's bound allows.
    Health is held (no DOWN, same serial), the log says why a bounded number of times, the
    metric counts it, and all recovers once the probe process may open sockets again."""
    with serving(tmp_path, http_endpoints, None) as server:
        serial = server.serial()
        low = server.fds() + 40
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (low, low))
        _status, body = server.get("/api/v1/status")
        probes = json.loads(body)["probes"]
        assert probes["where"] == "process"
        # The descriptors it keeps open (not a probe's socket caught in flight: once closed,
        # that number would be free below the limit and probes would go on): a new one gets
        # the lowest free number, so none can be opened once the limit is that number.
        kept: set[int] | None = None
        for _ in range(10):
            now_open = {int(fd) for fd in os.listdir(f"/proc/{probes['pid']}/fd")}
            kept = now_open if kept is None else kept & now_open
            time.sleep(0.05)
        assert kept is not None
        lowest_free = min(set(range(len(kept) + 1)) - kept)
        soft, hard = resource.prlimit(probes["pid"], resource.RLIMIT_NOFILE)
        resource.prlimit(probes["pid"], resource.RLIMIT_NOFILE, (lowest_free, hard))
        seen = hold_connections(server, 300, 3.0)  # ~6 probe rounds
        resource.prlimit(probes["pid"], resource.RLIMIT_NOFILE, (soft, hard))
        assert set(seen) == {(A, B)}
        assert server.serial() == serial
        assert wait_for(lambda: server.get("/healthz")[0] == 200, 15) < 15
        _status, metrics = server.get("/metrics")
        unknown = re.findall(
            rb'dnsfailover_probes_total\{[^}]*result="unknown"[^}]*\} (\S+)', metrics
        )
        assert sum(float(n) for n in unknown) > 0
        log = server.log.read_text()
    assert "-> down" not in log
    alarms = [ln for ln in log.splitlines() if "cannot open a socket to probe" in ln]
    assert 1 <= len(alarms) <= 3, alarms
    assert all(" ERROR " in ln for ln in alarms)
    # Running out of descriptors is one line a minute from the API's accept loop, not one
    # per waiting connection per second, and never a traceback.
    accepts = [ln for ln in log.splitlines() if "accept" in ln]
    assert 1 <= len(accepts) <= 2, accepts
    assert "Traceback" not in log
