"""Real parts shared by the tests: HTTP/TCP endpoints on 127.0.0.x, the `dnsfailover` command."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from aiohttp import web

from dnsfailover.tasks import stop_site

# DNSFAILOVER_BIN runs another build (bench/revisions.py compares two)
BIN = Path(os.environ.get("DNSFAILOVER_BIN") or Path(sys.executable).with_name("dnsfailover"))


class HttpEndpoints:
    """Real aiohttp servers, one per 127.0.0.x address, on a loop in a background thread.

    `stop(addr)` closes the listener (probes then see connection refused), `start(addr)`
    binds the same port again.  `set_status(addr, 503)` makes /healthz fail while up, and
    `fail_from(addr, source)` only for probes from `source` (one region sees it fail).
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._status: dict[str, int] = {}
        self._blocked: set[str] = set()
        self._failing: set[tuple[str, str | None]] = set()  # (endpoint, source) answered 503
        self.hits: dict[str, int] = {}  # probes answered, per endpoint address
        self._sites: dict[str, web.TCPSite] = {}
        self.ports: dict[str, int] = {}
        self._runner = self._call(self._setup())

    def _call(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout=10)

    async def _setup(self) -> web.AppRunner:
        async def healthz(request: web.Request) -> web.Response:
            if request.remote in self._blocked and request.transport is not None:
                # A firewall between that source and us: the connection is reset.
                request.transport.abort()
                raise ConnectionResetError
            host = request.transport.get_extra_info("sockname")[0] if request.transport else ""
            self.hits[host] = self.hits.get(host, 0) + 1
            status = 503 if (host, request.remote) in self._failing else self._status.get(host, 200)
            return web.Response(status=status, text="ok\n" if status == 200 else "failing\n")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        return runner

    async def _start(self, address: str) -> None:
        site = web.TCPSite(self._runner, address, self.ports.get(address, 0), reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.ports[address] = int(server.sockets[0].getsockname()[1])
        self._sites[address] = site

    async def _stop(self, address: str) -> None:
        await stop_site(self._sites.pop(address))

    def start(self, address: str) -> int:
        self._call(self._start(address))
        return self.ports[address]

    def stop(self, address: str) -> None:
        self._call(self._stop(address))

    def set_status(self, address: str, status: int) -> None:
        self._status[address] = status

    def fail_from(self, address: str, source: str) -> None:
        self._failing.add((address, source))

    def block(self, source: str) -> None:
        """Reset every probe that comes from `source` (a region cut off from the endpoints)."""
        self._blocked.add(source)

    def unblock(self, source: str) -> None:
        self._blocked.discard(source)

    def close(self) -> None:
        self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class TcpListener:
    """A plain TCP listener that accepts and closes, on a background thread."""

    def __init__(self, address: str) -> None:
        self.sock = socket.create_server((address, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for _key, _ev in sel.select(timeout=0.05):
                    try:
                        conn, _ = self.sock.accept()
                        conn.close()
                    except BlockingIOError:
                        pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class Server:
    """`dnsfailover serve` as a real subprocess on 127.0.0.1, port 0."""

    def __init__(self, config: Path, state: Path, *extra: str) -> None:
        self.log = config.with_suffix(".log")
        self._log_file = self.log.open("ab")
        api = () if "--api" in extra else ("--api", "127.0.0.1:0")
        self.proc = subprocess.Popen(
            [
                str(BIN),
                "serve",
                str(config),
                "--dns",
                "127.0.0.1:0",
                "--state",
                str(state),
                *api,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise AssertionError(f"server did not start: {line!r}\n{self.log.read_text()}")
        self.port = int(m.group(1))
        api_match = re.search(r"api (http://[^\s,]+)", line)
        self.api = api_match.group(1) if api_match else None  # the HTTP API's base URL

    def query(self, name: str, rtype: str = "A", tcp: bool = False) -> dns.message.Message:
        q = dns.message.make_query(name, rtype)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=2)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=2)

    def answer(self, name: str, rtype: str = "A") -> tuple[str, ...]:
        r = self.query(name, rtype)
        values = [
            rd.to_text()
            for rrset in r.answer
            for rd in rrset
            if rrset.rdtype == dns.rdatatype.from_text(rtype)
        ]
        return tuple(sorted(values))

    def serial(self, zone: str) -> int:
        r = self.query(zone, "SOA")
        return int(r.answer[0][0].serial)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log_file.close()
        return self.proc.returncode


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.02) -> float:
    """Poll until `predicate()` holds; returns seconds taken, fails the test on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout:.1f}s")
        time.sleep(every)
    return time.monotonic() - start


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 now (named binds both)."""
    for _ in range(20):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")
