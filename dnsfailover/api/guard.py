"""What keeps hostile clients from hurting the node through the API's listening socket.

- **Connections are bounded.**  At most `max_connections` are open at once (by default a
  quarter of the process's file-descriptor limit, at most 512), so idle sockets cannot take
  the descriptors that probes and DNS need.  One more gets a 503 and is closed at once.
- **Idle and half-sent requests time out.**  A connection must deliver a request's headers
  within `idle_timeout` of opening or of its previous response, else it is closed.  aiohttp
  has a keep-alive timer, but only its newest releases start it before the first request,
  and it never bounds a request whose headers trickle in; this timer does both, whatever
  the aiohttp version.  Bodies are bounded by the route (`read_body`).
- **Only known hosts** (DNS rebinding): a browser sends the name it resolved in `Host:`.
  Accepted: an IP literal, `localhost` (and `*.localhost`), and the names in
  `api.allowed_hosts`.  Anything else gets **421 Misdirected Request** (RFC 9110 §15.5.20:
  "not able to produce a response for this target URI"), which says exactly that, where a
  400 would blame the request's syntax; an unparsable `Host:` gets 400.
- **Security headers** on every response: `X-Content-Type-Options: nosniff`,
  `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and a Content-Security-Policy
  (`default-src 'none'; frame-ancestors 'none'` for data; the page's own, hash-pinned
  inline script and style, see `page_policy`).
- **aiohttp's own errors are quiet and clean**: parser errors (a folded header, a bad byte)
  are one rate-limited WARNING with the error's first line, never the raw header (it may
  hold the token) and never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import re
import resource
from collections.abc import Callable, Iterable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dnsfailover.api.listener import Listener
from dnsfailover.logs import RateLimitedLog

log = logging.getLogger("dnsfailover.api")

IDLE_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
MAX_CONNECTIONS = 512
_BUSY_BODY = b'{"error": "too many connections to the API; retry later"}'
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::\d{1,5})?$")


def default_max_connections() -> int:
    """A quarter of the soft file-descriptor limit (probes and DNS keep the rest), ≤ 512."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 4))


def host_problem(header: str | None, allowed: Iterable[str]) -> tuple[int, str] | None:
    """None when `Host:` names this API; else (status, message)."""
    if header is None or header == "":
        return None  # HTTP/1.0 without Host: not a browser, so not a rebinding
    m = _HOST.match(header.strip())
    if m is None:
        return 400, "the Host header is not a valid host[:port]"
    host = (m.group("v6") or m.group("name") or "").lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
        return None  # an address: no name an attacker could re-point
    except ValueError:
        pass
    if m.group("v6") is not None:
        return 400, "the Host header is not a valid host[:port]"
    if host == "localhost" or host.endswith(".localhost"):
        return None
    if host in {a.lower().rstrip(".") for a in allowed}:
        return None
    return (
        421,
        f"this API does not serve the host {host!r}; use its address, localhost, or add "
        "the name to api.allowed_hosts in the config",
    )


def page_policy(page: bytes) -> str:
    """The status page's CSP: its inline `<script>` and `<style>` pinned by SHA-256, data
    only from this origin, no frames, forms, plugins or base changes."""

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>".encode(), page, re.S)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in found
        )

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


async def read_body(request: web.Request, limit: float = BODY_TIMEOUT) -> bytes:
    """The request body, or 408 when it does not arrive within `limit` seconds."""
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"the request body did not arrive within {limit:g}s"
        ) from None


class ProtocolLog:
    """The logger aiohttp's protocol handler writes to: its request errors as one short,
    rate-limited WARNING (no traceback, no raw bytes); anything else as a rate-limited
    ERROR with its traceback (a bug, not a client)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger
        self._bad = RateLimitedLog(logger, period=60.0, burst=10)
        self._bug = RateLimitedLog(logger, period=60.0, burst=5)

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, BaseException):
            self._client_error(exc, args)

    def exception(self, msg: str, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            self._client_error(exc, args)
            return
        # A bug, not a client: with its traceback (through the redacting filter like every
        # record), a bounded number a minute.
        self._bug.log(logging.ERROR, "api: http: " + msg, *args, exc_info=exc)

    error = exception

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._bad.log(logging.WARNING, "api: http: " + msg, *args)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        self.logger.debug("api: http: " + msg, *args)

    def _client_error(self, exc: BaseException, args: tuple[Any, ...]) -> None:
        remote = args[0] if args else "a client"
        if isinstance(exc, HttpProcessingError):
            lines = [ln.strip() for ln in str(exc.message).splitlines() if ln.strip()]
            what = f"{exc.code} {lines[0].rstrip(':') if lines else type(exc).__name__}"
        else:
            what = type(exc).__name__
        self._bad.log(logging.WARNING, "api: bad request from %s: %s", remote, what)


class _Connection(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: counts it, times it out when idle."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner, self.guard = inner, guard
        self.transport: asyncio.Transport | None = None
        self.active = False
        self.busy = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport has the interface but does not subclass asyncio.Transport
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.write(BUSY)
            transport.close()
            return
        self.active = True
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.active:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.active else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.active:
            self.active = False
            self.guard.release(self)
            self.inner.connection_lost(exc)
        self.transport = None

    def pause_writing(self) -> None:
        if self.active:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.active:
            self.inner.resume_writing()

    # -- the request clock ------------------------------------------------------------------

    def started(self) -> None:
        self.busy += 1
        self._disarm()

    def finished(self) -> None:
        self.busy = max(0, self.busy - 1)
        if self.busy == 0 and self.active:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.idle_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.busy == 0 and self.transport is not None:
            self.guard.timed_out += 1
            self.transport.abort()


class ConnectionGuard:
    """Counts the API's connections, refuses those over the limit and closes idle ones."""

    def __init__(self, max_connections: int | None = None, idle_timeout: float = IDLE_TIMEOUT):
        self.max_connections = max_connections or default_max_connections()
        self.idle_timeout = idle_timeout
        self.refused = 0
        self.timed_out = 0
        self._open: dict[object, _Connection] = {}  # aiohttp's protocol → its wrapper
        self._warn = RateLimitedLog(log, period=60.0, burst=1)

    @property
    def open(self) -> int:
        return len(self._open)

    def families(self) -> tuple[Metric, ...]:
        """The guard's counts as Prometheus metrics."""
        return (
            GaugeMetricFamily(
                "dnsfailover_api_connections", "Open API connections", value=float(self.open)
            ),
            CounterMetricFamily(
                "dnsfailover_api_connections_refused",
                "API connections refused at the connection limit (503)",
                value=float(self.refused),
            ),
            CounterMetricFamily(
                "dnsfailover_api_connections_timed_out",
                "API connections closed idle or with a request that never completed",
                value=float(self.timed_out),
            ),
        )

    def factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Connection(inner(), self)

    def admit(self, conn: _Connection) -> bool:
        if len(self._open) >= self.max_connections:
            self.refused += 1
            self._warn.log(
                logging.WARNING,
                "api: %d connections open, the limit; refusing new ones until some close",
                self.max_connections,
            )
            return False
        self._open[conn.inner] = conn
        return True

    def release(self, conn: _Connection) -> None:
        self._open.pop(conn.inner, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Stops the idle clock while a request is being handled."""
        conn = self._open.get(request.protocol)
        if conn is None:
            return await handler(request)  # type: ignore[no-any-return]
        conn.started()
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            conn.finished()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a `ConnectionGuard`, accepted by `Listener`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, backlog=128)
        self._guarded_host, self._guarded_port, self._guard = host, port, guard
        self.listener: Listener | None = None

    @property
    def name(self) -> str:
        return f"http://{self._guarded_host}:{self._guarded_port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.listener = Listener(self._guard.factory(server), self._backlog)
        await self.listener.start(self._guarded_host, self._guarded_port)

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await super().stop()
