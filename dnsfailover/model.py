"""Plain value types that flow between the stages: checks → health → engine → server.

Everything here is immutable and free of I/O so each stage can be tested alone.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    """Health of one target, as seen from one region or as voted across regions."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


def answer_text(values: tuple[str, ...] | list[str]) -> str:
    """An answer as people read it in logs, events and the page: `a, b`, or `nothing`."""
    return ", ".join(values) or "nothing"


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
    """What one probe saw: success or failure, how long it took, and a short why.

    ``unknown``: the probe could not run at all for a reason of this process (out of file
    descriptors or socket buffers), so it says nothing about the target; ``ok`` is False and
    health trackers leave the target's state and counts as they were.
    """

    ok: bool
    latency: float
    detail: str
    unknown: bool = False


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
    unknown: bool = False  # the probe could not run here (see `ProbeResult.unknown`)


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


Key = tuple[str, str]  # (absolute name, record type)

DEFAULT_PLACE = "*"  # the place of a steered name's default group: every client no rule places


def group_id(order: tuple[str, ...]) -> str:
    """A location group's id: its ordered regions (tiers), comma-joined (``eu,us,ap``)."""
    return ",".join(order)


@dataclass(frozen=True, slots=True)
class SteeredSet:
    """A steered name's answers, one per location group (see `dnsfailover.geo.steer`).

    ``answers``: group id → the record set that group's clients get (same name and type).
    ``default``: the id of the group of clients the steering rule does not place; its
    answer is also the zone's plain managed set for the key, which is what zone transfers,
    RFC 2136 primaries and every provider without location support publish.
    ``places``: group id → where its clients are, as the rule maps them: ``country:DE``,
    ``continent:EU``, ``net:LABEL`` (a CIDR-map label), ``proximity`` for a group proximity
    steering produced, and ``*`` (`DEFAULT_PLACE`) for the default group.  A provider with
    geolocation records (Route 53) publishes one set per place.
    """

    name: str
    rtype: str
    default: str
    answers: Mapping[str, RecordSet]
    places: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, init=False, eq=False)
class ZoneContent:
    """What a zone answers: its SOA and every record set (apex NS included, SOA excluded).

    Names are absolute, lower-case and end with a dot.  A zone is kept as two parts: its
    `static` record sets, compiled once per config and shared by every version of the zone,
    and its `managed` ones (the failover names' answers) by key, which a decision replaces
    (`with_managed`); so a new version costs what changed, not the whole zone.  `records`
    is both, sorted by (name, rtype), so two contents compare equal exactly when they
    answer the same.  `ZoneContent(origin, soa, records)` makes a zone of static sets only.
    `steered` holds the per-location-group answers of steered names (see `SteeredSet`);
    each one's default group is also its plain managed set, so `records` (zone transfers,
    providers without location support) carries the default answer.
    """

    origin: str
    soa: Soa
    static: tuple[RecordSet, ...]
    managed: Mapping[Key, RecordSet]
    steered: Mapping[Key, SteeredSet]
    _merged: tuple[RecordSet, ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __init__(
        self,
        origin: str,
        soa: Soa,
        records: tuple[RecordSet, ...] | None = None,
        managed: Mapping[Key, RecordSet] | None = None,
        *,
        static: tuple[RecordSet, ...] | None = None,
        steered: Mapping[Key, SteeredSet] | None = None,
    ) -> None:
        if records is not None:  # every set given (also `dataclasses.replace(z, records=...)`)
            static, managed = records, None
        set_ = object.__setattr__
        set_(self, "origin", origin)
        set_(self, "soa", soa)
        set_(self, "static", static if static is not None else ())
        set_(self, "managed", managed if managed is not None else {})
        set_(self, "steered", steered if steered is not None else {})
        set_(self, "_merged", None)

    @property
    def records(self) -> tuple[RecordSet, ...]:
        """Every record set, sorted by (name, rtype)."""
        if not self.managed:
            return self.static
        if self._merged is None:
            managed = sorted(self.managed.values(), key=_key)
            merged = tuple(heapq.merge(self.static, managed, key=_key))
            object.__setattr__(self, "_merged", merged)
            return merged
        return self._merged

    def with_managed(
        self,
        updates: Mapping[Key, RecordSet],
        steered: Mapping[Key, SteeredSet] | None = None,
    ) -> ZoneContent:
        """This zone with these managed (and steered) sets replaced (the static part is
        shared)."""
        managed = dict(self.managed)
        managed.update(updates)
        groups = self.steered
        if steered:
            groups = {**groups, **steered}
        return ZoneContent(
            self.origin, self.soa, managed=managed, static=self.static, steered=groups
        )

    def same_answers(self, other: ZoneContent) -> bool:
        """True when both answer the same, ignoring the serial."""
        a, b = self.soa, other.soa
        if (self.origin, a.mname, a.rname, a.refresh, a.retry, a.expire, a.minimum, a.ttl) != (
            other.origin,
            b.mname,
            b.rname,
            b.refresh,
            b.retry,
            b.expire,
            b.minimum,
            b.ttl,
        ):
            return False
        if self.steered != other.steered:
            return False
        if self.static is other.static:  # the same config: only managed sets can differ
            return self.managed is other.managed or self.managed == other.managed
        return self.records == other.records

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ZoneContent):
            return NotImplemented
        return self.soa == other.soa and self.same_answers(other)

    def __hash__(self) -> int:
        return hash((self.origin, self.soa, self.records))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled (to worker processes) without the merged view, which is only a cache.
        return (
            _zone,
            (self.origin, self.soa, self.static, dict(self.managed), dict(self.steered)),
        )


def _zone(
    origin: str,
    soa: Soa,
    static: tuple[RecordSet, ...],
    managed: dict[Key, RecordSet],
    steered: dict[Key, SteeredSet] | None = None,
) -> ZoneContent:
    return ZoneContent(origin, soa, managed=managed, static=static, steered=steered)


def _key(rs: RecordSet) -> Key:
    return (rs.name, rs.rtype)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a node's history (transitions, overrides, interlocks, drills, ...)."""

    id: int
    at: float
    kind: str
    subject: str
    message: str
