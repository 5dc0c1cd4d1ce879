"""Short, human failure details shared by the probes ("connection refused", "timeout after 2s").

Details end up in observations, the event history and `explain`, so they are worded for an
operator: lower case, no tracebacks, no repr noise.
"""

from __future__ import annotations

import errno
import os

from dnsfailover.model import ProbeResult

_ERRNO_DETAIL = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTDOWN: "host down",
    errno.ETIMEDOUT: "connect timed out",
    errno.EADDRNOTAVAIL: "no local address or port available",
    errno.EADDRINUSE: "no local port available",
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "out of file descriptors",
    errno.EPIPE: "connection closed",
}


def errno_detail(code: int) -> str:
    """A short detail for an errno value (as returned by SO_ERROR or connect_ex)."""
    return _ERRNO_DETAIL.get(code) or os.strerror(code).lower()


def os_error_detail(exc: OSError) -> str:
    """A short detail for an OSError, by errno when it has one."""
    if exc.errno is not None and exc.errno in _ERRNO_DETAIL:
        return _ERRNO_DETAIL[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return text.lower()


def timeout_detail(seconds: float) -> str:
    """`timeout after 0.5s`; `%g` keeps `2s` from turning into `2.0s`."""
    return f"timeout after {seconds:g}s"


def shorten(text: str, limit: int = 60) -> str:
    """Cut `text` to `limit` characters so one odd config value can't flood a detail."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failed(latency: float, detail: str) -> ProbeResult:
    return ProbeResult(ok=False, latency=latency, detail=detail)
