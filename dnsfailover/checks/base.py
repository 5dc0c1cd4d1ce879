"""The probe contract and the factory that picks a probe for a check type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import aiohttp

from dnsfailover.checks.dns import DnsProbe
from dnsfailover.checks.http import HttpProbe
from dnsfailover.checks.tcp import TcpProbe
from dnsfailover.config.checks import CheckConfig
from dnsfailover.model import ProbeResult, Target


class Probe(Protocol):
    """Probes one target once.

    Implementations must enforce the check's timeout themselves and must never raise:
    every failure, including a timeout, is a `ProbeResult(ok=False, detail=...)` with a short
    human detail.  `latency` is in seconds.  Cancellation (the scheduler stopping or the
    target being removed) is the one exception that propagates, after cleanup.
    """

    async def __call__(self, target: Target) -> ProbeResult: ...


ProbeFactory = Callable[[CheckConfig, aiohttp.ClientSession | None, str | None], Probe]

_FACTORIES: dict[str, ProbeFactory] = {
    "http": HttpProbe,
    "https": HttpProbe,
    "tcp": lambda check, _session, source: TcpProbe(check, source),
    "dns": lambda check, _session, source: DnsProbe(check, source),
}


def make_probe(
    check: CheckConfig,
    *,
    session: aiohttp.ClientSession | None = None,
    source_address: str | None = None,
) -> Probe:
    """The probe for `check.type`.

    :param check: the validated check; the probe keeps what it needs from it.
    :param session: the shared aiohttp session for http/https probes (see
        `dnsfailover.checks.http.make_session`); without one, each http probe opens and
        closes a session of its own, which is fine for a one-off probe only.  A given
        session decides the http source address: make it with the same `source_address`.
    :param source_address: the local address probes leave from (a region's
        `source_address`); None lets the kernel choose.
    :raises ValueError: for a check type no probe handles (config validation rules
        this out).
    """
    try:
        factory = _FACTORIES[check.type]
    except KeyError:
        raise ValueError(
            f"no probe for check type {check.type!r}; known: {', '.join(sorted(_FACTORIES))}"
        ) from None
    return factory(check, session, source_address)
