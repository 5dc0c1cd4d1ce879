"""Calling boto3 off the event loop, with our own retries (botocore's are turned off).

Transient errors (throttling, PriorRequestNotComplete, HTTP 5xx, connection and read timeouts)
are retried with exponential backoff and full jitter until a deadline; anything else fails at
once.  Error texts carry Route 53's code and message, never request parameters or credentials.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from dnsfailover.backoff import Backoff
from dnsfailover.provider.contract import ProviderError

T = TypeVar("T")

#: Route 53 did not act on the request: it is busy or throttling us
BUSY_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "PriorRequestNotComplete",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
    }
)
RETRYABLE_CODES = BUSY_CODES | {"InternalError", "InternalFailure", "RequestTimeout"}
#: the request itself is wrong: retrying cannot help
REJECTED_CODES = frozenset({"InvalidChangeBatch", "InvalidInput"})


class CallError(ProviderError):
    """A Route 53 call failed.

    :ivar detail: what went wrong, without the operation's name
    :ivar code: Route 53's error code, or the botocore exception's name
    :ivar rejected: Route 53 refused the request as invalid (never retried)
    :ivar attempts: how many times the call was sent
    :ivar maybe_applied: an earlier attempt failed in a way that may have let it take effect
    """

    def __init__(
        self,
        op: str,
        detail: str,
        *,
        code: str,
        rejected: bool,
        attempts: int,
        maybe_applied: bool,
    ) -> None:
        super().__init__(f"{op}: {detail}")
        self.detail = detail
        self.code = code
        self.rejected = rejected
        self.attempts = attempts
        self.maybe_applied = maybe_applied


def error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "Unknown")
    return type(exc).__name__


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def describe(exc: Exception) -> str:
    """`Code: message` for an error; safe to log (no parameters, no credentials)."""
    if isinstance(exc, ClientError):
        message = str(exc.response.get("Error", {}).get("Message") or "").strip()
        status = _status(exc)
        text = f"{error_code(exc)}: {message}" if message else error_code(exc)
        return f"{text} (HTTP {status})" if status >= 500 else text
    return f"{type(exc).__name__}: {exc}"


def transient(exc: Exception) -> bool:
    """Worth retrying: throttling, a busy zone, a server error, a network failure."""
    if isinstance(exc, ClientError):
        return error_code(exc) in RETRYABLE_CODES or _status(exc) >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError)


def ambiguous(exc: Exception) -> bool:
    """The request may have reached Route 53 and taken effect although the call failed."""
    if isinstance(exc, ClientError):
        return _status(exc) >= 500 and error_code(exc) not in BUSY_CODES
    # a read timeout or a connection closed mid-response; a failed connect never got there
    return isinstance(exc, HTTPClientError)


@dataclass(slots=True)
class Caller:
    """Runs blocking boto3 calls in a worker thread, retrying transient errors.

    `calls` counts every attempt by operation name (retries included).
    """

    backoff: Backoff
    log: logging.Logger
    calls: Counter[str] = field(default_factory=Counter)

    async def __call__(
        self, op: str, fn: Callable[[], T], *, deadline_at: float, budget: float, context: str
    ) -> T:
        """`fn()` until it succeeds, fails for good, or `deadline_at` (monotonic) would pass
        during the next backoff; `budget` is the deadline's length, for messages."""
        attempt = 0
        maybe_applied = False
        while True:
            attempt += 1
            self.calls[op] += 1
            try:
                return await asyncio.to_thread(fn)
            except (ClientError, BotoCoreError) as e:
                text, code = describe(e), error_code(e)
                if not transient(e):
                    raise CallError(
                        op,
                        text,
                        code=code,
                        rejected=code in REJECTED_CODES,
                        attempts=attempt,
                        maybe_applied=maybe_applied,
                    ) from e
                maybe_applied = maybe_applied or ambiguous(e)
                delay = self.backoff.delay(attempt - 1)
                if time.monotonic() + delay > deadline_at:
                    raise CallError(
                        op,
                        f"gave up after {attempt} attempts within {budget:g}s: {text}",
                        code=code,
                        rejected=False,
                        attempts=attempt,
                        maybe_applied=maybe_applied,
                    ) from e
                self.log.warning(
                    "retry: %s %s attempt=%d error=%s sleep=%.2fs",
                    op,
                    context,
                    attempt,
                    text,
                    delay,
                )
                await asyncio.sleep(delay)
