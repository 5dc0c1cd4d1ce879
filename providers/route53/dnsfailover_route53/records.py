"""Route 53 record sets as dnsfailover values, and the ownership markers that say which are ours.

Ownership scheme: every record set dnsfailover creates or updates at `NAME` with type `TYPE`
is paired with a TXT record set at `_dnsfailover-<type>.NAME` (type in lower case) holding
`"heritage=dnsfailover,owner=<owner_id>"`.  A key is *owned* when its marker holds that string
for our owner id.  The marker lives one label below the name, never at the name itself, so it
never clashes with a CNAME there, and each type has its own marker, so updating one type
never rewrites another type's marker.

A steered name is published as geolocation record sets, one per place, each with the
SetIdentifier ``dnsfailover:<place>`` (``dnsfailover:country:DE``, ``dnsfailover:*``) and
the GeoLocation of its place; the key's one marker covers them all.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, cast

from dnsfailover.model import DEFAULT_PLACE, RecordSet
from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.ownership import (
    canonical_values,
    classify,
    cname_conflict,
    markers_of,
    owned_by,
)
from dnsfailover.provider.plan import Key, Populated

if TYPE_CHECKING:
    from mypy_boto3_route53.literals import RRTypeType
    from mypy_boto3_route53.type_defs import (
        GeoLocationTypeDef,
        ResourceRecordSetTypeDef,
    )
    from mypy_boto3_route53.type_defs import (
        ResourceRecordSetOutputTypeDef as Listed,
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


#: the kinds of place a geolocation record set can stand for
GEO_PLACES = frozenset({"country", "continent"})
SET_ID_PREFIX = "dnsfailover:"


def set_identifier(place: str) -> str:
    """The SetIdentifier of our record set for `place`: ``dnsfailover:country:DE``."""
    return SET_ID_PREFIX + place


def geo_location(place: str) -> GeoLocationTypeDef:
    """Route 53's GeoLocation for a place: a country, a continent, or ``*`` (the default:
    every client no other set of the name matches)."""
    kind, _, code = place.partition(":")
    if place == DEFAULT_PLACE:
        return {"CountryCode": "*"}
    if kind == "country" and code:
        return {"CountryCode": code.upper()}
    if kind == "continent" and code:
        return {"ContinentCode": code.upper()}
    raise ProviderError(
        f"{place}: Route 53 geolocation record sets stand for a country, a continent or *"
    )


def place_of(rrset: Listed) -> str | None:
    """The place of one of our geolocation record sets as listed (its SetIdentifier ours and
    its GeoLocation the same place, no other routing), or None for any other record set."""
    ident = rrset.get("SetIdentifier", "")
    geo = rrset.get("GeoLocation")
    if not ident.startswith(SET_ID_PREFIX) or geo is None:
        return None
    if any(k in rrset for k in _ROUTING_KEYS if k not in ("SetIdentifier", "GeoLocation")):
        return None
    place = ident.removeprefix(SET_ID_PREFIX)
    try:
        return place if geo_location(place) == geo else None
    except ProviderError:
        return None


def normalise_name(name: str) -> str:
    """Route 53's `\\052.Example.test.` → `*.example.test.` (absolute, lower case)."""

    def unescape(m: re.Match[str]) -> str:
        code = m.group(1)
        return chr(int(code, 8)) if len(code) == 3 else code

    name = _ESCAPE.sub(unescape, name.strip()).lower()
    return name if name.endswith(".") else name + "."


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


def to_rrset(rs: RecordSet, name: str | None = None, place: str = "") -> ResourceRecordSetTypeDef:
    """The ResourceRecordSet for `rs` (a geolocation one for a `place`); `name` keeps
    Route 53's own spelling of an existing one."""
    rrset = plain_rrset(name or rs.name, rs.rtype, rs.ttl, rs.values)
    if place:
        rrset["SetIdentifier"] = set_identifier(place)
        rrset["GeoLocation"] = geo_location(place)
    return rrset


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
        #: keys with routing-policy, alias or traffic-policy sets, and those sets as listed
        #: (our geolocation sets apart)
        self.routed: dict[Key, list[Listed]] = defaultdict(list)
        #: geolocation sets with our SetIdentifiers, by key and place (ours when the key is)
        self.located: dict[Key, dict[str, Listed]] = defaultdict(dict)
        self.types_at: dict[str, set[str]] = defaultdict(set)
        for rrset in rrsets:
            key = (normalise_name(rrset["Name"]), rrset["Type"].upper())
            self.types_at[key[0]].add(key[1])
            if is_simple(rrset):
                self.simple[key] = rrset
            elif (place := place_of(rrset)) is not None:
                self.located[key][place] = rrset
            else:
                self.routed[key].append(rrset)
        # managed key → its marker's TXT record set
        self.markers: dict[Key, Listed] = markers_of(self.simple.items(), supports)
        self.ours = owned_by({k: rrset_values(m) for k, m in self.markers.items()}, owner)

    def marker(self, key: Key) -> Listed | None:
        return self.markers.get(key)

    def marked_ours(self, key: Key) -> bool:
        """The key's marker names us (whatever the record set itself looks like)."""
        return key in self.ours

    def conflict(self, key: Key) -> str | None:
        """Why dnsfailover must not write `key`, or None when it may."""
        if key in self.routed:
            return f"{key[0]} {key[1]} has routing-policy or alias record sets"
        if key in self.located and key not in self.ours:
            return f"{key[0]} {key[1]} has geolocation record sets not marked as ours"
        return cname_conflict(key, self.types_at.get(key[0], ()), self.ours)

    def in_the_way(self, key: Key) -> list[Listed]:
        """The record sets, as listed, that writing `key` must replace: routing-policy or
        alias sets at the key, and what the CNAME rule keeps from sharing its name."""
        found = list(self.routed.get(key, ()))
        if key not in self.ours:
            found += self.located.get(key, {}).values()
        name, rtype = key
        for other in sorted(self.types_at.get(name, ())):
            if other == rtype or (name, other) in self.ours:
                continue
            if rtype == "CNAME" or other == "CNAME":
                found += self.routed.get((name, other), [])
                found += self.located.get((name, other), {}).values()
                if (name, other) in self.simple:
                    found.append(self.simple[(name, other)])
        return found

    def populated(self, keys: Collection[Key], log: logging.Logger) -> Populated:
        """What exists for `keys` and for every key marked as ours; see `Populated`."""

        def record_set(key: Key) -> RecordSet | None:
            rrset = self.simple.get(key)
            return None if rrset is None else to_record_set(rrset)

        def placed(key: Key) -> dict[str, RecordSet]:
            return {p: to_record_set(r) for p, r in self.located.get(key, {}).items()}

        return classify(keys, self.ours, self.conflict, record_set, log, placed)
