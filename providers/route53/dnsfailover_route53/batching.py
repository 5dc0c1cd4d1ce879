"""A plan as Route 53 changes, split into requests that respect Route 53's limits.

Each name's changes (all its types, their geolocation sets, and their ownership markers) form
one group, and a group is never split: a ChangeResourceRecordSets request is atomic, so no
name is ever half-applied (a name turning from a plain set into geolocation sets, or back,
deletes the one and creates the other in the same request: Route 53 refuses both at once).
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
    """An existing plain or geolocation record set exactly as listed, as DELETE needs it."""
    out = plain_rrset(rrset["Name"], rrset["Type"], rrset.get("TTL", 0), rrset_values(rrset))
    if "SetIdentifier" in rrset:
        out["SetIdentifier"] = rrset["SetIdentifier"]
    if "GeoLocation" in rrset:
        out["GeoLocation"] = rrset["GeoLocation"]
    return out


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
        by_key: dict[Key, list[Change]] = {}
        for change in plan.changes:
            by_key.setdefault(change.key, []).append(change)
        for key, changes in by_key.items():
            d, u = self._changes(key, changes, foreign=key in plan.foreign)
            if key in plan.replace:
                d = self._replaced(key) + d
            deletes.setdefault(key[0], []).extend(d)
            upserts.setdefault(key[0], []).extend(u)
        out: list[Group] = []
        for name, first in deletes.items():
            r53 = tuple(first + upserts[name])
            records = sum(weight(c)[0] for c in r53)
            chars = sum(weight(c)[1] for c in r53)
            out.append(Group(name, r53, records, chars))
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

    def _existing_marker(self, key: Key, changes: list[Change], foreign: bool) -> Listed | None:
        if self.snapshot is not None:
            return self.snapshot.marker(key)
        if all(c.old is None for c in changes) or foreign:
            return None
        return {
            "Name": marker_name(key),
            "Type": "TXT",
            "TTL": MARKER_TTL,
            "ResourceRecords": [{"Value": self.token}],
        }

    def _listed(self, change: Change) -> Listed | None:
        """The record set a change replaces, as populate listed it."""
        if self.snapshot is None:
            return None
        if change.place:
            return self.snapshot.located.get(change.key, {}).get(change.place)
        return self.snapshot.simple.get(change.key)

    def _left(self, key: Key, changes: list[Change]) -> bool:
        """Whether `key` still has a record set after these changes (of all its changes).
        Without a snapshot, only what the changes write is known."""
        if any(c.new is not None for c in changes):
            return True
        if self.snapshot is None:
            return False
        gone = {c.place for c in changes}
        left = set(self.snapshot.located.get(key, {})) - gone
        return bool(left) or ("" not in gone and key in self.snapshot.simple)

    def _changes(
        self, key: Key, changes: list[Change], *, foreign: bool
    ) -> tuple[list[R53Change], list[R53Change]]:
        """The Route 53 changes of one key (its plain and geolocation sets) and its marker."""
        marker = self._existing_marker(key, changes, foreign)
        values = rrset_values(marker) if marker is not None else ()
        ours = self.owner in marker_owners(values)
        deletes: list[R53Change] = []
        upserts: list[R53Change] = []
        for change in changes:
            existing = self._listed(change)
            if change.new is not None:
                name = existing["Name"] if existing is not None else None
                rrset = to_rrset(change.new, name, change.place)
                upserts.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
                continue
            assert change.old is not None
            # DELETE must match exactly: send the set as listed when it is the one planned
            if existing is not None and to_record_set(existing) == change.old:
                rrset = _as_listed(existing)
            else:
                rrset = to_rrset(change.old, None, change.place)
            deletes.append({"Action": "DELETE", "ResourceRecordSet": rrset})
        if self._left(key, changes):
            if not ours:  # new, or adopted: (re)write the marker as ours alone
                mname = marker["Name"] if marker is not None else marker_name(key)
                rrset = plain_rrset(mname, "TXT", MARKER_TTL, [self.token])
                upserts.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
        elif marker is not None and ours:
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
