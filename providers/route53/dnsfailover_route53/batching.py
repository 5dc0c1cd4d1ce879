"""A plan as Route 53 changes, split into requests that respect Route 53's limits.

Each name's changes (all its types, and their ownership markers) form one group, and a group
is never split: a ChangeResourceRecordSets request is atomic, so no name is ever half-applied.
Route 53 counts, per request, ResourceRecord elements (at most 1,000) and characters of values
(at most 32,000), both counted twice for an UPSERT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.ownership import MARKER_TTL, marker_name, marker_owners, marker_value
from dnsfailover.provider.plan import Change, Key, Plan
from dnsfailover_route53.records import (
    ZoneSnapshot,
    plain_rrset,
    rrset_values,
    to_record_set,
    to_rrset,
)

if TYPE_CHECKING:
    from mypy_boto3_route53.type_defs import ChangeTypeDef as R53Change
    from mypy_boto3_route53.type_defs import ResourceRecordSetOutputTypeDef as Listed
    from mypy_boto3_route53.type_defs import ResourceRecordSetTypeDef


@dataclass(frozen=True, slots=True)
class Group:
    """The Route 53 changes of one name, deletes first, with what they count against limits."""

    name: str
    changes: tuple[R53Change, ...]
    records: int
    chars: int


def weight(change: R53Change) -> tuple[int, int]:
    """(ResourceRecord elements, characters of values) as Route 53 counts them."""
    factor = 2 if change["Action"] == "UPSERT" else 1
    values = rrset_values(change["ResourceRecordSet"])
    return factor * len(values), factor * sum(len(v) for v in values)


def _as_listed(rrset: Listed) -> ResourceRecordSetTypeDef:
    """An existing plain record set exactly as listed, as DELETE needs it."""
    return plain_rrset(rrset["Name"], rrset["Type"], rrset.get("TTL", 0), rrset_values(rrset))


class Translator:
    """Turns a plan's changes into Route 53 changes, using what populate listed.

    Without a snapshot (apply without a populate first) it assumes that every key the plan
    found existing and not foreign carries exactly our marker.
    """

    def __init__(self, snapshot: ZoneSnapshot | None, owner: str) -> None:
        self.snapshot = snapshot
        self.owner = owner
        self.token = marker_value(owner)

    def groups(self, plan: Plan) -> list[Group]:
        deletes: dict[str, list[R53Change]] = {}
        upserts: dict[str, list[R53Change]] = {}
        for change in plan.changes:
            name = change.key[0]
            d, u = self._changes(change, foreign=change.key in plan.foreign)
            if change.key in plan.replace:
                d = self._replaced(change.key) + d
            deletes.setdefault(name, []).extend(d)
            upserts.setdefault(name, []).extend(u)
        out: list[Group] = []
        for name, first in deletes.items():
            changes = tuple(first + upserts[name])
            records = sum(weight(c)[0] for c in changes)
            chars = sum(weight(c)[1] for c in changes)
            out.append(Group(name, changes, records, chars))
        return out

    def _replaced(self, key: Key) -> list[R53Change]:
        """DELETEs, exactly as listed, of what is in the way of `key` (a plan cleared to
        replace it: adopt or force)."""
        if self.snapshot is None:
            return []
        return [
            {"Action": "DELETE", "ResourceRecordSet": cast("ResourceRecordSetTypeDef", rrset)}
            for rrset in self.snapshot.in_the_way(key)
        ]

    def _existing_marker(self, change: Change, foreign: bool) -> Listed | None:
        if self.snapshot is not None:
            return self.snapshot.marker(change.key)
        if change.old is None or foreign:
            return None
        return {
            "Name": marker_name(change.key),
            "Type": "TXT",
            "TTL": MARKER_TTL,
            "ResourceRecords": [{"Value": self.token}],
        }

    def _changes(self, change: Change, *, foreign: bool) -> tuple[list[R53Change], list[R53Change]]:
        key: Key = change.key
        existing = self.snapshot.simple.get(key) if self.snapshot is not None else None
        marker = self._existing_marker(change, foreign)
        values = rrset_values(marker) if marker is not None else ()
        ours = self.owner in marker_owners(values)
        deletes: list[R53Change] = []
        upserts: list[R53Change] = []
        if change.new is not None:
            name = existing["Name"] if existing is not None else None
            upserts.append({"Action": "UPSERT", "ResourceRecordSet": to_rrset(change.new, name)})
            if not ours:  # new, or adopted: (re)write the marker as ours alone
                mname = marker["Name"] if marker is not None else marker_name(key)
                rrset = plain_rrset(mname, "TXT", MARKER_TTL, [self.token])
                upserts.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
            return deletes, upserts
        assert change.old is not None
        # DELETE must match exactly: send the record set as listed when it is the one planned
        if existing is not None and to_record_set(existing) == change.old:
            deletes.append({"Action": "DELETE", "ResourceRecordSet": _as_listed(existing)})
        else:
            deletes.append({"Action": "DELETE", "ResourceRecordSet": to_rrset(change.old)})
        if marker is not None and ours:
            rest = [v for v in values if self.owner not in marker_owners([v])]
            if rest:  # another owner's claim shares the marker: keep it
                rrset = plain_rrset(marker["Name"], "TXT", marker.get("TTL", MARKER_TTL), rest)
                upserts.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
            else:
                deletes.append({"Action": "DELETE", "ResourceRecordSet": _as_listed(marker)})
        return deletes, upserts


def split(groups: list[Group], max_records: int, max_chars: int) -> list[list[R53Change]]:
    """Pack whole groups, in order, into as few requests as the limits allow."""
    batches: list[list[R53Change]] = []
    current: list[R53Change] = []
    records = chars = 0
    for g in groups:
        if g.records > max_records or g.chars > max_chars:
            raise ProviderError(
                f"{g.name}: its changes count {g.records} records and {g.chars} characters, "
                f"more than one request may hold ({max_records} and {max_chars})"
            )
        if current and (records + g.records > max_records or chars + g.chars > max_chars):
            batches.append(current)
            current, records, chars = [], 0, 0
        current.extend(g.changes)
        records += g.records
        chars += g.chars
    if current:
        batches.append(current)
    return batches
