"""The recvmmsg/sendmmsg extension on real UDP sockets, and the UDP thread that batches with it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest
from conftest_server import ORIGIN, example_snapshot

from dnsfailover.server import DnsServer
from dnsfailover.server import dns as server_dns

pytest.importorskip("dnsfailover.server._mmsg")
from dnsfailover.server import _mmsg

FAMILIES = [(socket.AF_INET, "127.0.0.1")]
if socket.has_ipv6:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        FAMILIES.append((socket.AF_INET6, "::1"))
    except OSError:
        pass


@pytest.fixture(params=FAMILIES, ids=lambda f: f[1])
def family(request: pytest.FixtureRequest) -> tuple[socket.AddressFamily, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sockets(family: tuple[socket.AddressFamily, str]) -> Iterator[list[socket.socket]]:
    """Four bound UDP sockets of one family, with a timeout so a failing test cannot hang."""
    made = []
    for _ in range(4):
        s = socket.socket(family[0], socket.SOCK_DGRAM)
        s.bind((family[1], 0))
        s.settimeout(2)
        made.append(s)
    yield made
    for s in made:
        s.close()


def test_recv_batch_takes_every_queued_datagram_with_its_source(
    sockets: list[socket.socket],
) -> None:
    server, *clients = sockets
    sent = []
    for i, client in enumerate(clients):
        for j in range(2):
            data = b"query %d.%d" % (i, j)
            client.sendto(data, server.getsockname())
            sent.append((data, client.getsockname()[1]))
    batch = _mmsg.recv_batch(server.fileno(), 64)
    host = server.getsockname()[0]
    assert [(data, h) for data, h, _ in batch] == [(data, host) for data, _ in sent]
    # the opaque sockaddr is the sender's: a reply to it reaches that very socket
    for data, _, addr in batch:
        assert _mmsg.send_batch(server.fileno(), [(b"re " + data, addr)]) == 1
    for data, port in sent:
        client = next(c for c in clients if c.getsockname()[1] == port)
        assert client.recv(100) == b"re " + data


def test_recv_batch_takes_at_most_max_messages(sockets: list[socket.socket]) -> None:
    server, client, *_ = sockets
    for i in range(5):
        client.sendto(bytes([i]), server.getsockname())
    assert [d for d, _, _ in _mmsg.recv_batch(server.fileno(), 3)] == [b"\0", b"\1", b"\2"]
    assert [d for d, _, _ in _mmsg.recv_batch(server.fileno(), 3)] == [b"\3", b"\4"]


def test_recv_batch_on_an_idle_non_blocking_socket_is_empty(
    sockets: list[socket.socket],
) -> None:
    sockets[0].setblocking(False)
    assert _mmsg.recv_batch(sockets[0].fileno(), 8) == []


def test_recv_batch_drops_datagrams_longer_than_the_buffer(sockets: list[socket.socket]) -> None:
    server, client, *_ = sockets
    client.sendto(b"x" * 100, server.getsockname())
    client.sendto(b"short", server.getsockname())
    assert [d for d, _, _ in _mmsg.recv_batch(server.fileno(), 8, 50)] == [b"short"]


def test_send_batch_delivers_to_several_destinations(sockets: list[socket.socket]) -> None:
    server, *clients = sockets
    for client in clients:
        client.sendto(b"hello", server.getsockname())
    batch = _mmsg.recv_batch(server.fileno(), 64)
    assert len(batch) == len(clients)
    replies = [(b"reply %d" % i, addr) for i, (_, _, addr) in enumerate(batch)]
    assert _mmsg.send_batch(server.fileno(), replies) == len(clients)
    assert [c.recv(100) for c in clients] == [b"reply %d" % i for i in range(len(clients))]
    assert _mmsg.send_batch(server.fileno(), []) == 0


def test_errors() -> None:
    with pytest.raises(OSError, match="Bad file descriptor"):
        _mmsg.recv_batch(-1, 8)
    with pytest.raises(OSError, match="Bad file descriptor"):
        _mmsg.send_batch(-1, [(b"x", b"\x02\x00\x00\x35\x7f\x00\x00\x01" + bytes(8))])
    with pytest.raises(ValueError, match="max_messages"):
        _mmsg.recv_batch(0, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(TypeError):
            _mmsg.send_batch(s.fileno(), [("text", b"")])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            _mmsg.send_batch(s.fileno(), [b"no tuple"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="sockaddr"):
            _mmsg.send_batch(s.fileno(), [(b"x", bytes(1000))])


@pytest.mark.parametrize("batched", [True, False], ids=["recvmmsg", "recvfrom"])
async def test_udp_thread_answers_a_burst_from_several_clients(
    batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not batched:
        monkeypatch.setattr(server_dns, "_mmsg", None)
    async with DnsServer(example_snapshot(), port=0, udp_thread=True) as srv:
        assert srv.address is not None
        queries = [dns.message.make_query(f"www.{ORIGIN}", dns.rdatatype.A) for _ in range(40)]
        replies = await asyncio.gather(
            *(dns.asyncquery.udp(q, "127.0.0.1", port=srv.address[1], timeout=2) for q in queries)
        )
        for q, r in zip(queries, replies, strict=True):
            assert r.id == q.id
            assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.1"]
