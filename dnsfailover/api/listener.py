"""The API's listening sockets, accepted here rather than by asyncio's server.

When the process is out of file descriptors, asyncio's accept loop logs an ERROR with a
traceback for every connection waiting in the backlog (up to the backlog, 128, per socket,
every second: the 94,324 lines in 18 s of issue 15) and schedules a retry for each, which
then fail against the closed socket at shutdown.  Here the same condition is one
rate-limited ERROR and one pause of `RETRY` seconds; accepting resumes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable

from dnsfailover.logs import RateLimitedLog

log = logging.getLogger("dnsfailover.api")

RETRY = 1.0
BATCH = 32  # connections accepted per wake-up, so a flood cannot hog the loop
SHORTAGE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener:
    """Binds `host:port` (every address it resolves to) and hands each accepted connection
    to `factory`'s protocol."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], backlog: int = 128) -> None:
        self._factory, self._backlog = factory, backlog
        self._socks: list[socket.socket] = []
        self._paused: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._alarm = RateLimitedLog(log, period=60.0, burst=1)
        self.shortages = 0

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._socks]

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as err:  # worded as asyncio's create_server words it
                    raise OSError(
                        err.errno,
                        f"error while attempting to bind on address {address!r}: "
                        f"{(err.strerror or str(err)).lower()}",
                    ) from None
                sock.listen(self._backlog)
                sock.setblocking(False)
        except OSError:
            self.close()
            raise
        self._watch()

    def close(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        with contextlib.suppress(RuntimeError):  # the loop is gone already
            loop = asyncio.get_running_loop()
            for sock in self._socks:
                loop.remove_reader(sock.fileno())
        for sock in self._socks:
            sock.close()
        self._socks = []

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._socks:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(BATCH):
            try:
                conn, _peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in SHORTAGE:
                    self._pause(exc)
                    return
                self._alarm.log(logging.ERROR, "api: accept failed: %s", exc)
                return
            conn.setblocking(False)
            task = loop.create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()

    def _pause(self, exc: OSError) -> None:
        """Out of descriptors: stop accepting for `RETRY` seconds (the backlog waits)."""
        self.shortages += 1
        self._alarm.log(
            logging.ERROR,
            "api: cannot accept connections: %s; new ones wait in the backlog, retrying every %gs",
            exc.strerror or exc,
            RETRY,
        )
        if self._paused is not None:
            return
        loop = asyncio.get_running_loop()
        for sock in self._socks:
            loop.remove_reader(sock.fileno())
        self._paused = loop.call_later(RETRY, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._socks:
            self._watch()
