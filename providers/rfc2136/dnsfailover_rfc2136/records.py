"""Record sets read from a primary, seen through the ownership markers that say which are ours.

Ownership scheme (the same as the Route 53 provider's): every record set dnsfailover creates
or updates at `NAME` with type `TYPE` is paired with a TXT record set at
`_dnsfailover-<type>.NAME` (type in lower case) holding `"heritage=dnsfailover,owner=<id>"`.
A key is *owned* when its marker holds that string for our owner id.  Each owner's claim is a
TXT record of its own, so adding or removing ours never touches another owner's.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype

from dnsfailover.model import RecordSet
from dnsfailover.provider.ownership import classify, managed_key, marker_owners
from dnsfailover.provider.plan import Key, Populated


def normalise_name(name: str | dns.name.Name) -> str:
    """Absolute, lower case, with the trailing dot."""
    if isinstance(name, str):
        name = dns.name.from_text(name)
    return name.to_text().lower()


def canonical_values(rtype: str, values: Iterable[str]) -> tuple[str, ...]:
    """Values in the order the core compares them: addresses by address, the rest as text."""
    unique = set(values)
    if rtype in ("A", "AAAA"):
        try:
            return tuple(str(a) for a in sorted({ipaddress.ip_address(v) for v in unique}))
        except ValueError:
            pass  # not addresses after all: compare them as text
    return tuple(sorted(unique))


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
        self.markers: dict[Key, Found] = {}
        for (name, rtype), found in rrsets.items():
            managed = managed_key(name) if rtype == "TXT" else None
            if managed is not None and managed[1] in supports:
                self.markers[managed] = found

    def marked_ours(self, key: Key) -> bool:
        marker = self.markers.get(key)
        return marker is not None and self.owner in marker_owners(marker.values)

    def conflict(self, key: Key) -> str | None:
        """Why dnsfailover must not write `key`, or None when it may."""
        name, rtype = key
        others = self.types_at.get(name, set()) - {rtype}
        if rtype == "CNAME":
            theirs = sorted(t for t in others if not self.marked_ours((name, t)))
            if theirs:
                return f"{name} has {', '.join(theirs)} records, so it cannot take a CNAME"
        elif "CNAME" in others and not self.marked_ours((name, "CNAME")):
            return f"{name} is a CNAME"
        return None

    def record_set(self, key: Key) -> RecordSet | None:
        found = self.rrsets.get(key)
        return None if found is None else RecordSet(key[0], key[1], found.ttl, found.values)

    def populated(self, keys: Collection[Key], log: logging.Logger) -> Populated:
        """What exists for `keys` and for every key marked as ours; see `Populated`."""
        ours = {k for k in self.markers if self.marked_ours(k)}
        return classify(keys, ours, self.conflict, self.record_set, log)
