"""The state store on one dedicated thread, so SQLite never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dnsfailover.engine.values import EngineState
from dnsfailover.runtime.recovery import open_state
from dnsfailover.runtime.store import Restored, Store

T = TypeVar("T")


class AsyncStore:
    """Runs a `Store` on one dedicated thread so SQLite never blocks the event loop.

    Jobs run in the order they are given, except `urgent` ones (the serial floor of a
    publish), which go before any job that has not started: a regional outage's history,
    written in chunks behind the answers, never holds up the next publish for long.
    """

    def __init__(self, store: Store, worker: _Worker, restored: Restored | None = None) -> None:
        self.store = store
        self.restored = restored or Restored({}, [], EngineState(), [])
        self._worker = worker

    @classmethod
    async def open(cls, path: str | Path, *, recover: bool = False) -> AsyncStore:
        """Open the database on the thread that will use it from then on, and read what a
        node starts from (`restored`); see `recovery.open_state` for a damaged file."""
        worker = _Worker()
        try:
            store, restored = await worker.submit(
                lambda: open_state(path, recover=recover), urgent=False
            )
        except BaseException:
            worker.stop()
            raise
        return cls(store, worker, restored)

    async def run(self, fn: Callable[[Store], T], *, urgent: bool = False) -> T:
        return await self._worker.submit(lambda: fn(self.store), urgent=urgent)

    def later(self, fn: Callable[[Store], None]) -> asyncio.Future[None]:
        """Queue `fn` without waiting for it (what is read later is queued after it)."""
        return self._worker.submit(lambda: fn(self.store), urgent=False)

    async def close(self) -> None:
        await self.run(Store.close)
        self._worker.stop()


class _Worker:
    """One thread running jobs from a queue: urgent ones first, each kind in order."""

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None]]] = (
            queue.PriorityQueue()
        )
        self._count = itertools.count()
        self._thread = threading.Thread(target=self._run, name="dnsfailover-store", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T], *, urgent: bool) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn()
            except BaseException as e:  # handed to the awaiting coroutine
                outcome: tuple[Any, BaseException | None] = (None, e)
            else:
                outcome = (result, None)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, *outcome)

        self._queue.put((0 if urgent else 1, next(self._count), job))
        return future

    def stop(self) -> None:
        self._queue.put((2, next(self._count), _STOP))

    def _run(self) -> None:
        while True:
            _priority, _seq, job = self._queue.get()
            if job is _STOP:
                return
            job()


def _STOP() -> None:
    """Marks the end of a worker's queue."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled() or future.get_loop().is_closed():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
