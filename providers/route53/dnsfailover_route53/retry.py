"""Calling boto3 off the event loop, with the core's retry loop (botocore's are turned off).

Transient errors (throttling, PriorRequestNotComplete, HTTP 5xx, connection and read timeouts)
are retried with exponential backoff and full jitter until a deadline; anything else fails at
once.  Error texts carry Route 53's code and message, never request parameters or credentials.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from dnsfailover.backoff import Backoff
from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.retry import Retrier

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


@dataclass(frozen=True, slots=True)
class Route53Errors:
    """What Route 53's errors mean to the shared retry loop; `budget` (the deadline's
    length) is for messages."""

    budget: float
    catch: tuple[type[Exception], ...] = (ClientError, BotoCoreError)

    def transient(self, exc: Exception) -> bool:
        return transient(exc)

    def ambiguous(self, exc: Exception) -> bool:
        return ambiguous(exc)

    def describe(self, exc: Exception) -> str:
        return describe(exc)

    def fatal(self, op: str, exc: Exception, attempts: int, maybe_applied: bool) -> Exception:
        code = error_code(exc)
        return CallError(
            op,
            describe(exc),
            code=code,
            rejected=code in REJECTED_CODES,
            attempts=attempts,
            maybe_applied=maybe_applied,
        )

    def exhausted(
        self, op: str, exc: Exception, text: str, attempts: int, maybe_applied: bool
    ) -> Exception:
        return CallError(
            op,
            f"gave up after {attempts} attempts within {self.budget:g}s: {text}",
            code=error_code(exc),
            rejected=False,
            attempts=attempts,
            maybe_applied=maybe_applied,
        )


class Caller:
    """Runs blocking boto3 calls in a worker thread, retrying transient errors (the core's
    `Retrier`).  `calls` counts every attempt by operation name (retries included)."""

    def __init__(self, backoff: Backoff, log: logging.Logger) -> None:
        self._retrier = Retrier(backoff, log)

    @property
    def calls(self) -> Counter[str]:
        return self._retrier.calls

    async def __call__(
        self, op: str, fn: Callable[[], T], *, deadline_at: float, budget: float, context: str
    ) -> T:
        """`fn()` until it succeeds, fails for good, or `deadline_at` (monotonic) would pass
        during the next backoff; `budget` is the deadline's length, for messages."""

        async def once() -> T:
            return await asyncio.to_thread(fn)

        return await self._retrier.run(
            op, once, Route53Errors(budget), deadline_at=deadline_at, context=context
        )
