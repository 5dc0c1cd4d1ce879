"""HTTP and HTTPS probes over one shared aiohttp session.

Every probe opens a fresh connection (the session's connector has `force_close=True`, and
each request also says `Connection: close`).  A health check must see what a *new* client
sees: a pooled keep-alive connection can keep answering from a server whose listener is gone
or draining, and it skips the TLS handshake, so an expired or replaced certificate would go
unnoticed until the pool happened to reconnect.  The price is one TCP (+TLS) handshake per
probe, which is what the target's real clients pay too.

A region with a `source_address` probes from that local address.  aiohttp binds at the
connector level (`local_addr`), so the source is a property of the session: one session per
source, made by `make_session(source_address=...)`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

import aiohttp

from dnsfailover.checks.details import (
    cannot_probe,
    failed,
    os_error_detail,
    shortage_errno,
    shorten,
    timeout_detail,
)
from dnsfailover.config.checks import CheckConfig, compile_body_regex
from dnsfailover.model import ProbeResult, Target, hostport

logger = logging.getLogger("dnsfailover.checks")

BODY_LIMIT = 64 * 1024
USER_AGENT = "dnsfailover-healthcheck/0.1"

BodyMatcher = Callable[[str], str | None]  # body text → None when it matches, else a detail


def make_session(*, limit: int = 0, source_address: str | None = None) -> aiohttp.ClientSession:
    """The session probes share: no pooling, no cookies, no proxies from the environment.

    `limit` caps connections in flight (0 = unlimited; the scheduler's semaphore bounds
    probes anyway).  The 30 s total timeout is only a backstop: each probe enforces its own
    check timeout.  `source_address` binds every connection to that local address (port
    chosen by the kernel); a target of the other address family then fails to connect.
    """
    connector = aiohttp.TCPConnector(
        force_close=True,
        limit=limit,
        use_dns_cache=False,
        local_addr=(source_address, 0) if source_address else None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=30),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


def status_text(ranges: tuple[tuple[int, int], ...]) -> str:
    """`((200, 200),)` → `200`; `((200, 299), (301, 302))` → `200-299, 301-302`."""
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def body_matcher(expect: str) -> BodyMatcher:
    """A substring test, or a regex search when written `/.../`.

    The regex is RE2's (`config.checks.compile_body_regex`): linear in the body, so a
    target cannot stall the loop with a body that makes a backtracking engine explode.
    An invalid one (the config rejects it; this is for a check built by hand) makes every
    probe fail with a detail that says so, rather than taking the scheduler down at start.
    """
    if len(expect) >= 2 and expect.startswith("/") and expect.endswith("/"):
        pattern = expect[1:-1]
        try:
            regex = compile_body_regex(pattern)
        except ValueError as exc:
            logger.warning("http: invalid expect_body regex: %s", exc)
            bad = shorten(f"invalid expect_body regex: {exc}")
            return lambda _body: bad
        miss = f"body does not match /{shorten(pattern, 40)}/"

        def search(body: str) -> str | None:
            # Python's `$` also matches before a final newline, RE2's only at the end.
            found = regex.search(body) or (body.endswith("\n") and regex.search(body[:-1]))
            return None if found else miss

        return search
    miss = f"body does not contain {shorten(expect, 40)!r}"
    return lambda body: None if expect in body else miss


async def read_prefix(response: aiohttp.ClientResponse, limit: int = BODY_LIMIT) -> str:
    """Read at most `limit` bytes of the body and decode them leniently."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    raw = b"".join(chunks)
    try:
        return raw.decode(response.charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset in Content-Type
        return raw.decode("utf-8", errors="replace")


def _client_error_detail(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", None) or str(cert_error)
        return f"TLS: certificate verify failed ({reason})"
    if isinstance(exc, aiohttp.ClientSSLError):
        error = exc.os_error
        reason = error.reason if isinstance(error, ssl.SSLError) and error.reason else error
        return f"TLS: {str(reason).replace('_', ' ').lower()}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return os_error_detail(exc.os_error)
    if isinstance(exc, aiohttp.ClientOSError):  # e.g. reset while sending the request
        return os_error_detail(exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection without a response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body cut short"
    if isinstance(exc, aiohttp.ClientResponseError):
        return shorten(f"bad HTTP response: {exc.message}")
    return shorten(f"HTTP client error: {exc}")


class HttpProbe:
    """GET (or HEAD) the check's path; status and, optionally, body decide."""

    def __init__(
        self,
        check: CheckConfig,
        session: aiohttp.ClientSession | None,
        source_address: str | None = None,
    ) -> None:
        """A probe for `check`.

        :param session: a shared session from `make_session`; when given, it decides the
            source address (make it with the same `source_address`).  Without one, every
            probe opens a session of its own from `source_address`.
        """
        https = check.type == "https"
        self._source = source_address
        self._scheme = "https" if https else "http"
        self._session = session
        self._method = check.method
        self._path = check.path
        self._timeout = check.timeout
        self._expect = check.expect_status
        self._expect_text = status_text(check.expect_status)
        self._body = body_matcher(check.expect_body) if check.expect_body is not None else None
        headers = {"User-Agent": USER_AGENT}
        headers.update(check.headers)
        if check.host:
            headers = {k: v for k, v in headers.items() if k.lower() != "host"}
            headers["Host"] = check.host
        headers["Connection"] = "close"
        self._headers = headers
        # Verification on unless `insecure`; SNI and the name checked against the
        # certificate is the configured host, else the address itself.
        self._ssl = not check.insecure  # ignored by aiohttp for plain http
        self._server_hostname = check.host if https and check.host else None

    async def __call__(self, target: Target) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        url = f"{self._scheme}://{hostport(target.address, target.port)}{self._path}"
        try:
            async with asyncio.timeout(self._timeout):
                if self._session is not None:
                    return await self._request(self._session, url, loop, start)
                # No shared session (a one-off probe from the CLI): make one for this call.
                async with make_session(source_address=self._source) as session:
                    return await self._request(session, url, loop, start)
        except TimeoutError:
            return failed(loop.time() - start, timeout_detail(self._timeout))
        except (aiohttp.ClientError, OSError) as exc:
            if (code := shortage_errno(exc)) is not None:  # this process, not the target
                return cannot_probe(loop.time() - start, code, target.key)
            if isinstance(exc, aiohttp.ClientError):
                return failed(loop.time() - start, _client_error_detail(exc))
            return failed(loop.time() - start, os_error_detail(exc))
        except Exception as exc:  # the contract: a probe reports, it never raises
            logger.warning("http: unexpected error probing %s: %r", url, exc)
            return failed(loop.time() - start, shorten(f"probe error: {type(exc).__name__}"))

    async def _request(
        self,
        session: aiohttp.ClientSession,
        url: str,
        loop: asyncio.AbstractEventLoop,
        start: float,
    ) -> ProbeResult:
        async with session.request(
            self._method,
            url,
            headers=self._headers,
            allow_redirects=False,
            ssl=self._ssl,
            server_hostname=self._server_hostname,
        ) as response:
            status = response.status
            if not any(lo <= status <= hi for lo, hi in self._expect):
                detail = f"HTTP {status} (expected {self._expect_text})"
                return failed(loop.time() - start, detail)
            if self._body is not None:
                miss = self._body(await read_prefix(response))
                if miss is not None:
                    return failed(loop.time() - start, miss)
        return ProbeResult(ok=True, latency=loop.time() - start, detail=f"HTTP {status}")
