"""Plans as values: what a provider found (`Populated`), the diff to the desired record sets
(`diff` → `Plan`) and the safety check `apply` honours unless forced (`Plan.unsafe_reasons`).
Pure: no I/O, no provider.

A provider with location support (Route 53 geolocation) publishes a steered name as one
record set per *place* (``country:DE``, ``continent:EU``, ``*``) instead of one plain set:
those are keyed by `GeoKey` (name, type, place), and a change of one carries its `place`.
Ownership, conflicts and per-key refusal stay per (name, type): the plain set and the placed
sets of a key are written together (Route 53 refuses both at once, so a conversion between
them deletes one and creates the other in the same atomic request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from dnsfailover.errors import DnsFailoverError
from dnsfailover.model import DEFAULT_PLACE, RecordSet, Soa, SteeredSet

Key = tuple[str, str]  # (absolute name, record type)
GeoKey = tuple[str, str, str]  # (absolute name, record type, place): one location's record set

#: items a summary names before it only counts the rest
SUMMARY_ITEMS = 5


def summarize(items: Sequence[str], limit: int = SUMMARY_ITEMS) -> str:
    """`items` for one log line or message: all of a few, else the first `limit` and a count
    of the rest (a refusal of 500 names stays one readable line)."""
    if len(items) <= limit:
        return "; ".join(items)
    return "; ".join(items[:limit]) + f"; and {len(items) - limit} more"


def describe_key(key: Key) -> str:
    return f"{key[0]} {key[1]}"


def place_kind(place: str) -> str:
    """``country:DE`` → ``country``; the default place ``*`` is its own kind."""
    return place.partition(":")[0]


class PlaceError(DnsFailoverError):
    """Two location groups of one steered name claim the same place."""


def placed_sets(steered: Iterable[SteeredSet]) -> dict[GeoKey, RecordSet]:
    """The record sets of steered names, one per place: each group's answer (without
    weights, which only the embedded server publishes) at each of its places; the default
    group is always at `DEFAULT_PLACE` too, so every client gets an answer.

    :raises PlaceError: a place claimed by two groups of one name (the rule is ambiguous).
    """
    out: dict[GeoKey, RecordSet] = {}
    for s in steered:
        claimed: dict[str, str] = {}
        for group, answer in s.answers.items():
            places = set(s.places.get(group, ()))
            if group == s.default:
                places.add(DEFAULT_PLACE)
            for place in sorted(places):
                other = claimed.setdefault(place, group)
                if other != group:
                    raise PlaceError(
                        f"{s.name} {s.rtype}: {place} is in two location groups "
                        f"({other} and {group})"
                    )
                rs = replace(answer, weights=()) if answer.weights else answer
                out[(s.name, s.rtype, place)] = rs
    return out


class UnsafePlan(DnsFailoverError):
    """The plan was refused as unsafe; rerun with force to apply it anyway."""


@dataclass(frozen=True, slots=True)
class Change:
    """One record set to create, update or delete; `old`/`new` are None when absent.

    `place`: empty for a plain record set, else the place of a location's record set (see
    the module's docstring); `key` is (name, type) either way.
    """

    kind: Literal["create", "update", "delete"]
    old: RecordSet | None
    new: RecordSet | None
    place: str = ""

    @property
    def key(self) -> Key:
        rs = self.new or self.old
        assert rs is not None
        return (rs.name, rs.rtype)

    @property
    def geo_key(self) -> GeoKey:
        name, rtype = self.key
        return (name, rtype, self.place)

    def describe(self) -> str:
        old = " ".join(self.old.values) if self.old else ""
        new = " ".join(self.new.values) if self.new else ""
        name, rtype = self.key
        if self.place:
            rtype = f"{rtype} [{self.place}]"
        if self.kind == "create":
            return f"+ {name} {rtype} {new}"
        if self.kind == "delete":
            return f"- {name} {rtype} {old}"
        ttl = ""
        if self.old and self.new and self.old.ttl != self.new.ttl:
            ttl = f" (ttl {self.old.ttl} -> {self.new.ttl})"
        return f"~ {name} {rtype} {old} -> {new}{ttl}"


@dataclass(frozen=True, slots=True)
class Populated:
    """What a provider found for the keys it was asked about.

    `records`: the existing record sets among the desired keys and the keys it owns.
    `foreign`: desired keys that exist but belong to someone else (not marked as ours).
    `owned`: keys marked as ours, whether or not still desired (stale ones get deleted).
    `conflicts`: desired keys that cannot be written beside what is there (routing-policy or
    alias sets, a CNAME in the way), with why; they are in `foreign` too.  Writing one
    replaces what is in the way, so only an adopting or forced plan does.
    `placed`: our location record sets (at owned keys), by (name, type, place).
    """

    records: tuple[RecordSet, ...]
    foreign: frozenset[Key] = frozenset()
    owned: frozenset[Key] = frozenset()
    conflicts: Mapping[Key, str] = field(default_factory=dict)
    placed: Mapping[GeoKey, RecordSet] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Safety:
    """When `apply` refuses a plan.

    :param max_change_pct: refuse when more than this share of the existing managed record
        sets would change (100: never refuse for size).
    :param empty_ok: names whose answers may legitimately vanish (all_down: serve_none).
    :param adopt: take over foreign record sets instead of refusing.
    """

    max_change_pct: int = 100
    empty_ok: frozenset[str] = frozenset()
    adopt: bool = False
    min_existing: int = 10  # below this many, a share means little


@dataclass(frozen=True, slots=True)
class Plan:
    zone: str
    changes: tuple[Change, ...]
    existing: int
    foreign: frozenset[Key] = frozenset()
    soa: Soa | None = None  # the zone's SOA, with its new serial, for providers that serve it
    conflicts: Mapping[Key, str] = field(default_factory=dict)  # see `Populated.conflicts`
    #: conflicting keys this plan was cleared (adopt, force) to write, replacing what is in
    #: the way; a provider refuses to write any other key of `conflicts`
    replace: frozenset[Key] = frozenset()
    #: keys that still answer after the plan through another of their sets (a steered
    #: name's other places, or the plain set that replaces its places): removing one set
    #: of such a key does not remove every answer
    answered: frozenset[Key] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "delete": 0}
        for c in self.changes:
            out[c.kind] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return f"{self.zone}: {c['create']} create, {c['update']} update, {c['delete']} delete"

    def key_reasons(self, change: Change, safety: Safety) -> list[str]:
        """Why `change` alone must not be applied (with what would resolve it)."""
        name, rtype = change.key
        reasons: list[str] = []
        old, new = change.old, change.new
        emptied = old is not None and old.values and not (new and new.values)
        if emptied and name not in safety.empty_ok and change.key not in self.answered:
            reasons.append(
                f"removes every {rtype} answer of {name} "
                "(--force, or all_down: serve_none on the record, allows it)"
            )
        if safety.adopt:
            return reasons
        why = self.conflicts.get(change.key)
        if why is not None:
            reasons.append(
                f"{why} (remove it, or set adopt: true on the zone or use --force to replace it)"
            )
        elif change.key in self.foreign:
            reasons.append(
                f"{name} {rtype} exists and is not owned by dnsfailover "
                "(set adopt: true on the zone, or use --force, to take it over)"
            )
        return reasons

    def size_reason(self, safety: Safety) -> str | None:
        """Why the plan as a whole is too big to apply, or None.

        Counted per (name, type): a steered name with a set per country is one record set
        here, however many of its places change (`existing` counts the same way)."""
        if self.existing >= safety.min_existing and safety.max_change_pct < 100:
            share = 100 * len({c.key for c in self.changes}) / self.existing
            if share > safety.max_change_pct:
                return (
                    f"changes {share:.0f}% of {self.existing} record sets "
                    f"(max_change_pct {safety.max_change_pct})"
                )
        return None

    def unsafe_reasons(self, safety: Safety) -> list[str]:
        """Why the plan must not be applied as it is, each reason once (a steered name's
        places share theirs)."""
        reasons = list(dict.fromkeys(r for c in self.changes for r in self.key_reasons(c, safety)))
        size = self.size_reason(safety)
        return reasons if size is None else [*reasons, size]

    def raise_if_unsafe(self, safety: Safety, *, force: bool = False) -> None:
        reasons = self.unsafe_reasons(safety)
        if reasons and not force:
            raise UnsafePlan(
                f"{self.zone}: plan refused: "
                + summarize(reasons)
                + " (use --force, or force: true in the zone's config)"
            )

    def partition(self, safety: Safety, *, force: bool = False) -> tuple[Plan, dict[Key, str]]:
        """Refuse per key: the plan of every change that may be applied, and the keys held
        back with why (and what would resolve it).  One bad key never holds up the rest.

        :raises UnsafePlan: when even the cleared plan changes more than `max_change_pct`
            allows (unless `force`): that brake is about the plan as a whole.
        """
        held: dict[Key, str] = {}
        if not force:
            for c in self.changes:
                reasons = self.key_reasons(c, safety)
                if reasons:
                    held[c.key] = "; ".join(reasons)
        changes = tuple(c for c in self.changes if c.key not in held)
        cleared = replace(
            self,
            changes=changes,
            replace=frozenset(c.key for c in changes if c.key in self.conflicts),
        )
        size = None if force else cleared.size_reason(safety)
        if size is not None:
            raise UnsafePlan(
                f"{self.zone}: plan refused: {size} (use --force, or force: true in the "
                "zone's config)"
            )
        return cleared, held


def diff(
    zone: str,
    populated: Populated,
    desired: Iterable[RecordSet],
    *,
    soa: Soa | None = None,
    keep_empty: bool = False,
    placed: Mapping[GeoKey, RecordSet] | None = None,
) -> Plan:
    """The changes that turn what exists into what is desired.

    A desired record set with no values means "no records here": it deletes what exists,
    unless `keep_empty` (a provider that can serve an empty set, so the name answers NODATA).
    Owned keys that are no longer desired are deleted too.

    `placed`: the location record sets desired (`placed_sets`); a key published by place
    has no plain set (a desired plain one is dropped, an existing one deleted), and a
    location set with no values is deleted (its clients get the default place's answer).
    """
    current = {(r.name, r.rtype): r for r in populated.records}
    wanted = {(r.name, r.rtype): r for r in desired}
    geo_wanted = dict(placed or {})
    by_key: dict[Key, set[str]] = {}
    for name, rtype, place in geo_wanted.keys() | populated.placed.keys():
        by_key.setdefault((name, rtype), set()).add(place)
    steered = {(name, rtype) for name, rtype, _ in geo_wanted}
    for key in steered:
        wanted.pop(key, None)
    changes: list[Change] = []
    for key in sorted(wanted.keys() | populated.owned | steered):
        old, new = current.get(key), wanted.get(key)
        if new is not None and not new.values and not keep_empty:
            new = None
        changes += _change(old, new)
        for place in sorted(by_key.get(key, ())):
            geo_key = (*key, place)
            old, new = populated.placed.get(geo_key), geo_wanted.get(geo_key)
            changes += _change(old, new if new is not None and new.values else None, place)
    answered = frozenset(
        {k for k, r in wanted.items() if r.values}
        | {(name, rtype) for (name, rtype, _), r in geo_wanted.items() if r.values}
    )
    conflicts = {k: v for k, v in populated.conflicts.items() if k in wanted or k in steered}
    existing = len(current.keys() | {(name, rtype) for name, rtype, _ in populated.placed})
    return Plan(
        zone,
        tuple(changes),
        existing,
        populated.foreign,
        soa,
        conflicts,
        answered=answered,
    )


def _change(old: RecordSet | None, new: RecordSet | None, place: str = "") -> list[Change]:
    if old is None and new is not None:
        return [Change("create", None, new, place)]
    if old is not None and new is None:
        return [Change("delete", old, None, place)]
    if old is not None and new is not None and not _same(old, new):
        return [Change("update", old, new, place)]
    return []


def _same(a: RecordSet, b: RecordSet) -> bool:
    """Equal as DNS sees them: the order of values in a set carries no meaning, the weight
    of each value does (empty weights zip to {})."""
    return (
        a.ttl == b.ttl
        and set(a.values) == set(b.values)
        and dict(zip(a.values, a.weights, strict=False))
        == dict(zip(b.values, b.weights, strict=False))
    )
