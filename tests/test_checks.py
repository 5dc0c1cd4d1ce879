"""Probes against real servers on loopback: aiohttp HTTP/HTTPS, TCP listeners, a UDP DNS
responder built on dnslib.  Nothing under test is mocked."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from dnslib import QTYPE, RCODE, RR, DNSRecord
from pydantic import ValidationError

from dnsfailover.checks import make_probe, make_session
from dnsfailover.checks.dns import DnsProbe
from dnsfailover.checks.http import HttpProbe, body_matcher
from dnsfailover.checks.tcp import TcpProbe
from dnsfailover.config.checks import CheckConfig
from dnsfailover.model import ProbeResult, Target

HOST = "health.example.test"


def check(type_: str, **fields: Any) -> CheckConfig:
    return CheckConfig.model_validate({"type": type_, "interval": 2, "timeout": 1, **fields})


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- servers ------------------------------------------------------------------------------


@dataclass
class WebServer:
    address: str
    port: int
    hosts: list[str] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def target(self) -> Target:
        return Target(check="web", address=self.address, port=self.port)


async def _serve(
    ssl_context: ssl.SSLContext | None, address: str = "127.0.0.1"
) -> AsyncGenerator[WebServer, None]:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    try:
        sock.bind((address, 0))
    except OSError:
        sock.close()
        raise
    server = WebServer(address=address, port=sock.getsockname()[1])

    async def root(request: web.Request) -> web.Response:
        server.hosts.append(request.headers.get("Host", ""))
        return web.Response(text=f"ok host={request.headers.get('Host')}\n")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status\n")

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="service healthy build=1234\n")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * 100_000 + "MARKER")

    async def needs_host(request: web.Request) -> web.Response:
        server.hosts.append(request.headers.get("Host", ""))
        ok = request.headers.get("Host") == HOST and request.headers.get("X-Probe") == "yes"
        return web.Response(status=200 if ok else 421, text="ok\n" if ok else "wrong host\n")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/")

    async def hang(request: web.Request) -> web.Response:
        await server.release.wait()
        return web.Response(text="late\n")

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/text", text)
    app.router.add_get("/big", big)
    app.router.add_get("/needs-host", needs_host)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


@pytest.fixture
async def http_server() -> AsyncIterator[WebServer]:
    async for server in _serve(None):
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for HOST, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def https_server(certificate: tuple[Path, Path]) -> AsyncIterator[WebServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    async for server in _serve(context):
        server.sni = sni
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    with socket.create_server(("127.0.0.1", 0), backlog=128) as sock:
        yield "127.0.0.1", sock.getsockname()[1]


# -- make_probe ---------------------------------------------------------------------------


def test_make_probe_dispatches_by_type(session: aiohttp.ClientSession) -> None:
    assert isinstance(make_probe(check("http"), session=session), HttpProbe)
    assert isinstance(make_probe(check("https"), session=session), HttpProbe)
    assert isinstance(make_probe(check("tcp", port=1)), TcpProbe)
    assert isinstance(make_probe(check("dns", query="a.test.")), DnsProbe)
    with pytest.raises(ValueError, match="known: dns, http, https, tcp"):
        make_probe(CheckConfig.model_construct(type="smtp"))


# -- http ---------------------------------------------------------------------------------


async def probe_http(
    server: WebServer, session: aiohttp.ClientSession | None, **fields: Any
) -> ProbeResult:
    probe = make_probe(check(fields.pop("type", "http"), **fields), session=session)
    return await probe(server.target())


async def test_http_ok(http_server: WebServer, session: aiohttp.ClientSession) -> None:
    result = await probe_http(http_server, session)
    assert result.ok, result
    assert result.detail == "HTTP 200"
    assert 0 < result.latency < 1
    assert http_server.hosts == [f"127.0.0.1:{http_server.port}"]


async def test_http_without_shared_session(http_server: WebServer) -> None:
    assert (await probe_http(http_server, None)).ok


@pytest.mark.parametrize(
    ("path", "expect", "ok", "detail"),
    [
        ("/status/503", None, False, "HTTP 503 (expected 200-399)"),
        ("/status/204", "2xx", True, "HTTP 204"),
        ("/status/204", 200, False, "HTTP 204 (expected 200)"),
        ("/status/404", [200, "400-404"], True, "HTTP 404"),
        ("/redirect", [200], False, "HTTP 302 (expected 200)"),
        ("/redirect", [200, "301-302"], True, "HTTP 302"),
    ],
)
async def test_http_status_ranges(
    http_server: WebServer,
    session: aiohttp.ClientSession,
    path: str,
    expect: Any,
    ok: bool,
    detail: str,
) -> None:
    fields: dict[str, Any] = {"path": path}
    if expect is not None:
        fields["expect_status"] = expect if isinstance(expect, list) else [expect]
    result = await probe_http(http_server, session, **fields)
    assert (result.ok, result.detail) == (ok, detail)


@pytest.mark.parametrize(
    ("expect_body", "ok", "detail"),
    [
        ("healthy", True, "HTTP 200"),
        ("sick", False, "body does not contain 'sick'"),
        ("/build=\\d{4}$/", True, "HTTP 200"),
        ("/build=\\d{5}/", False, "body does not match /build=\\d{5}/"),
    ],
)
async def test_http_body(
    http_server: WebServer,
    session: aiohttp.ClientSession,
    expect_body: str,
    ok: bool,
    detail: str,
) -> None:
    result = await probe_http(http_server, session, path="/text", expect_body=expect_body)
    assert (result.ok, result.detail) == (ok, detail)


def test_http_invalid_regex_fails_every_probe() -> None:
    """Config validation rejects it first; the probe still must not raise if one slips by."""
    miss = body_matcher("/(unclosed/")("anything")
    assert miss is not None
    assert miss.startswith("invalid expect_body regex: missing )")


async def test_http_body_read_is_bounded(
    http_server: WebServer, session: aiohttp.ClientSession
) -> None:
    result = await probe_http(http_server, session, path="/big", expect_body="MARKER")
    assert not result.ok
    assert result.detail == "body does not contain 'MARKER'"


async def test_http_host_and_headers(
    http_server: WebServer, session: aiohttp.ClientSession
) -> None:
    plain = await probe_http(http_server, session, path="/needs-host")
    assert plain.detail == "HTTP 421 (expected 200-399)"
    result = await probe_http(
        http_server, session, path="/needs-host", host=HOST, headers={"X-Probe": "yes"}
    )
    assert result.ok, result
    from_headers = await probe_http(
        http_server, session, path="/needs-host", headers={"host": HOST, "X-Probe": "yes"}
    )
    assert from_headers.ok, from_headers
    assert http_server.hosts[-2:] == [HOST, HOST]


async def test_http_timeout(http_server: WebServer, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    result = await probe_http(http_server, session, path="/hang", timeout=0.3)
    elapsed = time.monotonic() - started
    assert (result.ok, result.detail) == (False, "timeout after 0.3s")
    assert 0.25 < elapsed < 1.0
    assert 0.25 < result.latency < 1.0


async def test_http_connection_refused(session: aiohttp.ClientSession) -> None:
    probe = make_probe(check("http"), session=session)
    result = await probe(Target(check="web", address="127.0.0.1", port=free_port()))
    assert (result.ok, result.detail) == (False, "connection refused")


async def test_http_ipv6_literal(session: aiohttp.ClientSession) -> None:
    servers = _serve(None, "::1")  # the machines this runs on all have ::1
    server = await anext(servers)
    try:
        result = await make_probe(check("http"), session=session)(server.target())
    finally:
        await servers.aclose()
    assert result.ok, result
    assert server.hosts == [f"[::1]:{server.port}"]


# -- https --------------------------------------------------------------------------------


async def test_https_verifies_by_default(
    https_server: WebServer, session: aiohttp.ClientSession
) -> None:
    result = await probe_http(https_server, session, type="https", host=HOST)
    assert not result.ok
    # OpenSSL 3: "self-signed certificate"; 1.1: "self signed certificate"
    assert result.detail.startswith("TLS: certificate verify failed (self"), result.detail
    assert https_server.sni == [HOST]


async def test_https_insecure_sends_sni_and_host(
    https_server: WebServer, session: aiohttp.ClientSession
) -> None:
    result = await probe_http(https_server, session, type="https", host=HOST, insecure=True)
    assert result.ok, result
    assert https_server.sni == [HOST]
    assert https_server.hosts == [HOST]


async def test_https_without_host_sends_no_sni(
    https_server: WebServer, session: aiohttp.ClientSession
) -> None:
    result = await probe_http(https_server, session, type="https", insecure=True)
    assert result.ok, result
    assert https_server.sni == [None]  # SNI never carries an IP address


async def test_https_against_plain_http(
    http_server: WebServer, session: aiohttp.ClientSession
) -> None:
    result = await probe_http(http_server, session, type="https", insecure=True)
    assert not result.ok
    assert result.detail.startswith("TLS: "), result.detail  # "TLS: wrong version number"


# -- tcp ----------------------------------------------------------------------------------


async def test_tcp_up(listener: tuple[str, int]) -> None:
    address, port = listener
    result = await make_probe(check("tcp", port=port))(Target("t", address, port))
    assert result.ok, result
    assert result.detail == "connected"
    assert 0 < result.latency < 0.5


async def test_tcp_refused() -> None:
    port = free_port()
    result = await make_probe(check("tcp", port=port))(Target("t", "127.0.0.1", port))
    assert (result.ok, result.detail) == (False, "connection refused")


async def test_tcp_timeout(full_listener: tuple[str, int]) -> None:
    address, port = full_listener
    started = time.monotonic()
    result = await make_probe(check("tcp", port=port, timeout=0.3))(Target("t", address, port))
    assert (result.ok, result.detail) == (False, "timeout after 0.3s")
    assert 0.25 < time.monotonic() - started < 1.0


async def test_tcp_many_at_once_and_cancellation(
    listener: tuple[str, int], full_listener: tuple[str, int]
) -> None:
    """Probes share one epoll set per loop; cancelled ones must leave it clean."""
    probe = make_probe(check("tcp", port=1, timeout=1))
    hanging = asyncio.ensure_future(probe(Target("t", *full_listener)))
    await asyncio.sleep(0.05)
    hanging.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanging
    results = await asyncio.gather(*(probe(Target("t", *listener)) for _ in range(100)))
    assert all(r.ok for r in results), {r.detail for r in results}


async def test_tcp_ipv6() -> None:
    sock = socket.create_server(("::1", 0), family=socket.AF_INET6)
    with sock:
        port = sock.getsockname()[1]
        result = await make_probe(check("tcp", port=port))(Target("t", "::1", port))
    assert result.ok, result


# -- dns ----------------------------------------------------------------------------------

ZONE = {
    ("www.example.test.", "A"): ["www.example.test. 300 IN A 192.0.2.1",
                                 "www.example.test. 300 IN A 192.0.2.2"],
    ("www.example.test.", "AAAA"): ["www.example.test. 300 IN AAAA 2001:db8:0:0::1"],
    ("example.test.", "MX"): ["example.test. 300 IN MX 10 Mail.Example.Test."],
    ("example.test.", "TXT"): ['example.test. 300 IN TXT "v=ok"'],
}  # fmt: skip
NAMES = {name for name, _type in ZONE}


class Responder(asyncio.DatagramProtocol):
    """A tiny authoritative server: ZONE, NXDOMAIN outside it, `fail.*` SERVFAIL,
    `silent.*` never answered.  Records every question it gets."""

    def __init__(self) -> None:
        self.questions: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        request = DNSRecord.parse(data)
        name, qtype = str(request.q.qname).lower(), QTYPE[request.q.qtype]
        self.questions.append((name, qtype))
        if name.startswith("silent."):
            return
        reply = request.reply()
        if name.startswith("fail."):
            reply.header.rcode = RCODE.SERVFAIL
        elif name not in NAMES:
            reply.header.rcode = RCODE.NXDOMAIN
        for text in ZONE.get((name, qtype), []):
            reply.add_answer(*RR.fromZone(text))
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[Responder, Target]]:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        Responder, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    yield responder, Target(check="dns", address="127.0.0.1", port=port)
    transport.close()


@pytest.mark.parametrize(
    ("fields", "ok", "detail"),
    [
        ({}, True, "NOERROR: 192.0.2.1, 192.0.2.2"),
        ({"expect_answer": ["192.0.2.2"]}, True, "NOERROR: 192.0.2.1, 192.0.2.2"),
        (
            {"expect_answer": ["192.0.2.1", "192.0.2.9"]},
            False,
            "answer lacks 192.0.2.9 (got 192.0.2.1, 192.0.2.2)",
        ),
        ({"expect_rcode": "NXDOMAIN"}, False, "rcode NOERROR (expected NXDOMAIN)"),
        ({"query_type": "AAAA", "expect_answer": ["2001:db8::1"]}, True, "NOERROR: 2001:db8::1"),
        ({"query_type": "MX", "expect_answer": ["10 mail.example.test"]}, True, None),
        ({"query": "example.test.", "query_type": "TXT", "expect_answer": ["v=ok"]}, True, None),
        ({"query": "nope.example.test.", "expect_rcode": "NXDOMAIN"}, True, "NXDOMAIN: no records"),
        ({"query": "nope.example.test."}, False, "rcode NXDOMAIN (expected NOERROR)"),
        ({"query": "fail.example.test."}, False, "rcode SERVFAIL (expected NOERROR)"),
        ({"query_type": "TXT"}, True, "NOERROR: no records"),
        ({"query_type": "TXT", "expect_answer": ["x"]}, False, "answer lacks x (got no records)"),
    ],
)
async def test_dns(
    dns_server: tuple[Responder, Target], fields: dict[str, Any], ok: bool, detail: str | None
) -> None:
    _responder, target = dns_server
    if fields.get("query_type") == "MX":
        fields["query"] = "example.test."
    probe = make_probe(check("dns", **{"query": "www.example.test.", **fields}))
    result = await probe(target)
    assert result.ok is ok, result
    if detail is not None:
        assert result.detail == detail


def test_dns_query_type_the_probe_cannot_ask_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="query_type"):
        check("dns", query="www.example.test.", query_type="HINFO")


async def test_dns_asks_the_server_every_time(dns_server: tuple[Responder, Target]) -> None:
    """c-ares caches answers per channel; a health check must not be answered from memory."""
    responder, target = dns_server
    probe = make_probe(check("dns", query="www.example.test."))
    for _ in range(3):
        assert (await probe(target)).ok
    assert responder.questions == [("www.example.test.", "A")] * 3


async def test_dns_timeout(dns_server: tuple[Responder, Target]) -> None:
    _responder, target = dns_server
    started = time.monotonic()
    result = await make_probe(check("dns", query="silent.example.test.", timeout=0.3))(target)
    assert (result.ok, result.detail) == (False, "timeout after 0.3s")
    assert 0.25 < time.monotonic() - started < 1.0


async def test_dns_nothing_listening() -> None:
    port = free_port()
    probe = make_probe(check("dns", query="www.example.test.", timeout=0.5))
    result = await probe(Target(check="dns", address="127.0.0.1", port=port))
    assert not result.ok
    assert result.detail in ("connection refused", "timeout after 0.5s")


# -- source address (a region's `source_address`) -------------------------------------------
# Linux answers for all of 127.0.0.0/8 on lo, so any 127.x address can be a probe's source.


@dataclass
class PickyServer:
    """HTTP on 127.0.0.1 that closes, unanswered, every connection from a `shunned` source
    (how a region cut off from an endpoint looks) and records every peer address."""

    port: int
    shunned: set[str]
    peers: list[str] = field(default_factory=list)

    def target(self) -> Target:
        return Target(check="web", address="127.0.0.1", port=self.port)


@pytest.fixture
async def picky_server() -> AsyncIterator[PickyServer]:
    server_state = PickyServer(port=0, shunned={"127.0.0.66"})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        server_state.peers.append(peer)
        try:
            if peer not in server_state.shunned:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("shared_session", [True, False])
async def test_http_probes_leave_from_the_source_address(
    picky_server: PickyServer, shared_session: bool
) -> None:
    source = "127.0.0.7"
    if shared_session:
        async with make_session(source_address=source) as s:
            result = await make_probe(check("http"), session=s, source_address=source)(
                picky_server.target()
            )
    else:
        result = await make_probe(check("http"), source_address=source)(picky_server.target())
    assert (result.ok, result.detail) == (True, "HTTP 200")
    assert picky_server.peers == [source]


async def test_http_endpoint_that_shuns_a_source_fails_only_for_that_source(
    picky_server: PickyServer,
) -> None:
    """The cluster test's cut-off region: same endpoint, two sources, opposite verdicts."""
    results = {}
    for source in ("127.0.0.66", "127.0.0.67"):
        async with make_session(source_address=source) as s:
            probe = make_probe(check("http"), session=s, source_address=source)
            results[source] = await probe(picky_server.target())
    assert not results["127.0.0.66"].ok
    # Closed with the request unread, so the kernel resets the connection.
    assert results["127.0.0.66"].detail == "connection reset"
    assert (results["127.0.0.67"].ok, results["127.0.0.67"].detail) == (True, "HTTP 200")
    # aiohttp may retry a GET once on a reset connection: the shunned source can show twice.
    assert set(picky_server.peers) == {"127.0.0.66", "127.0.0.67"}
    assert picky_server.peers.count("127.0.0.67") == 1


@pytest.fixture
def recording_listener() -> Iterator[socket.socket]:
    """A TCP listener whose accepted peers are read by `accepted_peers`."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as sock:
        yield sock


def accepted_peers(sock: socket.socket, count: int) -> list[str]:
    sock.settimeout(2)
    peers = []
    for _ in range(count):
        conn, peer = sock.accept()
        conn.close()
        peers.append(peer[0])
    return peers


async def test_tcp_probes_leave_from_the_source_address(
    recording_listener: socket.socket,
) -> None:
    sock = recording_listener
    target = Target(check="tcp", address="127.0.0.1", port=sock.getsockname()[1])
    for source in ("127.0.0.8", "127.0.0.9"):
        result = await make_probe(check("tcp", port=1), source_address=source)(target)
        assert (result.ok, result.detail) == (True, "connected"), source
    assert accepted_peers(sock, 2) == ["127.0.0.8", "127.0.0.9"]


async def test_tcp_source_address_problems_are_reported(listener: tuple[str, int]) -> None:
    address, port = listener
    target = Target(check="tcp", address=address, port=port)
    not_local = await make_probe(check("tcp", port=1), source_address="192.0.2.1")(target)
    assert not not_local.ok
    assert not_local.detail.startswith("cannot bind source address 192.0.2.1: "), not_local
    other_family = await make_probe(check("tcp", port=1), source_address="::1")(target)
    assert (other_family.ok, other_family.detail) == (
        False,
        "source address ::1 cannot reach 127.0.0.1",
    )


class SourceRecorder(Responder):
    """The responder, also noting the source address of every question."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.sources.append(addr[0])
        super().datagram_received(data, addr)


async def test_dns_probes_leave_from_the_source_address() -> None:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        SourceRecorder, local_addr=("127.0.0.1", 0)
    )
    target = Target(check="dns", address="127.0.0.1", port=transport.get_extra_info("sockname")[1])
    try:
        probe = make_probe(check("dns", query="www.example.test."), source_address="127.0.0.10")
        result = await probe(target)
    finally:
        transport.close()
    assert result.ok, result
    assert responder.sources == ["127.0.0.10"]


EMFILE_SCRIPT = """
import asyncio, json, os, resource, socket, sys
from dnsfailover.checks import make_probe, make_session
from dnsfailover.config.checks import CheckConfig
from dnsfailover.model import Target

async def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    results = {}
    async with make_session() as session:
        probes = {
            kind: make_probe(CheckConfig(type=kind, timeout=1.0, **extra), session=session)
            for kind, extra in (
                ("tcp", {"port": 1}), ("http", {"path": "/"}), ("dns", {"query": "x."})
            )
        }
        target = Target("c", host, port)
        results["before"] = {k: (await p(target)).unknown for k, p in probes.items()}
        # pycares closes a resolver's sockets on a thread of its own, a little later: wait
        # until this process's descriptors stop changing, or one would free up mid-test
        counts = []
        while len(counts) < 5 or len(set(counts[-5:])) > 1:
            counts.append(len(os.listdir("/proc/self/fd")))
            await asyncio.sleep(0.02)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        hog = []

        def take_all() -> None:  # again before each probe: the one before may free one late
            try:
                while True:
                    hog.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass

        try:
            for kind, probe in probes.items():
                take_all()
                r = await probe(target)
                results[kind] = [r.ok, r.unknown, r.detail]
        finally:
            for fd in hog:
                os.close(fd)
        results["after"] = {k: (await p(target)).unknown for k, p in probes.items()}
    print(json.dumps(results))

asyncio.run(main())
"""


def test_probes_that_cannot_open_a_socket_report_unknown(listener: tuple[str, int]) -> None:
    """In a child whose descriptors are all taken: every probe type says "unknown" (the
    process, not the target), and a plain failure again once descriptors are free."""
    import json
    import sys

    host, port = listener
    proc = subprocess.run(
        [sys.executable, "-c", EMFILE_SCRIPT, host, str(port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    for kind in ("tcp", "http", "dns"):
        ok, unknown, detail = got[kind]
        assert (ok, unknown) == (False, True), (kind, detail)
        assert detail.startswith("could not probe: out of file descriptors"), (kind, detail)
    assert got["before"] == got["after"] == {"tcp": False, "http": False, "dns": False}
    assert proc.stderr.count("cannot open a socket to probe") <= 3
