"""Route 53 record sets as dnsfailover values, and the ownership markers that say which are ours.

Ownership scheme: every record set dnsfailover creates or updates at `NAME` with type `TYPE`
is paired with a TXT record set at `_dnsfailover-<type>.NAME` (type in lower case) holding
`"heritage=dnsfailover,owner=<owner_id>"`.  A key is *owned* when its marker holds that string
for our owner id.  The marker lives one label below the name, never at the name itself, so it
never clashes with a CNAME there, and each type has its own marker, so updating one type
never rewrites another type's marker.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import defaultdict
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, cast

from dnsfailover.model import RecordSet
from dnsfailover.provider.ownership import classify, managed_key, marker_owners
from dnsfailover.provider.plan import Key, Populated

if TYPE_CHECKING:
    from mypy_boto3_route53.literals import RRTypeType
    from mypy_boto3_route53.type_defs import (
        ResourceRecordSetOutputTypeDef as Listed,
    )
    from mypy_boto3_route53.type_defs import (
        ResourceRecordSetTypeDef,
    )


_ESCAPE = re.compile(r"\\(\d{3}|.)")
_ROUTING_KEYS = (
    "SetIdentifier",
    "AliasTarget",
    "Weight",
    "Region",
    "Failover",
    "GeoLocation",
    "GeoProximityLocation",
    "MultiValueAnswer",
    "CidrRoutingConfig",
    "TrafficPolicyInstanceId",
)


def normalise_name(name: str) -> str:
    """Route 53's `\\052.Example.test.` → `*.example.test.` (absolute, lower case)."""

    def unescape(m: re.Match[str]) -> str:
        code = m.group(1)
        return chr(int(code, 8)) if len(code) == 3 else code

    name = _ESCAPE.sub(unescape, name.strip()).lower()
    return name if name.endswith(".") else name + "."


def canonical_values(rtype: str, values: Iterable[str]) -> tuple[str, ...]:
    """Values in the order the core compares them: addresses by address, the rest as text."""
    unique = set(values)
    if rtype in ("A", "AAAA"):
        try:
            return tuple(str(a) for a in sorted({ipaddress.ip_address(v) for v in unique}))
        except (ValueError, TypeError):
            pass  # not addresses after all: compare them as text
    return tuple(sorted(unique))


def is_simple(rrset: Listed) -> bool:
    """True for a plain record set: no routing policy, not an alias, not a traffic policy."""
    return not any(k in rrset for k in _ROUTING_KEYS)


def to_record_set(rrset: Listed) -> RecordSet:
    rtype = rrset["Type"].upper()
    return RecordSet(
        normalise_name(rrset["Name"]),
        rtype,
        rrset.get("TTL", 0),
        canonical_values(rtype, rrset_values(rrset)),
    )


def plain_rrset(name: str, rtype: str, ttl: int, values: Iterable[str]) -> ResourceRecordSetTypeDef:
    """A plain ResourceRecordSet as ChangeResourceRecordSets takes it."""
    return {
        "Name": name,
        "Type": cast("RRTypeType", rtype),
        "TTL": ttl,
        "ResourceRecords": [{"Value": v} for v in values],
    }


def to_rrset(rs: RecordSet, name: str | None = None) -> ResourceRecordSetTypeDef:
    """The ResourceRecordSet for `rs`; `name` keeps Route 53's own spelling of an existing one."""
    return plain_rrset(name or rs.name, rs.rtype, rs.ttl, rs.values)


def rrset_values(rrset: Listed | ResourceRecordSetTypeDef) -> tuple[str, ...]:
    return tuple(r["Value"] for r in rrset.get("ResourceRecords", ()))


class ZoneSnapshot:
    """A hosted zone's record sets as listed, read through the ownership scheme.

    :param rrsets: every ResourceRecordSet of the zone (ListResourceRecordSets, all pages)
    :param owner: our owner id
    :param supports: record types that may be managed (markers for other types are ignored)
    """

    def __init__(self, rrsets: Iterable[Listed], owner: str, supports: Collection[str]) -> None:
        self.owner = owner
        self.simple: dict[Key, Listed] = {}  # plain record sets, by normalised key
        self.routed: set[Key] = set()  # keys with routing-policy, alias or traffic-policy sets
        self.types_at: dict[str, set[str]] = defaultdict(set)
        for rrset in rrsets:
            key = (normalise_name(rrset["Name"]), rrset["Type"].upper())
            self.types_at[key[0]].add(key[1])
            if is_simple(rrset):
                self.simple[key] = rrset
            else:
                self.routed.add(key)
        self.markers: dict[Key, Listed] = {}  # managed key → its marker's TXT record set
        for (name, rtype), rrset in self.simple.items():
            managed = managed_key(name) if rtype == "TXT" else None
            if managed is not None and managed[1] in supports:
                self.markers[managed] = rrset

    def marker(self, key: Key) -> Listed | None:
        return self.markers.get(key)

    def marked_ours(self, key: Key) -> bool:
        """The key's marker names us (whatever the record set itself looks like)."""
        marker = self.markers.get(key)
        return marker is not None and self.owner in marker_owners(rrset_values(marker))

    def conflict(self, key: Key) -> str | None:
        """Why dnsfailover must not write `key`, or None when it may."""
        name, rtype = key
        if key in self.routed:
            return f"{name} {rtype} has routing-policy or alias record sets"
        others = self.types_at.get(name, set()) - {rtype}
        if rtype == "CNAME":
            theirs = sorted(t for t in others if not self.marked_ours((name, t)))
            if theirs:
                return f"{name} has {', '.join(theirs)} records, so it cannot take a CNAME"
        elif "CNAME" in others and not self.marked_ours((name, "CNAME")):
            return f"{name} is a CNAME"
        return None

    def populated(self, keys: Collection[Key], log: logging.Logger) -> Populated:
        """What exists for `keys` and for every key marked as ours; see `Populated`."""

        def record_set(key: Key) -> RecordSet | None:
            rrset = self.simple.get(key)
            return None if rrset is None else to_record_set(rrset)

        ours = {k for k in self.markers if self.marked_ours(k)}
        return classify(keys, ours, self.conflict, record_set, log)
