"""TCP probe: a completed three-way handshake means up.

The probe has to be cheap: one process should sustain 10,000 probes per second (see
bench/check_scale.py).  User CPU per probe, measured on the benchmark machine:
`loop.create_connection` with a no-op Protocol ~105 µs, `loop.sock_connect` inside
`asyncio.timeout` ~80 µs, a bare `connect_ex` + `loop.add_writer` + `call_at` ~45 µs, and
the path below ~25 µs.  The kernel's share (~35 µs on loopback, where both ends of the
handshake run on the prober's core) is the same for all of them.

The saving comes from not going through the event loop's selector for every socket: asyncio's
`add_writer`/`remove_writer` cost ~10 µs each in Python bookkeeping.  Instead, on Linux, all
connecting sockets of a loop are registered (EPOLLOUT | EPOLLONESHOT) in one private epoll
set, and the loop watches that one epoll fd.  Closing a socket removes it from the set, so
there is no unregister call either.  Elsewhere the probe falls back to `add_writer`.

Sockets are closed with SO_LINGER 0: the kernel sends RST and keeps no TIME_WAIT entry, so
10k probes/s do not tie up the ~28k ephemeral ports for 60 s each, and the target sees an
aborted connection rather than a half-closed one it has to reap.

With a source address (a region's `source_address`) the socket is bound to it before the
connect.  IP_BIND_ADDRESS_NO_PORT defers the choice of local port to the connect, so the
kernel picks one unique per 4-tuple as it does without a bind; a plain bind to port 0 would
reserve a port per socket across all destinations.  The bind costs one extra syscall, and
only probes with a source address pay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import socket
import struct
import sys
import weakref

from dnsfailover.checks.details import (
    SHORTAGE_ERRNOS,
    cannot_probe,
    errno_detail,
    failed,
    os_error_detail,
    timeout_detail,
)
from dnsfailover.config.checks import CheckConfig
from dnsfailover.model import ProbeResult, Target

_LINGER_RST = struct.pack("ii", 1, 0)
# Linux; not in the socket module before Python 3.12.
_BIND_NO_PORT: int | None = getattr(
    socket, "IP_BIND_ADDRESS_NO_PORT", 24 if sys.platform.startswith("linux") else None
)
_TIMED_OUT = -1
_READY = 0


def _resolve(fut: asyncio.Future[int], value: int) -> None:
    if not fut.done():
        fut.set_result(value)


class _ConnectPoller:
    """One epoll set per event loop for sockets waiting for their connect to finish."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._waiting: dict[int, asyncio.Future[int]] = {}
        # The loop holds this poller through the reader callback, not the other way
        # round, so the WeakKeyDictionary entry (and the epoll fd) go with the loop.
        loop.add_reader(self._epoll.fileno(), self._ready)

    def _ready(self) -> None:
        waiting = self._waiting
        for fd, _events in self._epoll.poll(0):
            fut = waiting.pop(fd, None)
            if fut is not None and not fut.done():
                fut.set_result(_READY)

    def wait(self, fd: int, fut: asyncio.Future[int]) -> None:
        self._epoll.register(fd, select.EPOLLOUT | select.EPOLLONESHOT)
        self._waiting[fd] = fut

    def forget(self, fd: int) -> None:
        """Drop the waiter; the caller then closes the socket, which leaves the epoll set."""
        self._waiting.pop(fd, None)


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ConnectPoller] = (
    weakref.WeakKeyDictionary()
)


def _poller(loop: asyncio.AbstractEventLoop) -> _ConnectPoller | None:
    if not hasattr(select, "epoll"):
        return None
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = _ConnectPoller(loop)
    return poller


class TcpProbe:
    """Connect to `target.address:target.port`; refused, unreachable or slow means down."""

    def __init__(self, check: CheckConfig, source_address: str | None = None) -> None:
        self._timeout = check.timeout
        self._source = source_address
        self._source_family = (
            None
            if source_address is None
            else socket.AF_INET6
            if ":" in source_address
            else socket.AF_INET
        )

    async def __call__(self, target: Target) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
        source = self._source
        if source is not None and family != self._source_family:
            return failed(0.0, f"source address {source} cannot reach {target.address}")
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno in SHORTAGE_ERRNOS:
                return cannot_probe(0.0, exc.errno, target.key)
            return failed(0.0, f"cannot open a socket: {os_error_detail(exc)}")
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            if source is not None and (problem := self._bind(sock, source)):
                return failed(loop.time() - start, problem)
            code = sock.connect_ex((target.address, target.port))
            if code == errno.EINPROGRESS:
                code = await self._wait_connected(loop, sock, start + self._timeout)
        except OSError as exc:
            if exc.errno in SHORTAGE_ERRNOS:
                return cannot_probe(loop.time() - start, exc.errno, target.key)
            return failed(loop.time() - start, os_error_detail(exc))
        finally:
            sock.close()
        latency = loop.time() - start
        if code in SHORTAGE_ERRNOS:
            return cannot_probe(latency, code, target.key)
        if code == 0:
            return ProbeResult(ok=True, latency=latency, detail="connected")
        if code == errno.ECONNRESET:
            # Linux reports a reset in SYN_SENT as ECONNREFUSED; ECONNRESET means the
            # handshake completed and the peer reset the connection afterwards (a
            # server that accepts and drops at once, or simply beat us to the check).
            return ProbeResult(ok=True, latency=latency, detail="connected (then reset by peer)")
        if code == _TIMED_OUT:
            return failed(latency, timeout_detail(self._timeout))
        return failed(latency, errno_detail(code))

    @staticmethod
    def _bind(sock: socket.socket, source: str) -> str | None:
        """Bind to the source address; a failure detail, or None."""
        if _BIND_NO_PORT is not None:  # elsewhere a plain bind works, ports are scarcer
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _BIND_NO_PORT, 1)
        try:
            sock.bind((source, 0))
        except OSError as exc:
            return f"cannot bind source address {source}: {os_error_detail(exc)}"
        return None

    @staticmethod
    async def _wait_connected(
        loop: asyncio.AbstractEventLoop, sock: socket.socket, deadline: float
    ) -> int:
        """Wait until the socket is writable (connected or failed) or the deadline passes.

        Returns the connect errno (0 on success) or `_TIMED_OUT`.
        """
        fd = sock.fileno()
        done: asyncio.Future[int] = loop.create_future()
        poller = _poller(loop)
        if poller is not None:
            poller.wait(fd, done)
        else:
            loop.add_writer(fd, _resolve, done, _READY)
        timer = loop.call_at(deadline, _resolve, done, _TIMED_OUT)
        try:
            if await done == _TIMED_OUT:
                return _TIMED_OUT
        finally:
            timer.cancel()
            if poller is not None:
                poller.forget(fd)
            else:
                loop.remove_writer(fd)
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
