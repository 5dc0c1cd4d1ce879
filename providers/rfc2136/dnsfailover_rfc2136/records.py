"""Record sets read from a primary, seen through the ownership markers that say which are ours.

Ownership scheme (the same as the Route 53 provider's): every record set dnsfailover creates
or updates at `NAME` with type `TYPE` is paired with a TXT record set at
`_dnsfailover-<type>.NAME` (type in lower case) holding `"heritage=dnsfailover,owner=<id>"`.
A key is *owned* when its marker holds that string for our owner id.  Each owner's claim is a
TXT record of its own, so adding or removing ours never touches another owner's.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype

from dnsfailover.model import RecordSet
from dnsfailover.provider.ownership import (
    canonical_values,
    classify,
    cname_conflict,
    markers_of,
    owned_by,
)
from dnsfailover.provider.plan import Key, Populated


def normalise_name(name: str | dns.name.Name) -> str:
    """Absolute, lower case, with the trailing dot."""
    if isinstance(name, str):
        name = dns.name.from_text(name)
    return name.to_text().lower()


def parse_rdata(rtype: str, value: str, origin: str) -> dns.rdata.Rdata:
    """A presentation-format value as rdata; relative names are relative to the zone."""
    return dns.rdata.from_text(
        dns.rdataclass.IN,
        dns.rdatatype.from_text(rtype),
        value,
        origin=dns.name.from_text(origin),
        relativize=False,
    )


@dataclass(frozen=True, slots=True)
class Found:
    """One record set as the primary holds it."""

    ttl: int
    values: tuple[str, ...]

    @classmethod
    def of(cls, rdataset: dns.rdataset.Rdataset) -> Found:
        rtype = dns.rdatatype.to_text(rdataset.rdtype)
        return cls(rdataset.ttl, canonical_values(rtype, (rd.to_text() for rd in rdataset)))


class ZoneView:
    """What was read from the primary (a whole zone by AXFR, or some names by query).

    :param rrsets: record sets by (absolute lower-case name, type)
    :param owner: our owner id
    :param supports: record types that may be managed (markers for other types are ignored)
    """

    def __init__(self, rrsets: dict[Key, Found], owner: str, supports: Collection[str]) -> None:
        self.rrsets = rrsets
        self.owner = owner
        self.types_at: dict[str, set[str]] = defaultdict(set)
        for name, rtype in rrsets:
            self.types_at[name].add(rtype)
        self.markers: dict[Key, Found] = markers_of(rrsets.items(), supports)
        self.ours = owned_by({k: m.values for k, m in self.markers.items()}, owner)

    def marked_ours(self, key: Key) -> bool:
        return key in self.ours

    def conflict(self, key: Key) -> str | None:
        """Why dnsfailover must not write `key`, or None when it may."""
        return cname_conflict(key, self.types_at.get(key[0], ()), self.ours)

    def in_the_way(self, key: Key) -> list[str]:
        """The types at `key`'s name that writing it must delete (the CNAME rule): a plan
        cleared to replace what is in the way (adopt, force) deletes them."""
        name, rtype = key
        return sorted(
            other
            for other in self.types_at.get(name, ())
            if other != rtype
            and (name, other) not in self.ours
            and (rtype == "CNAME" or other == "CNAME")
        )

    def record_set(self, key: Key) -> RecordSet | None:
        found = self.rrsets.get(key)
        return None if found is None else RecordSet(key[0], key[1], found.ttl, found.values)

    def populated(self, keys: Collection[Key], log: logging.Logger) -> Populated:
        """What exists for `keys` and for every key marked as ours; see `Populated`."""
        return classify(keys, self.ours, self.conflict, self.record_set, log)
