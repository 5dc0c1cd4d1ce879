"""A plan as RFC 2136 UPDATE messages with prerequisites, split into batches.

Each name's changes (all its types, and their ownership markers) form one group, and a group is
never split: an UPDATE is atomic in the primary, so no name is ever half-applied.

Per change (RFC 2136 §2.4 prerequisites, §2.5 updates):

- create: prerequisite "RRset does not exist" (`absent`); add the records and our marker.
- update: prerequisite "RRset exists (value dependent)" (`present` with the values read); delete
  the RRset, add the new records, add our marker (a no-op when it is there already).
- delete: the same prerequisite; delete the RRset and our marker record (another owner's claim
  in the same marker is another TXT record, and stays).

So an edit made by someone else between populate and apply fails the prerequisite (NXRRSET or
YXRRSET) instead of being overwritten.  Within a group, every deletion comes before every
addition, so a name can turn from A into CNAME (or back) in one message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdata
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.update

from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.ownership import MARKER_TTL, canonical_values, marker_name, marker_value
from dnsfailover.provider.plan import Change, Key, Plan
from dnsfailover_rfc2136.records import parse_rdata


class BadValue(ProviderError):
    """A value of the plan is not valid presentation format for its type."""


def rdataset(zone: str, rtype: str, ttl: int, values: Iterable[str]) -> dns.rdataset.Rdataset:
    rdatas: list[dns.rdata.Rdata] = []
    for value in values:
        try:
            rdatas.append(parse_rdata(rtype, value, zone))
        except (dns.exception.DNSException, ValueError) as e:
            raise BadValue(f"{rtype} value {value!r}: {e}") from e
    return dns.rdataset.from_rdata_list(ttl, rdatas)


def canonical(zone: str, rtype: str, values: Iterable[str]) -> tuple[str, ...]:
    """`values` as the primary will show them (absolute names, its own spelling)."""
    return canonical_values(rtype, (rd.to_text() for rd in rdataset(zone, rtype, 0, values)))


def records(change: Change) -> int:
    """Resource records the change puts into an UPDATE message."""
    old = len(change.old.values) if change.old else 0
    new = len(change.new.values) if change.new else 0
    if change.kind == "create":
        return 1 + new + 1  # absent, the records, the marker
    if change.kind == "update":
        return old + 1 + new + 1  # present, delete, the records, the marker
    return old + 2  # present, delete, our marker record


@dataclass(frozen=True, slots=True)
class Group:
    """The changes of one name."""

    name: str
    changes: tuple[Change, ...]

    @property
    def records(self) -> int:
        return sum(records(c) for c in self.changes)


def groups(plan: Plan) -> list[Group]:
    by_name: dict[str, list[Change]] = {}
    for change in plan.changes:
        by_name.setdefault(change.key[0], []).append(change)
    return [Group(name, tuple(changes)) for name, changes in by_name.items()]


def split(groups: Sequence[Group], max_records: int) -> list[tuple[Change, ...]]:
    """Pack groups in order into batches of at most `max_records` records; a bigger group
    goes alone (the primary takes it, or rejects it whole)."""
    batches: list[list[Change]] = []
    size = 0
    for group in groups:
        if not batches or size + group.records > max_records:
            batches.append([])
            size = 0
        batches[-1].extend(group.changes)
        size += group.records
    return [tuple(b) for b in batches]


def message(
    zone: str,
    changes: Sequence[Change],
    owner: str,
    key: dns.tsig.Key,
    in_the_way: Mapping[Key, Sequence[str]] | None = None,
) -> dns.update.UpdateMessage:
    """One signed UPDATE for `changes`; raises `BadValue` for a value that does not parse.

    `in_the_way`: types to delete at a change's name first (a replaced conflict)."""
    update = dns.update.UpdateMessage(
        zone, keyring={key.name: key}, keyname=key.name, keyalgorithm=key.algorithm
    )
    mine = parse_rdata("TXT", marker_value(owner), zone)
    for c in changes:
        name = dns.name.from_text(c.key[0])
        rtype = dns.rdatatype.from_text(c.key[1])
        if c.old is None:
            update.absent(name, rtype)
        else:
            update.present(name, rdataset(zone, c.old.rtype, 0, c.old.values))
    for c in changes:  # every deletion first ...
        for other in (in_the_way or {}).get(c.key, ()):
            update.delete(dns.name.from_text(c.key[0]), dns.rdatatype.from_text(other))
        if c.old is not None:
            update.delete(dns.name.from_text(c.key[0]), dns.rdatatype.from_text(c.key[1]))
        if c.kind == "delete":
            update.delete(dns.name.from_text(marker_name(c.key)), mine)
    for c in changes:  # ... then every addition
        if c.new is not None:
            name = dns.name.from_text(c.key[0])
            update.add(name, rdataset(zone, c.new.rtype, c.new.ttl, c.new.values))
            update.add(dns.name.from_text(marker_name(c.key)), MARKER_TTL, mine)
    return update


def describe_keys(keys: Iterable[Key]) -> str:
    return ", ".join(f"{name} {rtype}" for name, rtype in keys)
