"""The ownership markers that external providers keep beside the record sets they manage.

Every record set dnsfailover creates or updates at `NAME` with type `TYPE` is paired with a
TXT record set at `_dnsfailover-<type>.NAME` (type in lower case) holding
`"heritage=dnsfailover,owner=<id>"`.  A key is *owned* when its marker holds that string for
our owner id; each owner's claim is a TXT string of its own, so adding or removing ours
never touches another owner's.  The marker sits one label below the name, so it never clashes
with a CNAME there.  One scheme for every provider (Route 53, RFC 2136, ...), so a zone can
move between them without losing what it owns.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.plan import GeoKey, Key, Populated, summarize

V = TypeVar("V")

MARKER_PREFIX = "_dnsfailover-"
MARKER_TTL = 300
HERITAGE = "dnsfailover"


def marker_name(key: Key) -> str:
    name, rtype = key
    return f"{MARKER_PREFIX}{rtype.lower()}.{name}"


def marker_value(owner: str) -> str:
    """The TXT value (a quoted string) that marks a record set as `owner`'s."""
    return f'"heritage={HERITAGE},owner={owner}"'


def managed_key(name: str) -> Key | None:
    """The key that a marker at `name` (normalised) is about, or None if it is no marker."""
    first, sep, rest = name.partition(".")
    if not sep or not rest or not first.startswith(MARKER_PREFIX):
        return None
    rtype = first.removeprefix(MARKER_PREFIX).upper()
    return (rest, rtype) if rtype.isalnum() else None


def marker_owners(values: Iterable[str]) -> set[str]:
    """The owner ids in a marker's TXT values (other TXT strings are ignored)."""
    owners: set[str] = set()
    for value in values:
        text = value.strip().removeprefix('"').removesuffix('"')
        fields = dict(part.partition("=")[::2] for part in text.split(","))
        if fields.get("heritage") == HERITAGE and fields.get("owner"):
            owners.add(fields["owner"])
    return owners


def classify(
    keys: Collection[Key],
    ours: Collection[Key],
    conflict: Callable[[Key], str | None],
    record_set: Callable[[Key], RecordSet | None],
    log: logging.Logger,
    placed: Callable[[Key], Mapping[str, RecordSet]] | None = None,
) -> Populated:
    """What a provider reports for `keys` (the desired ones) given what it read.

    :param ours: keys whose marker names our owner id.
    :param conflict: why a key must not be written (routing policies, a foreign CNAME at
        the name, ...), or None.
    :param record_set: the existing record set at a key, or None.
    :param placed: our location record sets at an owned key, by place (the marker of the
        key covers them all).

    Keys with a conflict are foreign and listed in `conflicts` (written only by a plan
    cleared to replace what is in the way); existing keys without our marker are foreign;
    keys with our marker are owned, whether still desired or not.
    """
    asked = set(keys)
    records: list[RecordSet] = []
    foreign: set[Key] = set()
    owned: set[Key] = set()
    conflicts: dict[Key, str] = {}
    located: dict[GeoKey, RecordSet] = {}
    for key in sorted(asked | set(ours)):
        reason = conflict(key)
        if reason is not None:
            if key in asked:
                foreign.add(key)
                conflicts[key] = reason
            continue
        rs = record_set(key)
        if rs is not None:
            records.append(rs)
        if key in ours:
            owned.add(key)
            if placed is not None:
                located.update(((*key, place), r) for place, r in placed(key).items())
        elif key in asked and rs is not None:
            foreign.add(key)
    if conflicts:
        log.warning(
            "populate: %d key(s) in conflict with what is there: %s",
            len(conflicts),
            summarize(list(conflicts.values())),
        )
    return Populated(tuple(records), frozenset(foreign), frozenset(owned), conflicts, located)


def check_reserved(zone: str, keys: Collection[Key]) -> None:
    """Refuse desired names under the marker prefix: they would read as ownership claims.

    :raises ProviderError: naming them.
    """
    reserved = sorted(name for name, _ in keys if managed_key(name) is not None)
    if reserved:
        raise ProviderError(
            f"{zone}: {', '.join(reserved)}: names starting with {MARKER_PREFIX} "
            "are reserved for dnsfailover's ownership markers"
        )


def markers_of(found: Iterable[tuple[Key, V]], supports: Collection[str]) -> dict[Key, V]:
    """The ownership markers among the record sets a provider read, by the key each is
    about (markers for types the provider cannot manage are ignored)."""
    markers: dict[Key, V] = {}
    for (name, rtype), value in found:
        managed = managed_key(name) if rtype == "TXT" else None
        if managed is not None and managed[1] in supports:
            markers[managed] = value
    return markers


def owned_by(markers: Mapping[Key, Sequence[str]], owner: str) -> set[Key]:
    """The keys whose marker (its TXT values, by key) names `owner`."""
    return {key for key, values in markers.items() if owner in marker_owners(values)}


def cname_conflict(key: Key, types_at_name: Collection[str], ours: Collection[Key]) -> str | None:
    """Why `key` cannot be written beside what exists at its name, or None.

    A CNAME is alone at its name (RFC 1034 §3.6.2): a CNAME cannot be added where other
    types exist, and nothing can be added where a CNAME is, unless what is in the way is
    ours (then the plan replaces it).
    """
    name, rtype = key
    others = set(types_at_name) - {rtype}
    if rtype == "CNAME":
        theirs = sorted(t for t in others if (name, t) not in ours)
        if theirs:
            return f"{name} has {', '.join(theirs)} records, so it cannot take a CNAME"
    elif "CNAME" in others and (name, "CNAME") not in ours:
        return f"{name} is a CNAME, so it cannot take {rtype} records"
    return None


def canonical_values(rtype: str, values: Iterable[str]) -> tuple[str, ...]:
    """Values in the order the core compares them: addresses by address, the rest as text."""
    unique = set(values)
    if rtype in ("A", "AAAA"):
        try:
            return tuple(str(a) for a in sorted({ipaddress.ip_address(v) for v in unique}))
        except (ValueError, TypeError):
            pass  # not addresses after all: compare them as text
    return tuple(sorted(unique))
