"""Short, human failure details shared by the probes ("connection refused", "timeout after 2s").

Details end up in observations, the event history and `explain`, so they are worded for an
operator: lower case, no tracebacks, no repr noise.

A probe that cannot open a socket because *this process* is out of file descriptors or
socket buffers learned nothing about its target: `cannot_probe` makes it an unknown result
(the tracker leaves health alone) and raises the alarm in the log, at most a few ERROR lines
a minute however many probes hit it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from dnsfailover.logs import RateLimitedLog
from dnsfailover.model import ProbeResult

SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_shortage_log = RateLimitedLog(logging.getLogger("dnsfailover.checks"), period=60.0, burst=3)

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
    errno.ENOBUFS: "out of socket buffers",
    errno.ENOMEM: "out of memory",
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


def shortage_errno(exc: BaseException | None) -> int | None:
    """The errno of a local resource shortage in `exc` or what it wraps, else None."""
    for _ in range(8):  # aiohttp wraps the OSError once or twice
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno in SHORTAGE_ERRNOS:
            return exc.errno
        inner = getattr(exc, "os_error", None)
        if isinstance(inner, OSError) and inner.errno in SHORTAGE_ERRNOS:
            return inner.errno
        exc = exc.__cause__ or exc.__context__
    return None


def socket_shortage() -> int | None:
    """The errno when this process cannot open a socket now, else None: for libraries that
    report a socket they could not open as a failure of the server (c-ares)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    except OSError as exc:
        return exc.errno if exc.errno in SHORTAGE_ERRNOS else None
    return None


def cannot_probe(latency: float, code: int, target: str) -> ProbeResult:
    """An unknown result: the probe of `target` could not open a socket (errno `code`)."""
    why = errno_detail(code)
    _shortage_log.log(
        logging.ERROR,
        "probe: cannot open a socket to probe %s: %s; its result is unknown and its health "
        "stays as it was until probes can run (raise the file-descriptor limit or find what "
        "holds them)",
        target,
        why,
    )
    return ProbeResult(ok=False, latency=latency, detail=f"could not probe: {why}", unknown=True)
