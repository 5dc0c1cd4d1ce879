"""Helpers for the RFC 2136 tests: values, and one populate → plan → apply round."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dnsfailover_rfc2136.provider import Rfc2136Provider

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import ApplyResult, BaseProvider
from dnsfailover.provider.plan import Plan, Safety, diff

ZONE = "rfc.test."
MARKER = '"heritage=dnsfailover,owner=dnsfailover"'

#: options that keep retries fast in tests
FAST: dict[str, Any] = {
    "backoff_base": 0.01,
    "backoff_max": 0.05,
    "deadline": 3,
    "confirm_timeout": 3,
    "timeout": 1,
}

#: the `make` fixture: build (not start) a provider for the test's BIND
MakeProvider = Callable[..., Rfc2136Provider]


def rs(name: str, rtype: str, *values: str, ttl: int = 60) -> RecordSet:
    return RecordSet(f"{name}.{ZONE}" if name else ZONE, rtype, ttl, tuple(values))


async def plan(provider: BaseProvider, desired: Iterable[RecordSet]) -> Plan:
    wanted = tuple(desired)
    populated = await provider.populate([(r.name, r.rtype) for r in wanted])
    return diff(provider.zone, populated, wanted)


async def converge(
    provider: BaseProvider, desired: Iterable[RecordSet], *, adopt: bool = False
) -> ApplyResult:
    """What the core does: populate, diff, refuse unsafe plans, apply."""
    p = await plan(provider, desired)
    p.raise_if_unsafe(Safety(adopt=adopt))
    return await provider.apply(p)
