"""cancel_and_wait ends a task even if it swallows a cancellation (as 3.11's wait_for can);
settle waits while a count grows, and no longer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable

from dnsfailover.tasks import cancel_and_wait, settle


async def test_a_task_that_swallows_one_cancellation_still_stops() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        swallowed.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every=0.05), 5)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_settle_waits_while_the_count_grows_and_no_longer() -> None:
    calls = 0

    def growing_until(n: int) -> Callable[[], int]:
        def count() -> int:
            nonlocal calls
            calls += 1
            return min(calls, n)

        return count

    await settle(growing_until(5), 0.001, 1.0)
    assert calls == 6  # grew on each step until 5, then one unchanged step: done
    calls = 0
    await settle(growing_until(10**9), 0.001, 0.01)
    assert calls <= 2 * 11  # always growing: stopped by the limit (10 steps)


async def test_settle_stops_at_its_limit_on_a_busy_loop() -> None:
    """A loop busy elsewhere makes every step's sleep last longer: the limit is wall time."""
    growing = itertools.count()
    loop = asyncio.get_running_loop()
    busy = True

    def hog() -> None:  # blocks the loop for 20 ms at a time, as a burst of probe results does
        if busy:
            time.sleep(0.02)
            loop.call_soon(hog)

    loop.call_soon(hog)
    started = time.monotonic()
    await settle(lambda: next(growing), 0.001, 0.1)
    waited = time.monotonic() - started
    busy = False
    # counting 100 steps of ~20 ms each would wait ~2 s
    assert waited < 0.5
