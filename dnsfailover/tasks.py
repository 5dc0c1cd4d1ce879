"""Task helpers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("dnsfailover")

_PR_SET_PDEATHSIG = 1


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is installed (and not disabled), else None.

    ``DNSFAILOVER_LOOP=asyncio`` forces the standard loop (to compare the two).
    """
    if os.environ.get("DNSFAILOVER_LOOP", "auto") == "asyncio":
        return None
    try:  # imported by name: uvloop is an optional extra, so mypy may not see it
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def die_with_parent() -> None:
    """In a child process: get SIGTERM when the parent dies, however it dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = 0.5) -> None:
    """Cancel `task` and wait for it to end, cancelling again until it does.

    Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives just as the
    awaited operation completes (fixed in 3.12), so one `cancel()` is not always enough:
    seen as a `serve` that never exited after SIGTERM while a provider call finished.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("stop: task %s ended with %r", task.get_name(), exc)


async def stop_site(site: web.BaseSite) -> None:
    """Stop an aiohttp site's listener without dropping a connection it just accepted.

    Python 3.11 hands an accepted socket to a task that attaches it to the listener; if the
    listener closed in between, that attach fails and the half-made transport is dropped
    unclosed (fixed in 3.12).  So: stop accepting, let the tasks of connections already
    accepted run, then close.  Seen as ResourceWarnings when the demo killed an endpoint
    while it was being probed.
    """
    server = site._server
    if isinstance(server, asyncio.base_events.Server):
        loop = asyncio.get_running_loop()
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
        for _ in range(3):
            await asyncio.sleep(0)
    await site.stop()


async def any_set(*events: asyncio.Event, timeout: float) -> None:  # noqa: ASYNC109
    """Wait until one of `events` is set, `timeout` seconds at most."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def settle(count: Callable[[], int], step: float, limit: float) -> None:
    """Wait while `count()` keeps growing (checked every `step` seconds), `limit` seconds at
    most by the clock: on a busy loop a step's sleep takes longer than `step`, and counting
    steps would wait several times `limit` (a regional outage's decision, waiting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        before = count()
        await asyncio.sleep(min(step, max(0.0, deadline - loop.time())))
        if count() == before:
            return
