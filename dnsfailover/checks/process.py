"""Probes in their own process, so that probing never competes with deciding.

Probing 1,000 endpoints every 100 ms is 10,000 probes a second: nearly a core of Python.
In the node's own interpreter that time is taken from the engine through the GIL, and a
regional outage's re-decision ran at half speed exactly when it mattered.  `serve` therefore
runs the `ProbeScheduler` in a child process (spawned: the node runs threads) and gets back:

- the results its health tracker can act on (`forward.Forwarder`: failures, the successes
  that bring a target UP, a refresh now and then), as `Observation`s on the node's loop;
- a beat, at least every check interval (0.5 s at most), with the newest probe time, so
  this region's results stay fresh in a cluster's vote;
- every probe's count and latency for `/metrics` (once a second);
- its log records, which the node logs through its own handlers.

If the probe process dies it is started again (after 1 s, then up to 30 s apart); meanwhile
health is held as it was, `problem` says so (it shows in status and `/healthz`), and the
probe process's own death is logged at ERROR.  It dies with the node (``PR_SET_PDEATHSIG``,
and the end of its pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from dnsfailover.checks.forward import Counts
from dnsfailover.checks.probe_child import probe_main
from dnsfailover.checks.scheduler import Targets
from dnsfailover.errors import DnsFailoverError
from dnsfailover.model import Observation

log = logging.getLogger("dnsfailover.probes")

READY_TIMEOUT = 30.0  # seconds a spawned probe process may take to import and report
STOP_TIMEOUT = 5.0
RESTART_FIRST, RESTART_MAX = 1.0, 30.0
INLINE_PROBES: dict[str, Any] = {"where": "inline", "pid": None, "restarts": 0, "problem": None}
"""`ProbeProcess.status` of a node that probes in its own process."""


@dataclass(frozen=True, slots=True)
class Started:
    """A probe process started, not yet told what to probe, and the node's end of its pipe."""

    proc: BaseProcess
    conn: Connection


def start_probe_process() -> Started:
    """Start a probe process (spawned: it imports on its own core meanwhile)."""
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe(duplex=True)
    levels = {  # the node's log levels, so the child sends only what would be logged
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
    }
    levels[""] = logging.getLogger().getEffectiveLevel()
    proc = context.Process(
        target=probe_main, args=(theirs, levels), name="dnsfailover-probes", daemon=True
    )
    proc.start()
    theirs.close()
    return Started(proc, mine)


class ProbeProcessError(DnsFailoverError):
    """The probe process refused a command, or ended before it answered."""


class ProbeProcess:
    """The `ProbeScheduler` interface the node uses (`run_round`, `start`, `stage_update`,
    `commit`, `stop`), served by a child process.  Use from one event loop.

    :param on_observation: every result the node must see, on the loop.
    :param on_probing: the newest probe start time (wall clock), at every beat.
    :param on_counts: every probe's count since the last call, by target.
    :param early: a probe process `start_probe_process` started before (it imports while
        the node loads its config); by default `open` starts one.
    """

    def __init__(
        self,
        targets: Targets,
        *,
        region: str,
        on_observation: Callable[[Observation], None],
        on_probing: Callable[[float], None],
        on_counts: Callable[[Mapping[str, Counts]], None],
        source_address: str | None = None,
        early: Started | None = None,
    ) -> None:
        self._targets = dict(targets)
        self._early = early
        self._region = region
        self._source = source_address
        self._on_observation = on_observation
        self._on_probing = on_probing
        self._on_counts = on_counts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._started = self._stopping = False
        self._restart: asyncio.Task[None] | None = None
        self._reader: threading.Thread | None = None
        self._staged: tuple[int, dict[str, Any]] | None = None
        self.problem: str | None = None
        self.restarts = 0

    # -- the scheduler's interface ------------------------------------------------------------

    async def open(self) -> None:
        """Spawn the probe process and hand it the targets (no probing yet)."""
        self._loop = asyncio.get_running_loop()
        await self._spawn()

    async def run_round(self, deadline: float, only: Collection[str] | None = None) -> int:
        """Probe every target (or those in `only`) once now; their results have reached
        `on_observation` when this returns.  Returns how many finished in time."""
        probed: int = await self._ask("round", deadline, None if only is None else list(only))
        return probed

    def start(self) -> None:
        """Start periodic probing."""
        self._started = True
        self._tell("start").add_done_callback(_report)

    async def stage_update(self, targets: Targets) -> int:
        """Build a reload's probes in the probe process without applying them: returns a
        handle for `commit`; raises ProbeProcessError (and nothing changed) if it failed."""
        staged = next(self._ids)
        await self._ask("stage", staged, dict(targets))
        self._staged = (staged, dict(targets))
        return staged

    def commit(self, staged: int) -> None:
        """Apply what `stage_update` built."""
        if self._staged is not None and self._staged[0] == staged:
            self._targets = self._staged[1]  # what a restarted probe process gets
        self._staged = None
        self._tell("commit", staged).add_done_callback(_report)

    async def stop(self) -> None:
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._send(("stop",))
        await asyncio.to_thread(proc.join, STOP_TIMEOUT)
        if proc.exitcode is None:
            log.warning("probes: the probe process did not stop in %.0fs; killing it", STOP_TIMEOUT)
            proc.kill()
            await asyncio.to_thread(proc.join, STOP_TIMEOUT)
        if self._reader is not None:  # it ends at the end of the pipe the child closed
            await asyncio.to_thread(self._reader.join, STOP_TIMEOUT)
        conn.close()
        proc.close()
        self._proc = self._conn = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def status(self) -> dict[str, Any]:
        """For the status API: where probes run, the process, its restarts, its problem."""
        return {"where": "process", "pid": self.pid, "restarts": self.restarts,
                "problem": self.problem}  # fmt: skip

    # -- the process --------------------------------------------------------------------------

    async def _spawn(self) -> None:
        assert self._loop is not None
        early, self._early = self._early, None
        started = early if early is not None else await asyncio.to_thread(start_probe_process)
        proc, mine = started.proc, started.conn
        ready: asyncio.Future[Any] = self._loop.create_future()
        self._replies = {0: ready}
        self._proc, self._conn = proc, mine
        self._reader = threading.Thread(
            target=self._read, args=(mine,), name="dnsfailover-probes-pipe", daemon=True
        )
        self._reader.start()
        try:
            await asyncio.wait_for(ready, READY_TIMEOUT)
        except TimeoutError:
            proc.kill()
            raise ProbeProcessError(
                f"the probe process did not start within {READY_TIMEOUT:.0f}s"
            ) from None
        await self._ask("targets", self._targets, self._region, self._source)
        log.info("probes: probe process %d probes %d target(s)", proc.pid, len(self._targets))

    def _read(self, conn: Connection) -> None:
        """The reader thread: every message onto the loop, in order; then the end."""
        assert self._loop is not None
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("gone",)
            except Exception as e:  # an unpicklable message: the pipe is out of step
                message = ("gone", f"{type(e).__name__}: {e}")
            try:
                self._loop.call_soon_threadsafe(self._receive, conn, message)
            except RuntimeError:  # the loop is closed: the node is gone
                return
            if message[0] == "gone":
                return

    def _receive(self, conn: Connection, message: tuple[Any, ...]) -> None:
        if conn is not self._conn:
            return  # from a probe process that has since been replaced
        kind = message[0]
        if kind == "obs":
            _kind, results, newest = message
            region = self._region
            for target, ok, at, latency, detail, unknown in results:
                self._on_observation(Observation(target, region, ok, at, latency, detail, unknown))
            if newest:
                self._on_probing(newest)
        elif kind == "beat":
            _kind, newest, counts = message
            if newest:
                self._on_probing(newest)
            if counts:
                self._on_counts(counts)
        elif kind == "reply":
            _kind, rid, payload, error = message
            future = self._replies.pop(rid, None)
            if future is not None and not future.done():
                if error is None:
                    future.set_result(payload)
                else:
                    future.set_exception(ProbeProcessError(f"the probe process: {error}"))
        elif kind == "log":
            record = logging.makeLogRecord(message[1])
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        elif kind == "gone":
            self._lost(message[1] if len(message) > 1 else None)

    def _lost(self, why: str | None) -> None:
        proc = self._proc
        for future in self._replies.values():
            if not future.done():
                future.set_exception(ProbeProcessError("the probe process ended"))
        self._replies = {}
        if self._stopping or proc is None:
            return
        code = proc.exitcode
        how = "its pipe closed" if code is None else f"exit code {code}"
        self.problem = (
            f"the probe process {proc.pid} ended ({how}{'; ' + why if why else ''}); "
            "health is held as it was until it runs again"
        )
        log.error("probes: %s", self.problem)
        if self._restart is None or self._restart.done():
            self._restart = asyncio.get_running_loop().create_task(self._restarting())

    async def _restarting(self) -> None:
        delay = RESTART_FIRST
        while not self._stopping:
            await asyncio.sleep(delay)
            old, self._proc = self._proc, None
            if old is not None:
                await asyncio.to_thread(old.join, STOP_TIMEOUT)
                with contextlib.suppress(ValueError):
                    old.close()
            if self._conn is not None:
                self._conn.close()
            try:
                await self._spawn()
                if self._started:
                    self._tell("start").add_done_callback(_report)
            except (ProbeProcessError, OSError) as e:
                log.error("probes: cannot start the probe process again: %s", e)
                delay = min(delay * 2, RESTART_MAX)
                continue
            self.restarts += 1
            self.problem = None
            log.warning("probes: probe process started again (restart %d)", self.restarts)
            return

    # -- messages -----------------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._conn is None:
            raise ProbeProcessError("the probe process is not running")
        with self._send_lock:
            self._conn.send(message)

    def _tell(self, kind: str, *args: Any) -> asyncio.Future[Any]:
        assert self._loop is not None
        rid = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._replies[rid] = future
        try:
            self._send((kind, rid, *args))
        except (OSError, ValueError, ProbeProcessError) as e:
            self._replies.pop(rid, None)
            future.set_exception(ProbeProcessError(f"cannot reach the probe process: {e}"))
        return future

    async def _ask(self, kind: str, *args: Any) -> Any:
        future = self._tell(kind, *args)
        return await asyncio.shield(future)


def _report(future: asyncio.Future[Any]) -> None:
    """A command nobody awaits (start, commit) that failed is logged, not lost."""
    e = None if future.cancelled() else future.exception()
    if e is not None and "ended" not in str(e):  # its end is logged once, by `_lost`
        log.error("probes: %s", e)
