"""cancel_and_wait ends a task even if it swallows a cancellation (as 3.11's wait_for can)."""

from __future__ import annotations

import asyncio
import contextlib

from dnsfailover.tasks import cancel_and_wait


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
