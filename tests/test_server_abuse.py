"""Hostile DNS clients: floods, half-sent frames, too many connections, oversize datagrams.

Real sockets against a real server on 127.0.0.1 port 0: the embedded server in-process, and
`dnsfailover serve` as a subprocess where a failover must still happen on time.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import pytest
from conftest_server import ORIGIN, example_snapshot, frame
from support import HttpEndpoints, Server, wait_for

from dnsfailover.server import DnsServer

HOST = "127.0.0.1"
WWW = f"www.{ORIGIN}"


class Flood:
    """Threads that each stream zero-length TCP frames at a server as fast as they can, and
    connect again whenever the server closes them (an attacker would)."""

    def __init__(self, port: int, connections: int) -> None:
        self._port = port
        self._stop = threading.Event()
        self.connects = 0
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(connections)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        junk = b"\0\0" * 32768
        while not self._stop.is_set():
            try:
                with socket.create_connection((HOST, self._port), timeout=1) as sock:
                    self.connects += 1
                    while not self._stop.is_set():
                        sock.sendall(junk)
            except OSError:
                time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def flood() -> Iterator[Callable[[int, int], Flood]]:
    floods: list[Flood] = []

    def start(port: int, connections: int) -> Flood:
        floods.append(Flood(port, connections))
        return floods[-1]

    yield start
    for f in floods:
        f.stop()


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    srv = DnsServer(example_snapshot(), port=0, tcp_idle_timeout=0.3, udp_thread=True)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def port_of(srv: DnsServer) -> int:
    assert srv.address is not None
    return srv.address[1]


async def tcp_answer(port: int) -> list[str]:
    query = dns.message.make_query(WWW, "A")
    reply = await dns.asyncquery.tcp(query, HOST, port=port, timeout=2)
    return [rd.to_text() for rrset in reply.answer for rd in rrset]


def closed_within(socks: list[socket.socket], limit: float) -> dict[int, float]:
    """Wait (on this thread) until the server closes each socket; index -> seconds taken."""
    start = time.monotonic()
    closed: dict[int, float] = {}
    while len(closed) < len(socks) and time.monotonic() - start < limit:
        waiting = [s for i, s in enumerate(socks) if i not in closed]
        readable, _, _ = select.select(waiting, [], [], 0.02)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed[socks.index(sock)] = time.monotonic() - start
    return closed


# --- frames that get no answer ------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"", id="zero-length"),
        pytest.param(b"\x12\x34\x01\x00\x00", id="shorter-than-a-header"),
        pytest.param(b"\x12\x34\x81\x80" + b"\x00" * 8, id="a-response"),
    ],
)
async def test_a_frame_that_gets_no_answer_ends_the_connection(
    server: DnsServer, bad: bytes
) -> None:
    """As BIND: the queries before it are answered, nothing after it, and the socket closes."""
    first, after = (dns.message.make_query(WWW, "A") for _ in range(2))
    reader, writer = await asyncio.open_connection(HOST, port_of(server))
    try:
        writer.write(frame(first.to_wire()) + frame(bad) + frame(after.to_wire()))
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 2))
        reply = dns.message.from_wire(await reader.readexactly(length))
        assert reply.id == first.id
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed, `after` unanswered
    finally:
        writer.close()
        await writer.wait_closed()


# --- idle and half-sent connections -------------------------------------------------------


async def test_half_sent_frames_are_closed_after_the_idle_timeout_under_a_flood(
    server: DnsServer, flood: Callable[[int, int], Flood]
) -> None:
    """Silent, half a length prefix, a prefix and half a message: each closed once it has been
    quiet for the idle timeout (0.3 s), while four clients flood the server with empty frames;
    a query sent in two parts within the timeout is still answered."""
    port = port_of(server)
    query = frame(dns.message.make_query(WWW, "A").to_wire())
    started = flood(port, 4)
    socks = [socket.create_connection((HOST, port)) for _ in range(30)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall([b"", query[:1], query[:2], query[:9]][i % 4])
        split = socket.create_connection((HOST, port))
        try:
            split.sendall(query[:7])
            await asyncio.sleep(0.1)
            split.sendall(query[7:])
            split.settimeout(2)
            assert dns.message.from_wire(split.recv(4096)[2:]).answer
        finally:
            split.close()
        closed = await asyncio.to_thread(closed_within, socks, 5.0)
        assert sorted(closed) == list(range(len(socks))), "some connections were never closed"
        assert max(closed.values()) < 5 * 0.3, closed  # a generous bound of the 0.3 s timeout
        assert started.connects > 4  # the flooding connections were closed too
    finally:
        for sock in socks:
            sock.close()


# --- the connection limit -----------------------------------------------------------------


async def test_connection_limit_holds_and_keeps_room_for_a_new_client() -> None:
    """With 8 allowed, 8 silent connections do not lock clients out: a new one is answered
    (the connection quiet the longest makes room), and of 20 more only the newest 8 stay."""
    srv = DnsServer(example_snapshot(), port=0, max_tcp_connections=8, tcp_idle_timeout=60)
    _, port = await srv.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(8):
            socks.append(socket.create_connection((HOST, port)))
            socks[-1].sendall(b"\x00")  # half a length prefix, then nothing
            await asyncio.sleep(0.02)
        assert await tcp_answer(port) == ["192.0.2.1"]
        await asyncio.sleep(0.1)
        assert list(await asyncio.to_thread(closed_within, socks, 0.3)) == [0]
        for _ in range(20):
            socks.append(socket.create_connection((HOST, port)))
            await asyncio.sleep(0.02)
        closed = await asyncio.to_thread(closed_within, socks, 0.3)
        assert sorted(set(range(len(socks))) - set(closed)) == list(range(20, 28))
        assert srv.tcp_connections == 8
        assert await tcp_answer(port) == ["192.0.2.1"]
    finally:
        for sock in socks:
            sock.close()
        await srv.stop()


# --- oversize UDP queries -----------------------------------------------------------------


@pytest.mark.parametrize("size", [4097, 5000, 65000])
async def test_udp_query_over_4096_bytes_is_answered_as_bind_does(size: int) -> None:
    """BIND 9.18 answers such a query like any other (checked with EDNS padding and with
    trailing bytes), as our UDP on the event loop did; the batched UDP thread (`serve`'s
    default) dropped every datagram over 4,096 bytes."""
    padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"")
    base = len(dns.message.make_query(WWW, "A", use_edns=0, options=[padding]).to_wire())
    padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\0" * (size - base))
    padded = dns.message.make_query(WWW, "A", use_edns=0, options=[padding])
    plain = dns.message.make_query(WWW, "A", use_edns=0)
    queries = [  # (query, its datagram)
        (padded, padded.to_wire(max_size=65535)),
        (plain, plain.to_wire() + b"\0" * (size - len(plain.to_wire()))),
    ]
    async with DnsServer(example_snapshot(), port=0, udp_thread=True) as srv:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            for query, wire in queries:
                assert len(wire) == size
                await asyncio.to_thread(sock.sendto, wire, (HOST, port_of(srv)))
                reply = dns.message.from_wire(await asyncio.to_thread(sock.recv, 65535))
                assert reply.id == query.id
                assert reply.rcode() == dns.rcode.NOERROR
                assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["192.0.2.1"]


# --- the node: a failover through `dnsfailover serve` under a flood -----------------------

INTERVAL, FALL, RISE, TIMEOUT = 0.2, 3, 2, 0.15
DETECTION = INTERVAL * FALL + TIMEOUT


def www_config(path: Path, ports: dict[str, int]) -> Path:
    endpoints = ", ".join(f"{{address: {a}, check_port: {p}}}" for a, p in ports.items())
    path.write_text(
        f"""\
checks:
  web: {{type: http, path: /healthz, interval: {int(INTERVAL * 1000)}ms,
        timeout: {int(TIMEOUT * 1000)}ms, rise: {RISE}, fall: {FALL}}}
zones:
  {ORIGIN}:
    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}
    nameservers: [ns1.{ORIGIN}]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www:
        policy: active-active
        check: web
        endpoints: [{endpoints}]
"""
    )
    return path


@pytest.mark.e2e
def test_failover_on_time_while_four_clients_flood_tcp_with_empty_frames(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Callable[..., Server],
    flood: Callable[[int, int], Flood],
) -> None:
    """The issue's repro: with four clients streaming zero-length frames, failover took 22.6 s
    (0.1 s idle) and TCP stayed dead.  Now detection stays within a generous bound and TCP
    queries on other connections are answered throughout."""
    a, b = "127.0.0.131", "127.0.0.132"
    ports = {addr: http_endpoints.start(addr) for addr in (a, b)}
    server = serve(www_config(tmp_path / "abuse.yaml", ports), "--log-level", "WARNING")
    wait_for(lambda: server.answer(WWW) == (a, b), 10)
    started = flood(server.port, 4)
    wait_for(lambda: started.connects >= 4, 5)
    time.sleep(0.5)
    for _ in range(3):
        reply = server.query(WWW, tcp=True)
        assert sorted(rd.to_text() for rrset in reply.answer for rd in rrset) == [a, b]
    http_endpoints.stop(b)
    took = wait_for(lambda: server.answer(WWW) == (a,), 5 * DETECTION + 2)
    assert took < 5 * DETECTION, f"failover took {took:.2f}s"
    reply = server.query(WWW, tcp=True)
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == [a]
    assert started.connects > 4  # the server keeps closing the flooding connections
