"""Plain value types that flow between the stages: checks → health → engine → server.

Everything here is immutable and free of I/O so each stage can be tested alone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """Health of one target, as seen from one region or as voted across regions."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


def hostport(address: str, port: int) -> str:
    """Format an address and port the way URLs do (`[::1]:53` for IPv6)."""
    if ipaddress.ip_address(address).version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class Target:
    """One thing a probe hits: a named check against one address and port.

    Two failover records that share a check and an address share the target, so it is
    probed once and both see the same health.
    """

    check: str
    address: str
    port: int

    @property
    def key(self) -> str:
        return f"{self.check}@{hostport(self.address, self.port)}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe saw: success or failure, how long it took, and a short why."""

    ok: bool
    latency: float
    detail: str


@dataclass(frozen=True, slots=True)
class Observation:
    """A probe result tagged with where and when it was taken.

    ``at`` is wall-clock seconds (``time.time()``) so observations from several nodes compare.
    """

    target: str
    region: str
    ok: bool
    at: float
    latency: float
    detail: str


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A target changed state; ``region`` is None for the voted (all-regions) state."""

    target: str
    region: str | None
    old: State
    new: State
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class RecordSet:
    """All records of one name and type, values in presentation format, sorted.

    ``weights`` empty: an ordinary set, every query gets every value.  Otherwise one weight
    (0-255) per value, in ``values`` order: the embedded server answers each A/AAAA query
    with one value, chosen in proportion to its weight (AXFR/IXFR still carry every value).
    Weights are part of the answer, so a weight change makes two sets unequal.
    """

    name: str
    rtype: str
    ttl: int
    values: tuple[str, ...]
    weights: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.weights and len(self.weights) != len(self.values):
            raise ValueError(
                f"{self.name} {self.rtype}: {len(self.weights)} weights "
                f"for {len(self.values)} values"
            )


@dataclass(frozen=True, slots=True)
class Soa:
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int
    ttl: int


@dataclass(frozen=True, slots=True)
class ZoneContent:
    """What a zone answers: its SOA and every record set (apex NS included, SOA excluded).

    Names are absolute, lower-case and end with a dot.  ``records`` is sorted by
    (name, rtype) so two contents compare equal exactly when they answer the same.
    """

    origin: str
    soa: Soa
    records: tuple[RecordSet, ...]

    def same_answers(self, other: ZoneContent) -> bool:
        """True when both answer the same, ignoring the serial."""
        mine = (
            self.origin,
            self.soa.mname,
            self.soa.rname,
            self.soa.refresh,
            self.soa.retry,
            self.soa.expire,
            self.soa.minimum,
            self.soa.ttl,
            self.records,
        )
        theirs = (
            other.origin,
            other.soa.mname,
            other.soa.rname,
            other.soa.refresh,
            other.soa.retry,
            other.soa.expire,
            other.soa.minimum,
            other.soa.ttl,
            other.records,
        )
        return mine == theirs


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a node's history (transitions, overrides, interlocks, drills, ...)."""

    id: int
    at: float
    kind: str
    subject: str
    message: str
