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

from collections.abc import Iterable

from dnsfailover.provider import Key

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
