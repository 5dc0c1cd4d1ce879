"""The asyncio transports: UDP and TCP on the same port, answering from a swappable snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any, cast

from dnsfailover.server.wire import DEFAULT_UDP_PAYLOAD, respond
from dnsfailover.server.zone import ZoneSnapshot

log = logging.getLogger("dnsfailover.server")

StreamHandler = Callable[[bytes, tuple[str, int]], Iterable[bytes] | None]
"""Takes a TCP query and the peer first: replies (several for a zone transfer) or None to
let the normal answer path handle it."""

_BIND_ATTEMPTS = 20
"""With port 0, how many free TCP ports to try before one is also free for UDP."""


class _UdpProtocol(asyncio.DatagramProtocol):
    """Answers each datagram synchronously from the server's current snapshot."""

    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport: cast, not check.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self._server.answer(data, tcp=False)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (port unreachable...) are the client's problem.
        log.debug("udp: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class DnsServer:
    """An authoritative DNS server for the zones of one :class:`ZoneSnapshot` at a time.

    Every query reads the current snapshot once and answers from it alone, so
    :meth:`publish` is atomic; it may be called from any thread.
    """

    def __init__(
        self,
        snapshot: ZoneSnapshot,
        host: str = "127.0.0.1",
        port: int = 5353,
        *,
        max_udp_payload: int = DEFAULT_UDP_PAYLOAD,
        max_tcp_connections: int = 128,
        tcp_idle_timeout: float = 10.0,
        tcp_handler: StreamHandler | None = None,
    ) -> None:
        self._snapshot = snapshot
        self.tcp_handler = tcp_handler
        self._host = host
        self._port = port
        self._max_udp_payload = max_udp_payload
        self._max_tcp_connections = max_tcp_connections
        self._tcp_idle_timeout = tcp_idle_timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_conns: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._address: tuple[str, int] | None = None

    @property
    def snapshot(self) -> ZoneSnapshot:
        """The snapshot queries are answered from now."""
        return self._snapshot

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) bound by :meth:`start`, or None before it."""
        return self._address

    def publish(self, snapshot: ZoneSnapshot) -> None:
        """Serve ``snapshot`` from the next query on; queries in flight finish on the old one."""
        self._snapshot = snapshot
        if log.isEnabledFor(logging.INFO):
            serials = " ".join(f"{o}={snapshot.serial(o)}" for o in snapshot.origins)
            log.info("publish: zones=%d serials=%s", len(snapshot.origins), serials or "-")

    def answer(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one wire query from the current snapshot (None: send nothing)."""
        return respond(self._snapshot, data, tcp=tcp, max_udp_payload=self._max_udp_payload)

    async def start(self) -> tuple[str, int]:
        """Bind UDP and TCP on the same port and start answering.

        With port 0, a port free for both is picked.

        :returns: the (host, port) actually bound.
        :raises OSError: if the address cannot be bound.
        """
        if self._address is not None:
            raise RuntimeError("DnsServer already started")
        loop = asyncio.get_running_loop()
        tcp_sock, udp_sock = await self._bind(loop)
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
            protocol = _UdpProtocol(self)
            transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=udp_sock)
        except BaseException:
            tcp_sock.close()
            udp_sock.close()
            if self._tcp is not None:
                self._tcp.close()
                await self._tcp.wait_closed()
                self._tcp = None
            raise
        self._udp, self._udp_protocol = transport, protocol
        host, port = tcp_sock.getsockname()[:2]
        self._address = (str(host), int(port))
        log.info("start: listening on udp+tcp %s port %d", host, port)
        return self._address

    async def _bind(self, loop: asyncio.AbstractEventLoop) -> tuple[socket.socket, socket.socket]:
        infos = await loop.getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, sockaddr = infos[0]
        attempts = _BIND_ATTEMPTS if self._port == 0 else 1
        for attempt in range(attempts):
            tcp_sock = socket.socket(family, socket.SOCK_STREAM)
            udp_sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp_sock.bind(sockaddr)
                port = tcp_sock.getsockname()[1]
                udp_sock.bind((sockaddr[0], port, *sockaddr[2:]))
            except OSError:
                tcp_sock.close()
                udp_sock.close()
                if attempt == attempts - 1:
                    raise
                continue
            tcp_sock.setblocking(False)
            udp_sock.setblocking(False)
            return tcp_sock, udp_sock
        raise AssertionError("unreachable")  # pragma: no cover

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer length-prefixed queries in order until the client closes or idles out."""
        task = asyncio.current_task()
        if task is None or len(self._tcp_conns) >= self._max_tcp_connections:
            log.debug("tcp: connection limit %d reached", self._max_tcp_connections)
            writer.close()
            return
        self._tcp_conns[task] = writer
        peername = writer.get_extra_info("peername")
        peer = (str(peername[0]), int(peername[1])) if peername else ("", 0)
        try:
            while True:
                async with asyncio.timeout(self._tcp_idle_timeout):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                handled = self.tcp_handler(data, peer) if self.tcp_handler is not None else None
                replies = list(handled) if handled is not None else [self.answer(data, tcp=True)]
                for reply in replies:
                    if reply is not None:
                        writer.write(struct.pack("!H", len(reply)) + reply)
                async with asyncio.timeout(self._tcp_idle_timeout):
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client closed, sent a short frame or went quiet: end the connection
        except Exception:
            log.warning("tcp: connection failed", exc_info=True)
        finally:
            self._tcp_conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        """Stop listening, close open TCP connections and wait until everything is closed."""
        if self._udp is not None and self._udp_protocol is not None:
            self._udp.close()
            await self._udp_protocol.closed
        self._udp = self._udp_protocol = None
        if self._tcp is not None:
            self._tcp.close()
            # Abort rather than cancel: the handlers then end on a read or drain error.
            # (Python 3.11's stream server logs handlers that end cancelled as errors.)
            tasks = list(self._tcp_conns)
            for writer in self._tcp_conns.values():
                writer.transport.abort()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None
        if self._address is not None:
            log.info("stop: udp+tcp %s port %d", *self._address)
        self._address = None

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
