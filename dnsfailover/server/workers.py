"""Extra processes that answer UDP queries on the same port (SO_REUSEPORT).

One Python process answers on one core.  With ``serve --workers N`` the main process
(probes, engine, store, TCP and zone transfers) binds its port with SO_REUSEPORT and starts
N-1 workers (spawned, not forked: the parent runs threads and an event loop; the worker's
side is `worker_process.py`) that bind the same UDP port; the kernel spreads clients across
the sockets by their address hash.  The parent sends each worker the zones as published,
then every publish as what it changed (`Update`: the managed sets that changed and the new
SOA, or a whole zone when more changed) down its pipe; the worker makes its next snapshot
from its own and swaps it in.  Steered sets travel with them; the steering itself
(`SteeringUpdate`: rules, database path, CIDR map) is sent at start and on a reload, and each
worker opens the database for itself.

Every message goes out on one sender thread, in order.  A worker that exits while the pool
runs (killed, out of memory, a crash) is logged at ERROR and started again after 1 s,
doubling up to 30 s while it keeps dying within a minute of its start.  The new process gets
its `Start` (the zones read from the `EmbeddedZones` when it is queued, the keys and
steering last sent) from that same thread, queued on the event loop right where a publish
would be: every publish before it is in those zones, every one after reaches it after them.

Each worker writes what it answered (`DnsServer.response_counts`, by rcode) into a small
array it shares with the parent, every `COUNTS_PERIOD` seconds and as it stops: the parent's
`/metrics` count every process's answers (a worker that dies loses at most its last period).

A worker stops when its pipe closes, that is when the parent exits however it exits, and,
on Linux, when the parent dies (``PR_SET_PDEATHSIG``); it ignores SIGINT and SIGTERM while
the parent lives (both reach the whole group: systemd's stop must not look like a worker
dying).  Stopping the pool restarts nothing.  Workers serve UDP only: TCP is the path for
truncated answers and zone transfers, and transfers need the parent's zone history and keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.steering import Steering
from dnsfailover.model import ZoneContent
from dnsfailover.server.rrl import RrlSettings
from dnsfailover.server.signed import Keys
from dnsfailover.server.steered import DEFAULT_LIMITS
from dnsfailover.server.worker_process import (
    KeyringUpdate,
    Message,
    Start,
    SteeringUpdate,
    update_of,
    worker_main,
)

if TYPE_CHECKING:
    from dnsfailover.server.embedded import EmbeddedZones
    from dnsfailover.server.versions import ZoneChange

log = logging.getLogger("dnsfailover.workers")

READY_TIMEOUT = 30.0
"""Seconds a worker may take to import, bind and report (a spawn re-imports everything)."""
STOP_TIMEOUT = 5.0
RESTART_FIRST = 1.0
"""Seconds before a worker that died is started again; doubled while it keeps dying..."""
RESTART_MAX = 30.0
RESTART_RESET = 60.0
"""...within this many seconds of its start; one that served longer waits RESTART_FIRST."""
COUNTS = 17
"""`DnsServer.response_counts`: 16 rcodes and the queries left unanswered."""


def restart_delay(previous: float | None, served: float) -> float:
    """Seconds to wait before starting again a worker that died after serving ``served``
    seconds, ``previous`` being the wait before its last start (None: its first death)."""
    if previous is None or served >= RESTART_RESET:
        return RESTART_FIRST
    return min(previous * 2, RESTART_MAX)


def how_it_ended(exitcode: int | None) -> str:
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-exitcode).name}"
        return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@dataclass(eq=False, slots=True)
class _Worker:
    index: int
    proc: BaseProcess | None = None  # None while none runs (event loop)
    conn: Connection | None = None  # replaced and closed on the sender thread only
    pid: int | None = None  # while it serves (event loop)
    since: float = 0.0  # when it reported ready (monotonic)
    delay: float | None = None  # the wait before its latest restart
    counts: Any = None  # the array its process writes its response counts into


class WorkerPool:
    """``count`` worker processes serving UDP on ``host``:``port`` with SO_REUSEPORT, each
    started (and started again when it dies) with the zones ``contents()`` returns then (the
    zones as published, read on the event loop)."""

    def __init__(
        self,
        count: int,
        host: str,
        port: int,
        contents: Callable[[], Iterable[ZoneContent]],
        *,
        rrl: RrlSettings | None = None,
        log_level: int = logging.WARNING,
    ) -> None:
        self.count = count
        self._host, self._port = host, port
        self._contents = contents
        self._rrl = rrl
        self._log_level = log_level
        self._workers = [_Worker(index) for index in range(1, count + 1)]
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="dnsfailover-workers")
        # The keys and steering last sent, as the sender thread sent them: a new worker's.
        self._keyring: KeyringUpdate | None = None
        self._steering: SteeringUpdate | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._restarting: set[asyncio.Task[None]] = set()
        self.restarts = 0
        self._retired = [0] * COUNTS  # what processes that ended had counted

    @property
    def pids(self) -> list[int]:
        """The serving workers' pids, by index (one that is down is missing)."""
        return [w.pid for w in self._workers if w.pid is not None]

    def status(self) -> dict[str, Any]:
        """For the status API and /metrics: the workers, their pids, restarts, and the
        problem while some are down."""
        down = [w.index for w in self._workers if w.pid is None]
        problem = None
        if down and not self._stopping:
            problem = (
                f"worker process(es) {', '.join(map(str, down))} of {self.count} down, being "
                "started again: the other DNS processes answer their clients meanwhile"
            )
        return {"count": self.count, "alive": self.count - len(down), "pids": self.pids,
                "restarts": self.restarts, "problem": problem,
                "responses": [sum(_counted(w)[:COUNTS - 1]) for w in self._workers]}  # fmt: skip

    def response_counts(self) -> list[int]:
        """Every worker's `DnsServer.response_counts` added up, those that ended included
        (as of each one's latest write)."""
        total = list(self._retired)
        for worker in self._workers:
            for rcode, n in enumerate(_counted(worker)):
                total[rcode] += n
        return total

    def publish(self, _zones: EmbeddedZones, changes: Sequence[ZoneChange]) -> None:
        """An :meth:`EmbeddedZones.subscribe` listener: send what changed to every worker."""
        self.send([update_of(c) for c in changes])

    def send(self, message: Message) -> Future[None]:
        """Queue a message for every worker; sends happen in order, off the event loop."""
        return self._sender.submit(self._send_all, message)

    def set_keyring(self, keyring: Keys) -> Future[None]:
        """The TSIG keys signed queries are checked against, at start and on a reload."""
        return self.send(KeyringUpdate(dict(keyring)))

    def set_steering(
        self, steering: Steering | None, limits: SourceLimits = DEFAULT_LIMITS
    ) -> Future[None]:
        """Steer as ``steering`` does (see `DnsServer.set_steering`), at start and on a
        reload: each worker opens the database file itself (a reader does not pickle)."""
        return self.send(SteeringUpdate.of(steering, limits))

    # -- the sender thread ----------------------------------------------------------------------

    def _send_all(self, message: Message | None) -> None:
        if isinstance(message, KeyringUpdate):
            self._keyring = message
        elif isinstance(message, SteeringUpdate):
            self._steering = message
        for worker in self._workers:
            conn = worker.conn
            if conn is None:
                continue  # down: it gets everything in its `Start`
            try:
                conn.send(message)
            except (OSError, ValueError) as e:  # dead: the others keep serving
                if message is not None:
                    log.warning("workers: cannot reach worker %d: %s", worker.index, e)
                self._retire(worker)

    def _adopt(self, worker: _Worker, conn: Connection, zones: list[ZoneContent]) -> None:
        """A new process for `worker`: its `Start`, then every later message."""
        self._retire(worker)
        worker.conn = conn
        try:
            conn.send(Start(zones, self._keyring, self._steering))
        except (OSError, ValueError) as e:  # it died already: `_launch` sees its end
            log.warning("workers: cannot reach worker %d: %s", worker.index, e)

    @staticmethod
    def _retire(worker: _Worker) -> None:
        conn, worker.conn = worker.conn, None
        if conn is not None:
            conn.close()

    # -- the processes ----------------------------------------------------------------------------

    async def start(
        self,
        keyring: Keys | None = None,
        steering: Steering | None = None,
        limits: SourceLimits = DEFAULT_LIMITS,
    ) -> list[int]:
        """Start the workers with the zones ``contents()`` returns now, the TSIG ``keyring``
        (so a signed query is answered by whichever process receives it) and ``steering``;
        return their pids once all have bound the port.

        :raises OSError: if a worker cannot bind or does not report in time.
        """
        # Nothing was sent yet: these are what every worker starts with.
        self._keyring = KeyringUpdate(dict(keyring)) if keyring else None
        self._steering = SteeringUpdate.of(steering, limits) if steering is not None else None
        results = await asyncio.gather(
            *(self._launch(w) for w in self._workers), return_exceptions=True
        )
        for worker, result in zip(self._workers, results, strict=True):
            if isinstance(result, BaseException):
                raise OSError(f"worker {worker.index} did not start: {result}") from result
        log.info("workers: %d serving udp port %d: pids %s", self.count, self._port, self.pids)
        return self.pids

    async def _launch(self, worker: _Worker) -> None:
        """Start a process for `worker` and wait until it serves.

        :raises OSError: it did not report ready in time, could not bind, or exited.
        """
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        counts = ctx.RawArray("q", COUNTS)
        args = (worker.index, self._host, self._port, child, self._rrl, self._log_level, counts)
        proc = ctx.Process(
            target=worker_main, args=args, name=f"dnsfailover-worker-{worker.index}", daemon=True
        )
        try:
            await asyncio.to_thread(proc.start)  # fork and exec: out of memory, processes...
        except OSError:
            parent.close()
            raise
        finally:
            child.close()
        worker.proc = proc
        adopted = False
        try:
            await self._expect(parent, "hello")
            # Read the zones and queue them in one step of the loop: a publish is either in
            # them or queued after them.
            self._sender.submit(self._adopt, worker, parent, list(self._contents()))
            adopted = True
            pid = await self._expect(parent, "ready")
        except OSError:
            if not adopted:
                parent.close()
            proc.kill()
            await asyncio.to_thread(proc.join, STOP_TIMEOUT)
            with contextlib.suppress(ValueError):
                proc.close()
            worker.proc = None
            raise
        self._retire_counts(worker)
        worker.counts = counts
        worker.pid, worker.since = pid, time.monotonic()
        asyncio.get_running_loop().add_reader(proc.sentinel, self._exited, worker, proc)

    def _retire_counts(self, worker: _Worker) -> None:
        """Keep what the worker's previous process counted (its array is replaced)."""
        for rcode, n in enumerate(_counted(worker)):
            self._retired[rcode] += n
        worker.counts = None

    async def _expect(self, conn: Connection, kind: str) -> int:
        """The pid in the worker's next message, which must be `kind`.

        :raises OSError: another message, none in time, its end, or the pool stopping.
        """
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(conn.fileno(), ready)
        stopped = loop.create_task(self._stopped.wait())
        either: list[asyncio.Future[Any]] = [readable, stopped]
        try:
            await asyncio.wait(either, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(conn.fileno())
            stopped.cancel()
        if self._stopping:
            raise OSError("the workers are stopping")
        if not readable.done():
            raise OSError(f"no answer within {READY_TIMEOUT:.0f}s")
        try:
            status, detail = conn.recv()
        except (EOFError, OSError):
            raise OSError("it exited") from None
        if status != kind:
            raise OSError(str(detail))
        return int(detail)

    def _exited(self, worker: _Worker, proc: BaseProcess) -> None:
        """Its process ended (its sentinel is readable): start it again, unless stopping."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(proc.sentinel)
        if self._stopping or worker.proc is not proc:
            return
        task = loop.create_task(self._recover(worker, proc))
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def _recover(self, worker: _Worker, proc: BaseProcess) -> None:
        pid, worker.pid = worker.pid, None
        served = time.monotonic() - worker.since
        worker.delay = delay = restart_delay(worker.delay, served)
        self._sender.submit(self._retire, worker)
        await asyncio.to_thread(proc.join, STOP_TIMEOUT)  # reaped: its exit code is known
        log.error(
            "workers: worker %d (pid %s) %s after serving %.1fs; starting it again in %gs",
            worker.index,
            pid,
            how_it_ended(proc.exitcode),
            served,
            delay,
        )
        with contextlib.suppress(ValueError):
            proc.close()
        worker.proc = None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)
            if self._stopping:
                return
            try:
                await self._launch(worker)
            except Exception as e:  # whatever it was, try again later: never give up
                if self._stopping:
                    return
                worker.delay = delay = min(delay * 2, RESTART_MAX)
                log.error(
                    "workers: cannot start worker %d again: %s; next try in %gs",
                    worker.index,
                    e,
                    delay,
                )
                continue
            self.restarts += 1
            log.warning(
                "workers: worker %d started again: pid %d (restart %d)",
                worker.index,
                worker.pid,
                self.restarts,
            )
            return

    async def stop(self) -> None:
        """Stop every worker (close its pipe), wait, and kill what is left; nothing is
        started again from here on."""
        if self._stopping:
            return
        self._stopping = True
        self._stopped.set()
        if self._restarting:  # each returns at its next step
            await asyncio.gather(*self._restarting, return_exceptions=True)
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            if worker.proc is not None and worker.pid is not None:
                loop.remove_reader(worker.proc.sentinel)
        self._sender.submit(self._send_all, None)
        await asyncio.to_thread(self._sender.shutdown, True)
        for worker in self._workers:
            self._retire(worker)
            proc, worker.proc, worker.pid = worker.proc, None, None
            if proc is None:
                continue
            await asyncio.to_thread(proc.join, STOP_TIMEOUT)
            if proc.exitcode is None:
                proc.kill()
                await asyncio.to_thread(proc.join, STOP_TIMEOUT)
            proc.close()


def _counted(worker: _Worker) -> list[int]:
    return [0] * COUNTS if worker.counts is None else list(worker.counts)
