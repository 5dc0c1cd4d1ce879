"""`Alerter`: fans notices out to every destination without ever holding up the engine.

`emit` only filters, takes a rate-limit token and appends to the destination's queue; each
destination has its own worker task that delivers in order and retries with backoff, so a
hung webhook delays nothing but its own queue.  Queues are bounded: when one is full the
oldest notice is dropped and counted (the newest state is what matters during an outage).

Rate limit: a token bucket per destination (`burst` tokens, refilled at `burst` per `per`).
Once a notice finds the bucket empty, that destination counts instead of sending, and every
notice after it is counted too, until a token returns; the first token then carries one
summary ("N notices suppressed in the last …") and normal delivery resumes.  So an outage
that flips hundreds of targets costs each destination `burst` messages plus one summary.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from dnsfailover.alerts.notice import Notice, Severity
from dnsfailover.alerts.senders import DeliveryError, Sender, SetupError, SnsSender, WebhookSender
from dnsfailover.backoff import Backoff
from dnsfailover.config.alerts import Destination, NotificationsConfig, RateLimit, SnsConfig

__all__ = ["Alerter", "DestinationStats", "Notice", "TokenBucket"]

logger = logging.getLogger("dnsfailover.alerts")

STOP_DEADLINE = 2.0
_SEVERITY_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}


class TokenBucket:
    """`burst` tokens, refilled continuously at `burst / per` per second."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = float(limit.burst)
        self._rate = limit.burst / limit.per
        self._clock = clock
        self._tokens = self._burst
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now

    def take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait(self) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self._rate)


@dataclass(frozen=True, slots=True)
class DestinationStats:
    """Counters since start, for /metrics and the status page."""

    label: str
    delivered: int
    failed: int  # gave up: not retryable, or out of attempts
    retries: int
    suppressed: int  # by the rate limit (each summarised in a later notice)
    dropped: int  # queue full, or left over at stop
    queued: int
    disabled: str | None  # why the destination cannot send (a missing key), or None


def _human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.1f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


class _Destination:
    """One destination's queue, rate limit, suppression tally and worker."""

    def __init__(
        self,
        config: Destination,
        sender: Sender,
        *,
        rate: RateLimit,
        queue_size: int,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.sender = sender
        self.label = sender.label
        self._rate = rate
        self._clock = clock
        self._bucket = TokenBucket(rate)
        self._backoff = Backoff(base=config.retry.backoff, cap=config.retry.max_backoff)
        self.queue: collections.deque[Notice] = collections.deque()
        self._queue_size = queue_size
        self.wake = asyncio.Event()
        self.closing = False
        self.disabled: str | None = None
        self._suppressed: collections.Counter[str] = collections.Counter()
        self._suppressed_worst: Severity = "info"
        self._suppressing_since = 0.0
        self.delivered = self.failed = self.retries = self.suppressed = self.dropped = 0

    def offer(self, notice: Notice) -> None:
        if self.closing or not self.config.wants(notice.kind):
            return
        if self.disabled is not None:
            self.dropped += 1
            return
        if not self._suppressed and self._bucket.take():
            if len(self.queue) >= self._queue_size:
                self.queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    logger.warning("notify: %s queue full; dropped %d", self.label, self.dropped)
            self.queue.append(notice)
        else:
            if not self._suppressed:
                self._suppressing_since = self._clock()
                logger.warning("notify: %s rate limit reached; suppressing", self.label)
            self._suppressed[notice.kind] += 1
            self.suppressed += 1
            if _SEVERITY_RANK[notice.severity] > _SEVERITY_RANK[self._suppressed_worst]:
                self._suppressed_worst = notice.severity
        self.wake.set()

    def stats(self) -> DestinationStats:
        return DestinationStats(
            label=self.label,
            delivered=self.delivered,
            failed=self.failed,
            retries=self.retries,
            suppressed=self.suppressed,
            dropped=self.dropped,
            queued=len(self.queue),
            disabled=self.disabled,
        )

    async def run(self) -> None:
        """Deliver until `closing` and nothing is left; cancelled at the stop deadline."""
        try:
            await self.sender.start()
        except SetupError as exc:
            self.disabled = str(exc)
            logger.error("notify: %s disabled: %s", self.label, exc)
            return
        except Exception as exc:  # e.g. botocore failing to build a client
            self.disabled = f"setup failed: {type(exc).__name__}"
            logger.error("notify: %s disabled: setup failed: %r", self.label, exc)
            return
        while True:
            self.wake.clear()
            if self.queue:
                await self._deliver(self.queue.popleft())
                continue
            if self._suppressed:
                wait = self._bucket.wait()
                if wait <= 0.0 and self._bucket.take():
                    await self._deliver(self._summary())
                    continue
                if self.closing:
                    return  # no token for a summary before the deadline: give up on it
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.001)):
                        await self.wake.wait()
                continue
            if self.closing:
                return
            await self.wake.wait()

    def _summary(self) -> Notice:
        now = self._clock()
        total = sum(self._suppressed.values())
        kinds = dict(self._suppressed.most_common())
        spell = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        since = self._suppressing_since
        notice = Notice(
            kind="suppressed",
            subject=self.label,
            message=(
                f"{total} notices suppressed in the last {_human_seconds(now - since)} "
                f"(rate limit {self._rate.burst} per {_human_seconds(self._rate.per)}): {spell}"
            ),
            at=now,
            severity=self._suppressed_worst,
            data={"suppressed": total, "kinds": kinds, "since": since},
        )
        self._suppressed.clear()
        self._suppressed_worst = "info"
        return notice

    async def _deliver(self, notice: Notice) -> None:
        delivery_id = uuid.uuid4().hex
        attempts = self.config.retry.attempts
        for attempt in range(attempts):
            try:
                await self.sender.send(notice, delivery_id)
            except DeliveryError as exc:
                last = attempt + 1 >= attempts
                if not exc.retryable or last:
                    self.failed += 1
                    why = "not retryable" if not exc.retryable else f"gave up after {attempts}"
                    logger.warning(
                        "notify: %s failed (%s; %s): kind=%s subject=%s",
                        self.label, exc.reason, why, notice.kind, notice.subject,
                    )  # fmt: skip
                    return
                delay = self._backoff.delay(attempt)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.config.retry.max_backoff))
                logger.info(
                    "notify: %s attempt %d failed (%s); retrying in %.2fs",
                    self.label, attempt + 1, exc.reason, delay,
                )  # fmt: skip
                self.retries += 1
                await asyncio.sleep(delay)
            except Exception as exc:  # a sender broke its contract: count it, keep going
                self.failed += 1
                logger.error("notify: %s: unexpected %s", self.label, type(exc).__name__)
                return
            else:
                self.delivered += 1
                logger.debug("notify: %s delivered kind=%s", self.label, notice.kind)
                return


class Alerter:
    """Sends notices to the configured webhooks and SNS topics.

    :param config: the `notifications:` section.
    :param clock: wall clock for summary notices and webhook timestamps.
    :param node: this node's name, added to every payload when given.
    """

    def __init__(
        self,
        config: NotificationsConfig,
        *,
        clock: Callable[[], float] = time.time,
        node: str | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._emit_errors = 0
        self._destinations: list[_Destination] = []
        seen: collections.Counter[str] = collections.Counter()
        for spec in config.destinations():
            label = spec.label()
            seen[label] += 1
            if seen[label] > 1:
                label = f"{label} #{seen[label]}"
            sender: Sender
            if isinstance(spec, SnsConfig):
                sender = SnsSender(spec, label, node=node)
            else:
                sender = WebhookSender(spec, label, node=node, clock=clock)
            self._destinations.append(
                _Destination(
                    spec, sender, rate=config.rate_limit, queue_size=config.queue, clock=clock
                )
            )

    async def start(self) -> None:
        """Start one worker per destination (each loads its key or client first)."""
        if self._loop is not None:
            raise RuntimeError("the alerter is already started")
        self._loop = asyncio.get_running_loop()
        for dest in self._destinations:
            task = self._loop.create_task(dest.run(), name=f"notify {dest.label}")
            self._tasks.append(task)
        if self._destinations:
            logger.info("notify: destinations=%s", ", ".join(d.label for d in self._destinations))

    def emit(self, notice: Notice) -> None:
        """Queue `notice` for every destination that wants it; never blocks, never raises.

        Safe from other threads too (handed to the loop).  Dropped after `stop`.
        """
        if self._stopped or not self._destinations:
            return
        try:
            loop = self._loop
            if loop is not None and not _on_loop(loop):
                loop.call_soon_threadsafe(self._offer, notice)
            else:
                self._offer(notice)
        except Exception as exc:  # the engine must never trip over a notification
            self._emit_errors += 1
            if self._emit_errors == 1 or self._emit_errors % 1000 == 0:
                logger.error("notify: emit failed (%d times): %r", self._emit_errors, exc)

    def _offer(self, notice: Notice) -> None:
        for dest in self._destinations:
            dest.offer(notice)

    async def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """Deliver what is queued for up to `deadline` seconds, then cancel and close."""
        self._stopped = True
        for dest in self._destinations:
            dest.closing = True
            dest.wake.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for dest in self._destinations:
            if dest.queue:
                dest.dropped += len(dest.queue)
                logger.warning(
                    "notify: %s: %d notice(s) undelivered at stop", dest.label, len(dest.queue)
                )
                dest.queue.clear()
            with contextlib.suppress(Exception):
                await dest.sender.close()

    def stats(self) -> list[DestinationStats]:
        return [dest.stats() for dest in self._destinations]


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
