"""The probe process's side of `process.py`: a `ProbeScheduler` on its own interpreter.

It reads commands from the pipe on a thread and runs them on its loop; it writes back the
results the node must see (`forward.Forwarder`), a beat with the newest probe time and the
probe counts (`forward.Tally`), replies, and its log records, which the node logs as its
own (same handlers, format and redaction).  It ends when told to, when the pipe closes, or
when the node dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Collection
from multiprocessing.connection import Connection
from typing import Any

from dnsfailover.checks.forward import Forwarder, Tally
from dnsfailover.checks.scheduler import ProbeScheduler, StagedUpdate, Targets
from dnsfailover.model import Observation
from dnsfailover.tasks import die_with_parent, loop_factory

log = logging.getLogger("dnsfailover.probes")

REFRESH_INTERVALS = 10  # a success is sent at least once per this many check intervals ...
MIN_REFRESH = 1.0  # ... and at most once a second per target
MAX_BEAT = 0.5  # seconds between beats at most (freshness is 3 intervals: see health.tracker)
COUNTS_EVERY = 1.0  # seconds between probe counts sent


class _Pipe:
    """The child's end of the pipe; `send` is safe from any thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self.broken = False

    def send(self, message: tuple[Any, ...]) -> None:
        if self.broken:
            return
        try:
            with self._lock:
                self.conn.send(message)
        except (OSError, ValueError):  # the node is gone: nothing left to tell
            self.broken = True


class _PipeHandler(logging.Handler):
    """Sends each record, formatted here, for the node to log."""

    def __init__(self, pipe: _Pipe) -> None:
        super().__init__()
        self._pipe = pipe

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = record.exc_text
            if record.exc_info and not exc_text:
                exc_text = logging.Formatter().formatException(record.exc_info)
            fields = {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": record.getMessage(),
                "created": record.created,
                "msecs": record.msecs,
                "exc_text": exc_text,
                "processName": "probes",
            }
            self._pipe.send(("log", fields))
        except Exception:  # logging must not raise
            self.handleError(record)


class _Child:
    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._scheduler: ProbeScheduler | None = None
        self._forward = Forwarder(MIN_REFRESH)
        self._tally = Tally()
        self._pending: list[tuple[str, bool, float, float, str, bool]] = []
        self._newest = 0.0
        self._staged: dict[int, tuple[StagedUpdate, Targets]] = {}
        self._beat = MAX_BEAT
        self._tasks: set[asyncio.Task[None]] = set()

    # -- results ------------------------------------------------------------------------------

    def observe(self, obs: Observation) -> None:
        self._tally.add(obs)
        if not obs.unknown and obs.at > self._newest:
            self._newest = obs.at
        if self._forward.keep(obs, time.monotonic()):
            if not self._pending:
                self._loop.call_soon(self.flush)
            self._pending.append((obs.target, obs.ok, obs.at, obs.latency, obs.detail, obs.unknown))

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._pipe.send(("obs", pending, self._newest))

    async def beat(self) -> None:
        counted = time.monotonic()
        while True:
            await asyncio.sleep(self._beat)
            self.flush()
            counts = None
            if time.monotonic() - counted >= COUNTS_EVERY:
                counted, counts = time.monotonic(), self._tally.drain()
            self._pipe.send(("beat", self._newest, counts))

    def _follow(self, targets: Targets, added: Collection[str]) -> None:
        """Beat and refresh for `targets` (all of them); results of `added` from scratch."""
        intervals = [check.interval for _t, check in targets.values()]
        self._beat = min([MAX_BEAT, *intervals])
        self._forward.refresh = max(MIN_REFRESH, REFRESH_INTERVALS * max(intervals, default=0))
        for key in added:
            self._forward.track(key, targets[key][1].rise)

    # -- commands -----------------------------------------------------------------------------

    def command(self, message: tuple[Any, ...]) -> None:
        task = self._loop.create_task(self._run(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "stop":
            self._done.set()
            return
        rid: int = message[1]
        try:
            payload = await self._do(kind, message[2:])
        except Exception as e:
            self.flush()
            self._pipe.send(("reply", rid, None, f"{type(e).__name__}: {e}"))
        else:
            self.flush()  # what the command produced arrives before its reply
            self._pipe.send(("reply", rid, payload, None))

    async def _do(self, kind: str, args: tuple[Any, ...]) -> object:
        if kind == "targets":
            targets, region, source = args
            self._scheduler = ProbeScheduler(
                targets, region=region, on_observation=self.observe, source_address=source
            )
            self._follow(targets, targets.keys())
            return len(targets)
        scheduler = self._scheduler
        assert scheduler is not None, "targets come first"
        if kind == "round":
            deadline, only = args
            done: Collection[str] | None = only
            return len(await scheduler.run_round(deadline, done))
        if kind == "start":
            scheduler.start()
            return None
        if kind == "stage":
            staged_id, targets = args
            self._staged = {staged_id: (scheduler.stage(targets), targets)}  # the latest only
            return None
        if kind == "commit":
            (staged_id,) = args
            staged, targets = self._staged.pop(staged_id)
            scheduler.commit(staged)
            for entry in staged.removed:
                self._forward.forget(entry.key)
            self._follow(targets, [entry.key for entry in staged.added])
            return None
        if kind == "abort":
            (staged_id,) = args
            self._staged.pop(staged_id, None)
            return None
        raise ValueError(f"unknown command {kind!r}")

    async def serve(self) -> None:
        beat = self._loop.create_task(self.beat())
        try:
            await self._done.wait()
        finally:
            beat.cancel()
            if self._scheduler is not None:
                await self._scheduler.stop()
            # APScheduler's job runs end on their own once it is shut down; cancelled by the
            # runner's close instead, each would be logged as an error with a traceback.
            others = asyncio.all_tasks() - {asyncio.current_task()}
            if others:
                await asyncio.wait(others, timeout=1.0)
            self.flush()


def _read(conn: Connection, child: _Child, loop: asyncio.AbstractEventLoop) -> None:
    """The reader thread: commands onto the loop; the end of the pipe stops the child."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = ("stop",)
        try:
            loop.call_soon_threadsafe(child.command, message)
        except RuntimeError:  # the loop is closed: the child is ending anyway
            return
        if message[0] == "stop":
            return


def probe_main(conn: Connection, levels: dict[str, int]) -> None:
    """The probe process's entry point (module level: the spawn context imports it)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the node decides
    pipe = _Pipe(conn)
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(_PipeHandler(pipe))
    for name, level in levels.items():  # "" is the root logger
        logging.getLogger(name or None).setLevel(level)

    async def main() -> None:
        child = _Child(pipe)
        threading.Thread(
            target=_read, args=(conn, child, asyncio.get_running_loop()), daemon=True
        ).start()
        pipe.send(("reply", 0, "ready", None))
        await child.serve()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
    conn.close()
