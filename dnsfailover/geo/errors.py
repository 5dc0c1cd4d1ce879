"""What the geo package raises on purpose: one root, one subclass per kind of mistake."""

from __future__ import annotations

from dnsfailover.errors import DnsFailoverError


class GeoError(DnsFailoverError):
    """Global steering cannot use what it was given."""


class EcsFormatError(GeoError):
    """The EDNS Client Subnet option is malformed (RFC 7871: answer FORMERR)."""


class DatabaseError(GeoError):
    """The location database cannot be used."""


class NetsError(GeoError):
    """The CIDR map is invalid."""


class UnknownCodeError(GeoError):
    """A country or continent code is not known."""


class SteeringError(GeoError):
    """A steering rule is invalid."""
