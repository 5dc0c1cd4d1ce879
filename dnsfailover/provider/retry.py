"""The retry loop every external provider shares: transient failures are retried with
exponential backoff and full jitter until a deadline; anything else fails at once.

A provider says what its errors mean with a `RetryPolicy` (which are transient, which may
have taken effect although the call failed, what to raise); the loop, the attempt counts,
the deadline and the log line are the same for every provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from dnsfailover.backoff import Backoff

T = TypeVar("T")


class RetryPolicy(Protocol):
    """What a provider's errors mean to the retry loop."""

    @property
    def catch(self) -> tuple[type[Exception], ...]:
        """What the loop looks at; anything else propagates at once."""

    def transient(self, exc: Exception) -> bool:
        """Worth retrying: throttling, a busy or unreachable server, a timeout."""

    def ambiguous(self, exc: Exception) -> bool:
        """The request may have reached the service and taken effect although it failed."""

    def describe(self, exc: Exception) -> str:
        """The error for messages and logs: never request parameters or secrets."""

    def fatal(self, op: str, exc: Exception, attempts: int, maybe_applied: bool) -> Exception:
        """What to raise for a failure that is not transient (`exc` itself to re-raise it)."""

    def exhausted(
        self, op: str, exc: Exception, text: str, attempts: int, maybe_applied: bool
    ) -> Exception:
        """What to raise when the next backoff would pass the deadline."""


@dataclass(slots=True)
class Retrier:
    """Runs calls until they succeed, fail for good, or the deadline would pass.

    `calls` counts every attempt by operation name (retries included).
    """

    backoff: Backoff
    log: logging.Logger
    calls: Counter[str] = field(default_factory=Counter)

    async def run(
        self,
        op: str,
        fn: Callable[[], Awaitable[T]],
        policy: RetryPolicy,
        *,
        deadline_at: float,
        context: str,
    ) -> T:
        """`await fn()` until it succeeds, fails for good, or the next backoff would pass
        `deadline_at` (monotonic); `context` names what it is about in the retry log line."""
        attempt = 0
        maybe_applied = False
        while True:
            attempt += 1
            self.calls[op] += 1
            try:
                return await fn()
            except policy.catch as e:
                if not policy.transient(e):
                    raised = policy.fatal(op, e, attempt, maybe_applied)
                    if raised is e:
                        raise
                    raise raised from e
                maybe_applied = maybe_applied or policy.ambiguous(e)
                text = policy.describe(e)
                delay = self.backoff.delay(attempt - 1)
                if time.monotonic() + delay > deadline_at:
                    raise policy.exhausted(op, e, text, attempt, maybe_applied) from e
                self.log.warning(
                    "retry: %s %s attempt=%d error=%s sleep=%.2fs",
                    op,
                    context,
                    attempt,
                    text,
                    delay,
                )
                await asyncio.sleep(delay)
