"""UDP and TCP on the same port, answering from a swappable snapshot.

UDP runs on a thread of its own (or the caller's loop), TCP on a thread and loop of its own
(:mod:`dnsfailover.server.tcp`): no DNS client can take the time of the loop that probes and
decides."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any, cast

from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.steering import Steering
from dnsfailover.rdata import Labels
from dnsfailover.server import signed
from dnsfailover.server.fast import FastTable
from dnsfailover.server.identity import identity_reply
from dnsfailover.server.relearn import relearn
from dnsfailover.server.rrl import Action, RateLimiter, RrlSettings, truncated
from dnsfailover.server.signed import Keys
from dnsfailover.server.steered import DEFAULT_LIMITS, Where
from dnsfailover.server.tcp import StreamHandler, TcpService
from dnsfailover.server.wire import DEFAULT_UDP_PAYLOAD, respond
from dnsfailover.server.zone import ZoneSnapshot

try:
    from dnsfailover.server import _mmsg
except ImportError:  # not built (non-Linux, no compiler): one recvfrom/sendto per datagram
    _mmsg = None  # type: ignore[assignment]

log = logging.getLogger("dnsfailover.server")


__all__ = ["DnsServer", "StreamHandler"]

_UDP_BATCH = 64
"""Datagrams taken by one recvmmsg and answered by one sendmmsg on the UDP thread."""
_UDP_BUFSIZE = 0xFFFF
"""Longest datagram the batched UDP thread takes: any, so a query is answered whatever its
size, as on the other UDP paths and by BIND 9.18 (untouched buffer pages cost nothing)."""

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
        reply = self._server.udp_reply(data, str(addr[0]))
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (port unreachable...) are the client's problem.
        log.debug("udp: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _UdpThread:
    """Answers datagrams with blocking recvfrom/sendto on a thread of its own.

    Cheaper per datagram than an event-loop callback (no selector round trip, no transport
    bookkeeping), and the loop stays free for TCP, probes and the engine.  The GIL is
    released in every recvfrom, so the loop thread still gets its turns under load.  With the
    ``_mmsg`` extension (Linux), one recvmmsg takes every queued datagram (up to
    ``_UDP_BATCH``), the C hit path answers the hits and one sendmmsg sends their replies,
    without the GIL; only the misses come back here.
    """

    def __init__(self, server: DnsServer, sock: socket.socket) -> None:
        self._server, self._sock = server, sock
        self._stopping = False
        sock.setblocking(True)
        # recvmmsg/sendmmsg, and the C hit path unless `c_hits` is off (then every datagram
        # is a miss: see `_run_hits`)
        self._loop = (
            _mmsg.UdpLoop(sock.fileno(), _UDP_BATCH, _UDP_BUFSIZE) if _mmsg is not None else None
        )
        if self._loop is not None:
            server.attach(self._loop)
        self._thread = threading.Thread(target=self._run, name="dnsfailover-udp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._loop is not None:
            self._run_hits(self._loop)
            return
        recv, send, reply_to = self._sock.recvfrom, self._sock.sendto, self._server.udp_reply
        while not self._stopping:
            try:
                data, addr = recv(0xFFFF)
            except OSError as e:
                log.debug("udp: %s", e)
                continue
            if self._stopping:
                break
            try:
                reply = reply_to(data, str(addr[0]))
                if reply is not None:
                    send(reply, addr)
            except OSError as e:
                log.debug("udp: %s", e)
            except Exception:
                log.warning("udp: cannot answer", exc_info=True)

    def _run_hits(self, loop: _mmsg.UdpLoop) -> None:
        """The C hit path answers and sends every hit (without the GIL); a batch's misses
        come back with the table that answered it, and are answered from it here."""
        send, fd = _mmsg.send_batch, self._sock.fileno()
        while not self._stopping:
            try:
                table, batch = loop.run()
            except OSError as e:
                log.debug("udp: %s", e)
                continue
            if self._stopping:
                break
            reply_to = self._server.udp_reply
            replies: list[tuple[bytes, bytes]] = []
            for data, host, addr in batch:
                try:
                    reply = reply_to(data, host, cast(FastTable, table))
                except Exception:
                    log.warning("udp: cannot answer", exc_info=True)
                    continue
                if reply is not None:
                    replies.append((reply, addr))
            try:
                send(fd, replies)
            except OSError as e:
                log.debug("udp: %s", e)

    async def stop(self) -> None:
        self._stopping = True
        if self._loop is not None:
            self._loop.stop()
        # shutdown() wakes the blocked recvfrom (Linux; it also raises ENOTCONN for UDP).
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        await asyncio.to_thread(self._thread.join)
        self._sock.close()


class DnsServer:
    """An authoritative DNS server for the zones of one :class:`ZoneSnapshot` at a time.

    Every query reads the current snapshot once and answers from it alone, so
    :meth:`publish` is atomic; it may be called from any thread.  Plain queries are
    answered from the snapshot's :class:`FastTable` of replayed full-path replies.

    ``reuse_port`` binds with SO_REUSEPORT so that worker processes can share the port
    (``udp_only`` for workers: TCP, and so zone transfers, stay with the main process);
    ``udp_thread`` answers UDP on a thread with blocking calls rather than on the loop;
    ``rrl`` rate-limits UDP responses; ``identity`` is the TXT answer to CH ``id.server.``.
    ``c_hits``: the UDP thread answers hits in C (`_mmsg.UdpLoop`) when the extension is
    built; with RRL on, every datagram takes the Python path (which rate-limits).

    ``steering`` places the clients of steered names (see `set_steering`): a question for
    a steered set of the snapshot is answered with the client's location group's answer,
    the client being the query's ECS network (truncated to ``limits``) or else its source
    address, and the ECS echo carries the SCOPE that placement depends on.
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
        reuse_port: bool = False,
        rrl: RrlSettings | None = None,
        identity: str | None = None,
        fast: bool = True,
        udp_only: bool = False,
        udp_thread: bool = False,
        steering: Steering | None = None,
        limits: SourceLimits = DEFAULT_LIMITS,
        c_hits: bool = True,
    ) -> None:
        self._fast = fast
        self.c_hits = c_hits and _mmsg is not None and udp_thread
        self._loops: list[_mmsg.UdpLoop] = []  # answering from `_table`'s C hit table
        self._relearner = ThreadPoolExecutor(1, thread_name_prefix="dnsfailover-relearn")
        self._max_udp_payload = max_udp_payload
        self._limits = limits
        # queries answered per (steered name, location group), since start
        self.steered_queries: dict[tuple[str, str], int] = {}
        self._swap = threading.Lock()  # publish and set_steering: one swap at a time
        self.rrl = RateLimiter(rrl) if rrl is not None and rrl.enabled else None
        self._table = self._new_table(snapshot, steering)
        self.tcp_handler = tcp_handler
        self.reuse_port = reuse_port
        self.udp_only = udp_only
        self.udp_thread = udp_thread
        self.identity = identity if identity is not None else f"dnsfailover-{os.getpid()}"
        self._host = host
        self._port = port
        self._max_tcp_connections = max_tcp_connections
        self._tcp_idle_timeout = tcp_idle_timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._udp_thread: _UdpThread | None = None
        self._tcp: TcpService | None = None
        self._address: tuple[str, int] | None = None
        # Responses sent, by the header's 4-bit rcode; [16] counts queries left unanswered.
        # Plain list increments: cheap on the hot path, read by /metrics.  Unlocked, so two
        # threads may rarely lose a count; fine for a metric.
        self.rcodes = [0] * 17

    @property
    def snapshot(self) -> ZoneSnapshot:
        """The snapshot queries are answered from now."""
        return self._table.snapshot

    @property
    def tcp_connections(self) -> int:
        """TCP connections open now."""
        return 0 if self._tcp is None else self._tcp.connections

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) bound by :meth:`start`, or None before it."""
        return self._address

    def publish(self, snapshot: ZoneSnapshot, changed: frozenset[Labels] | None = None) -> None:
        """Serve ``snapshot`` from the next query on; queries in flight finish on the old one.

        ``changed``: when ``snapshot`` is the next version of the one served and only these
        names' answers differ, the fast path keeps the other names' replies.
        """
        with self._swap:
            current = self._table
            table = current.carried(snapshot, changed) if self._fast else None
            # one assignment: snapshot, steering and table together
            self._serve(table if table is not None else self._new_table(snapshot, current.steering))
        if table is not None and table.stale:
            # the changed names' new address replies, made before they are asked (off this
            # thread: a publish returns at once, the old replies are gone already)
            with contextlib.suppress(RuntimeError):  # stopped: nothing to relearn for
                self._relearner.submit(relearn, table, lambda: self._table is table)
        if log.isEnabledFor(logging.INFO):
            serials = " ".join(f"{o}={snapshot.serial(o)}" for o in snapshot.origins)
            log.info("publish: zones=%d serials=%s", len(snapshot.origins), serials or "-")

    @property
    def steering(self) -> Steering | None:
        """What places the clients of steered names now (None: nobody is steered)."""
        return self._table.steering

    def set_steering(
        self, steering: Steering | None, *, limits: SourceLimits | None = None
    ) -> None:
        """Place clients with ``steering`` from the next query on (a reload's new rules or
        database), and with new source prefix ``limits`` if given; nothing learned with the
        old one is replayed after this returns.  A database reloaded in place must be set
        again: the fast path remembers placements per steering."""
        with self._swap:
            if limits is not None:
                self._limits = limits
            self._serve(self._new_table(self._table.snapshot, steering))

    def attach(self, loop: _mmsg.UdpLoop) -> None:
        """Answer `loop`'s hits from the table served now and every later one."""
        with self._swap:
            self._loops.append(loop)
            self._serve(self._table)

    def _serve(self, table: FastTable) -> None:
        """Answer from `table` from the next query on (with `_swap` held).  The C hit path
        first, in one `set_table` with the table that answers its misses."""
        hits = table.hits if self.rrl is None else None  # (RRL: every datagram to Python)
        for loop in self._loops:
            loop.set_table(hits, table)
        self._table = table

    def response_counts(self) -> list[int]:
        """Responses sent, by the header's 4-bit rcode, and [16]: queries left unanswered
        (the Python paths' `rcodes` plus the C hit path's)."""
        counts = list(self.rcodes)
        for loop in self._loops:
            for rcode, n in enumerate(loop.counts()):
                counts[rcode] += n
        return counts

    def _new_table(self, snapshot: ZoneSnapshot, steering: Steering | None) -> FastTable:
        # With fast=False the table never learns: every query takes the full path.
        return FastTable(
            snapshot,
            max_udp_payload=self._max_udp_payload,
            max_entries=65_536 if self._fast else 0,
            responder=self._full_answer,
            steering=steering,
            limits=self._limits,
            queries=self.steered_queries,
            c_hits=self.c_hits,
        )

    keyring: Keys = MappingProxyType({})
    """The TSIG keys signed queries are checked against (replace it to change them)."""

    def answer(self, data: bytes, *, tcp: bool, client: str | None = None) -> bytes | None:
        """The reply to one wire query from the current snapshot (None: send nothing);
        ``client``: its source address (places it for steered names without ECS)."""
        return self._table.answer(data, tcp=tcp, client=client)

    def udp_reply(self, data: bytes, host: str, table: FastTable | None = None) -> bytes | None:
        """The reply to a datagram from ``host``, after rate limiting (None: send nothing);
        ``table``: the one to answer from (the C hit path's), else the current one."""
        reply = (table if table is not None else self._table).answer(data, tcp=False, client=host)
        if reply is None:
            self.rcodes[16] += 1
            return None
        if self.rrl is not None:
            action = self.rrl.check(host, reply)
            if action is Action.DROP:
                self.rcodes[16] += 1
                return None
            if action is Action.SLIP:
                reply = truncated(reply)
        self.rcodes[reply[3] & 0xF] += 1
        return reply

    def _full_answer(
        self,
        snapshot: ZoneSnapshot,
        data: bytes,
        tcp: bool,
        max_udp_payload: int,
        where: Where | None = None,
        /,
    ) -> bytes | None:
        def unsigned(query: bytes, reserve: int) -> bytes | None:
            reply = self._identity_reply(query)
            if reply is not None:
                return reply
            return respond(
                snapshot,
                query,
                tcp=tcp,
                max_udp_payload=max_udp_payload,
                reserve=reserve,
                where=where,
            )

        # A signed query is checked, answered and signed (it never takes the fast path).
        return signed.answer(data, self.keyring, unsigned)

    def _identity_reply(self, data: bytes) -> bytes | None:
        """The CH TXT answer naming this server process, or None for any other query."""
        return identity_reply(data, self.identity, self._max_udp_payload)

    async def start(self) -> tuple[str, int]:
        """Bind UDP and TCP on the same port and start answering.

        With port 0, a port free for both is picked.

        :returns: the (host, port) actually bound.
        :raises OSError: if the address cannot be bound.
        """
        if self._address is not None:
            raise RuntimeError("DnsServer already started")
        loop = asyncio.get_running_loop()
        if self.udp_only:
            return await self._start_udp_only(loop)
        tcp_sock, udp_sock = await self._bind(loop)
        # TCP on a thread and loop of its own: no client can take the caller's loop's time.
        tcp = TcpService(
            self,
            tcp_sock,
            max_connections=self._max_tcp_connections,
            idle_timeout=self._tcp_idle_timeout,
        )
        try:
            await tcp.start()
            self._tcp = tcp
            await self._serve_udp(loop, udp_sock)
        except BaseException:
            udp_sock.close()
            await tcp.stop()
            self._tcp = None
            raise
        host, port = tcp_sock.getsockname()[:2]
        self._address = (str(host), int(port))
        log.info("start: listening on udp+tcp %s port %d", host, port)
        return self._address

    async def _serve_udp(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        if self.udp_thread:
            self._udp_thread = _UdpThread(self, sock)
            return
        protocol = _UdpProtocol(self)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        self._udp_protocol = protocol

    async def _start_udp_only(self, loop: asyncio.AbstractEventLoop) -> tuple[str, int]:
        infos = await loop.getaddrinfo(
            self._host, self._port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
            sock.setblocking(False)
            await self._serve_udp(loop, sock)
        except BaseException:
            sock.close()
            raise
        host, port = sock.getsockname()[:2]
        self._address = (str(host), int(port))
        log.info("start: listening on udp %s port %d", host, port)
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
                if self.reuse_port:
                    tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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

    async def stop(self) -> None:
        """Stop listening, close open TCP connections and wait until everything is closed."""
        if self._udp is not None and self._udp_protocol is not None:
            self._udp.close()
            await self._udp_protocol.closed
        self._udp = self._udp_protocol = None
        if self._udp_thread is not None:
            await self._udp_thread.stop()
            self._udp_thread = None
        if self._tcp is not None:
            await self._tcp.stop()
            self._tcp = None
        self._relearner.shutdown(wait=False, cancel_futures=True)
        if self._address is not None:
            log.info("stop: %s %s port %d", "udp" if self.udp_only else "udp+tcp", *self._address)
        self._address = None

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
