"""Task helpers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("dnsfailover")


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
