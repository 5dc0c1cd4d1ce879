"""The provider contract: populate what exists → plan the diff → apply → confirm.

A provider publishes the record sets of one zone somewhere: the embedded DNS server, or an
external DNS service (Route 53, RFC 2136 primaries, ...).  Providers are found through the
`dnsfailover.providers` entry point group and loaded lazily, so a provider's heavy
dependencies (boto3, ...) are imported only when a zone uses it.

The plan is a pure value (`provider.plan`); `Plan.unsafe_reasons()` is the safety check
that `apply` honours unless forced.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from dnsfailover.errors import DnsFailoverError
from dnsfailover.model import DEFAULT_PLACE, RecordSet, SteeredSet
from dnsfailover.provider.plan import (
    GeoKey,
    Key,
    PlaceError,
    Plan,
    Populated,
    place_kind,
    placed_sets,
    summarize,
)

ENTRY_POINT_GROUP = "dnsfailover.providers"


class ProviderError(DnsFailoverError):
    """A provider call failed."""


class UnknownProvider(DnsFailoverError):
    """No provider of that name is installed."""


class ProviderOptions(BaseModel):
    """Base of every provider's options (the zone's `options:` mapping)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    zone: str
    applied: int  # changes applied
    calls: int  # write calls made (batches, including retries)
    confirmed: bool  # the provider confirmed propagation (e.g. Route 53 INSYNC)
    detail: str = ""


class BaseProvider(abc.ABC):
    """One zone published somewhere.

    Subclasses set `SUPPORTS` and `Options`, and implement `populate` and `apply`.
    Instances are created by `create_provider()`, which validates the options first.
    """

    #: record types the provider can publish
    SUPPORTS: ClassVar[frozenset[str]] = frozenset({"A", "AAAA"})
    #: whether the provider serves the zone's SOA/NS itself (the embedded server does)
    SERVES_APEX: ClassVar[bool] = False
    #: the kinds of place (``country``, ``continent``) it publishes a record set per place
    #: for (Route 53 geolocation); empty: a steered name is published as its default
    #: group's answer only (the plain set).  A config steering by other places (``net``,
    #: ``proximity``) cannot be published by such a provider and is refused at load.
    GEO_PLACES: ClassVar[frozenset[str]] = frozenset()
    Options: ClassVar[type[ProviderOptions]] = ProviderOptions

    def __init__(self, zone: str, options: ProviderOptions) -> None:
        self.zone = zone
        self.options = options
        self.log = logging.getLogger(f"dnsfailover.provider.{self.id}")

    @property
    def id(self) -> str:
        return type(self).__name__.removesuffix("Provider").lower()

    def location_sets(self, steered: Iterable[SteeredSet]) -> dict[GeoKey, RecordSet]:
        """The location record sets this provider publishes for these steered names (see
        `placed_sets`): none without location support (`GEO_PLACES` empty).

        :raises ProviderError: a place it cannot publish, or one in two groups.
        """
        if not self.GEO_PLACES:
            return {}
        steered = list(steered)
        bad = unpublishable(
            self.GEO_PLACES,
            ((s.name, s.rtype, p) for s in steered for ps in s.places.values() for p in ps),
        )
        if bad:
            raise ProviderError(f"{self.zone}: {self.id} cannot publish: {summarize(bad)}")
        try:
            return placed_sets(steered)
        except PlaceError as e:
            raise ProviderError(f"{self.zone}: {e}") from e

    async def start(self) -> None:  # noqa: B027 - a hook with a do-nothing default
        """Connect and check access (e.g. find the hosted zone). Overrides must be idempotent."""

    @abc.abstractmethod
    async def populate(self, keys: Collection[Key]) -> Populated:
        """What exists now for `keys` (and for every key this provider marked as ours).

        Overrides must not raise for keys that do not exist; report foreign ones.
        """

    async def populate_keys(self, keys: Collection[Key]) -> Populated:
        """What exists now for exactly `keys` (and their ownership markers), read without
        the rest of the zone: the names a plan touches, between full reads.  Overrides must
        leave the provider ready to `apply` a plan of these keys, with the same conflict
        checks as after `populate`.  Default: `populate(keys)`, the whole zone.
        """
        return await self.populate(keys)

    @abc.abstractmethod
    async def apply(self, plan: Plan) -> ApplyResult:
        """Make `plan` true, all or nothing per batch, and confirm it.

        Overrides must retry transient errors within their deadline and raise
        `ProviderError` when a change was rejected or could not be confirmed.
        """

    async def close(self) -> None:  # noqa: B027 - a hook with a do-nothing default
        """Release connections."""


def unpublishable(kinds: Collection[str], places: Iterable[GeoKey]) -> list[str]:
    """Why each of these location sets is not among the `kinds` of place a provider
    publishes (the default place always is)."""
    return [
        f"{name} {rtype} [{place}]: steering by {place_kind(place)} has no record set "
        f"here (only {', '.join(sorted(kinds)) or 'none'}: keep such names on the embedded "
        "server)"
        for name, rtype, place in places
        if place != DEFAULT_PLACE and place_kind(place) not in kinds
    ]


def provider_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_provider(name: str) -> type[BaseProvider]:
    """The provider class registered as `name`; imported only now."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        installed = ", ".join(provider_names()) or "none"
        raise UnknownProvider(f"unknown provider {name!r}; installed: {installed}")
    cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, BaseProvider)):
        raise UnknownProvider(f"provider {name!r} ({found[0].value}) is not a BaseProvider")
    return cls


def create_provider(name: str, zone: str, options: Mapping[str, Any]) -> BaseProvider:
    """Load, validate the options (pydantic errors propagate for `config.load` to place), build."""
    cls = load_provider(name)
    return cls(zone, cls.Options.model_validate(dict(options)))
