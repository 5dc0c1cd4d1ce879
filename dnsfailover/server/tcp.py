"""DNS over TCP (RFC 7766) on a thread and event loop of its own.

The node's event loop runs probes, decisions and publishing.  No TCP client may take that
loop's time: not one that streams frames as fast as it can, nor hundreds that send half a
frame and go quiet, nor one that never reads its replies.  So TCP is served here, on its own
thread with its own loop; it shares with the rest of the process only the server's answer
function (which reads the current immutable snapshot, as the UDP thread does) and the zone
transfer handler (which runs on a worker thread, as it always did).

Each connection is held to what BIND holds it to, and a little more:

- a frame that gets no answer (zero-length, shorter than a header, a response, garbage that
  cannot even be given FORMERR) ends the connection, after the replies before it;
- at most ``frames_per_turn`` frames are answered before other connections get their turn;
- a connection that completes no frame within ``idle_timeout`` (silent, half a length prefix,
  half a message, or a client that stopped reading its replies) is closed;
- at most ``max_connections`` are open: a new one closes the one quiet the longest;
- at most one frame (64 KiB) is buffered per connection: reading pauses while a transfer
  runs or replies wait to be sent, and the kernel's window holds the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable
from typing import Protocol, cast

from dnsfailover.tasks import loop_factory

log = logging.getLogger("dnsfailover.server")

FRAMES_PER_TURN = 32
"""Frames one connection gets answered before the others get a turn."""
_INITIAL_BUFFER = 4096
"""A connection's receive buffer; it grows to the frame in progress (at most 65,537)."""
_NICENESS = 10
"""The TCP thread's nice value (Linux): when CPU is short, the probing and deciding loop and
the UDP thread run first (bench/tcp_abuse.py: UDP p95 under abuse 5.4 -> 4.0 ms)."""
_SWEEPS_PER_TIMEOUT = 4
"""How often, per idle timeout, connections are checked (closed 1x to 1.25x after going quiet)."""


class StreamHandler(Protocol):
    """Takes the TCP queries it claims (zone transfers) before the normal answer path."""

    def claims(self, wire: bytes) -> bool:
        """Whether this query is the handler's (cheap: it runs for every TCP query)."""

    def __call__(self, wire: bytes, peer: tuple[str, int]) -> Iterable[bytes] | None:
        """The replies (several for a zone transfer); None: the normal path answers.
        Runs on a worker thread: a whole zone's transfer must not stall the TCP loop."""


class Responder(Protocol):
    """What TCP needs of the DNS server (:class:`dnsfailover.server.dns.DnsServer`)."""

    tcp_handler: StreamHandler | None
    rcodes: list[int]

    def answer(self, data: bytes, *, tcp: bool, client: str | None = None) -> bytes | None: ...


class TcpService:
    """Answers DNS over TCP on ``sock`` (bound, not yet listening) from ``responder``."""

    def __init__(
        self,
        responder: Responder,
        sock: socket.socket,
        *,
        max_connections: int,
        idle_timeout: float,
        frames_per_turn: int = FRAMES_PER_TURN,
    ) -> None:
        self.responder = responder
        self.max_connections = max(1, max_connections)
        self.idle_timeout = idle_timeout
        self.frames_per_turn = max(1, frames_per_turn)
        self._sock = sock
        self._conns: dict[_Connection, None] = {}  # oldest first
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    @property
    def connections(self) -> int:
        """TCP connections open now."""
        return len(self._conns)

    async def start(self) -> None:
        """Listen and serve on a thread of its own; returns once listening.

        The socket is the service's from here: it closes it on failure and on :meth:`stop`.
        """
        self._thread = threading.Thread(
            target=self._run, args=(self._ready,), name="dnsfailover-tcp", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.to_thread(self._ready.result)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening, close every connection, and wait until the thread has ended."""
        if self._thread is not None:
            with contextlib.suppress(Exception):  # start() reported how starting went
                await asyncio.to_thread(self._ready.exception)  # the loop is known after it
            loop, stop = self._loop, self._stop
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # its loop already ended
                    loop.call_soon_threadsafe(stop.set)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._sock.close()

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        if sys.platform == "linux":  # a thread is a task: this renices this thread only
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICENESS)
        try:
            # uvloop when installed, as the node's loop: 6.1 -> 5.6 us of CPU per pipelined
            # TCP query (bench/dns_qps.py --transport tcp, interleaved against the stock loop)
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(self._main(ready))
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)
            else:
                log.error("tcp: the TCP thread failed", exc_info=True)

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        try:
            server = await loop.create_server(lambda: _Connection(self), sock=self._sock)
        except BaseException as e:
            self._sock.close()
            ready.set_exception(e)
            return
        self._loop, self._stop = loop, stop  # before ready: stop() reads them after it
        period = max(0.01, self.idle_timeout / _SWEEPS_PER_TIMEOUT)
        self._sweeper = loop.call_later(period, self._sweep, period)
        ready.set_result(None)
        try:
            await stop.wait()
        finally:
            self._sweeper.cancel()
            server.close()
            for conn in list(self._conns):
                conn.abort()
            # connection_lost runs on the loop's next turn; let it close every socket.
            for _ in range(10):
                if not self._conns:
                    break
                await asyncio.sleep(0)
            await server.wait_closed()

    def _sweep(self, period: float) -> None:
        """Close connections that completed no frame within the idle timeout."""
        assert self._loop is not None
        now = self._loop.time()
        limit = now - self.idle_timeout
        for conn in list(self._conns):
            if conn.last < limit and not conn.busy:
                conn.expire()
        self._sweeper = self._loop.call_later(period, self._sweep, period)

    def admit(self, conn: _Connection) -> bool:
        """Count a new connection in; at the limit, close the one quiet the longest."""
        if len(self._conns) >= self.max_connections:
            victim = min((c for c in self._conns if not c.busy), key=_last, default=None)
            if victim is None:  # every connection is in a zone transfer: refuse the new one
                log.debug("tcp: connection limit %d reached", self.max_connections)
                return False
            log.debug("tcp: connection limit %d: closing the quietest", self.max_connections)
            self.forget(victim)
            victim.abort()
        self._conns[conn] = None
        return True

    def forget(self, conn: _Connection) -> None:
        self._conns.pop(conn, None)


def _last(conn: _Connection) -> float:
    return conn.last


class _Connection(asyncio.BufferedProtocol):
    """One client: reads frames into a buffer of its own, answers them in order."""

    def __init__(self, service: TcpService) -> None:
        self._service = service
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray(_INITIAL_BUFFER)
        self._start = self._end = 0  # unanswered bytes: _buf[_start:_end]
        self._reading = True
        self._write_paused = False
        self._scheduled = False  # a _pump is queued: this connection used up its turn
        self._eof = False
        self.busy = False  # a zone transfer is being made on a worker thread
        self.last = self._loop.time()  # when the connection last got somewhere
        self.peer: tuple[str, int] = ("", 0)

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if peername:
            self.peer = (str(peername[0]), int(peername[1]))
        if not self._service.admit(self):
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._service.forget(self)
        self._transport = None

    def get_buffer(self, sizehint: int) -> memoryview:
        # _settle() pauses reading unless the frame in progress is incomplete and fits.
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        self._pump()

    def eof_received(self) -> bool:
        # Answer what was sent before the end (RFC 7766 §6.2.4), then close.
        self._eof = True
        self._settle()
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        self._settle()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.last = self._loop.time()
        self._pump()

    # -- closing -----------------------------------------------------------------------------

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def expire(self) -> None:
        """Idle: close, gently when nothing is waiting to be sent (else it never would be)."""
        transport = self._transport
        if transport is None:
            return
        if transport.is_closing() or transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    # -- answering ---------------------------------------------------------------------------

    def _pump(self) -> None:
        """Answer the complete frames in the buffer, up to this connection's turn."""
        self._scheduled = False
        try:
            self._answer_frames()
        except Exception:  # answering never raises; if it did, end only this connection
            log.warning("tcp: connection failed", exc_info=True)
            self.abort()

    def _answer_frames(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or self.busy or self._write_paused:
            return
        service, responder, buf = self._service, self._service.responder, self._buf
        pos, end = self._start, self._end
        out: list[bytes] = []
        closing = False
        for _ in range(service.frames_per_turn):
            if end - pos < 2:
                break
            stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            if stop > end:
                break
            data = bytes(buf[pos + 2 : stop])
            pos = stop
            handler = responder.tcp_handler
            if handler is not None and handler.claims(data):
                self.busy = True
                future = self._loop.run_in_executor(None, _all, handler, data, self.peer)
                future.add_done_callback(functools.partial(self._transferred, data=data))
                break
            reply = responder.answer(data, tcp=True, client=self.peer[0] or None)
            if reply is None:  # nothing to say to that: neither to anything after it
                responder.rcodes[16] += 1
                closing = True
                break
            responder.rcodes[reply[3] & 0xF] += 1
            out.append(len(reply).to_bytes(2) + reply)
        if pos != self._start:
            self._start = pos
            self.last = self._loop.time()
        if out:
            transport.write(b"".join(out))
        if closing:
            transport.close()
            return
        if not self.busy and self._complete_frame():
            self._scheduled = True  # the turn is used up: the others first
            self._loop.call_soon(self._pump)
        self._settle()

    def _transferred(self, future: asyncio.Future[list[bytes] | None], *, data: bytes) -> None:
        self.busy = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        responder = self._service.responder
        try:
            replies = future.result()
        except Exception:
            log.warning("tcp: zone transfer handler failed", exc_info=True)
            transport.abort()
            return
        if replies is None:
            reply = responder.answer(data, tcp=True, client=self.peer[0] or None)
            replies = [] if reply is None else [reply]
        if not replies:
            responder.rcodes[16] += 1
            transport.close()
            return
        for reply in replies:
            responder.rcodes[reply[3] & 0xF] += 1
        transport.write(b"".join(len(r).to_bytes(2) + r for r in replies))
        self.last = self._loop.time()
        self._pump()

    def _complete_frame(self) -> bool:
        have = self._end - self._start
        if have < 2:
            return False
        buf, start = self._buf, self._start
        return have >= 2 + ((buf[start] << 8) | buf[start + 1])

    def _settle(self) -> None:
        """Read on only when there is nothing to do first, making room for the next frame."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        idle = not (self.busy or self._write_paused or self._scheduled or self._complete_frame())
        if idle and self._eof:
            transport.close()
            return
        if idle:
            self._make_room()
        if idle and not self._reading:
            self._reading = True
            transport.resume_reading()
        elif not idle and self._reading:
            self._reading = False
            transport.pause_reading()

    def _make_room(self) -> None:
        """Move the incomplete frame to the front, in a buffer big enough for all of it."""
        start, end = self._start, self._end
        have = end - start
        if have == 0:
            self._start = self._end = 0
            if len(self._buf) > _INITIAL_BUFFER:  # after a big frame
                self._buf = bytearray(_INITIAL_BUFFER)
            return
        need = _INITIAL_BUFFER
        if have >= 2:
            need = max(need, 2 + ((self._buf[start] << 8) | self._buf[start + 1]))
        if start == 0 and len(self._buf) >= need:
            return
        if len(self._buf) >= need:
            # An equal-length slice assignment never resizes the buffer (asyncio may still
            # hold a view of it while buffer_updated runs).
            self._buf[:have] = self._buf[start:end]
        else:
            buf = bytearray(need)
            buf[:have] = self._buf[start:end]
            self._buf = buf
        self._start, self._end = 0, have


def _all(handler: StreamHandler, data: bytes, peer: tuple[str, int]) -> list[bytes] | None:
    handled = handler(data, peer)
    return None if handled is None else list(handled)
