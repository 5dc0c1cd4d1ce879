"""Zone versions as differences: what a publish changed, kept for IXFR and passed on to
worker processes and the fast path, so their cost is that of the change."""

from __future__ import annotations

from dataclasses import dataclass

from dnsfailover.model import Key, RecordSet, Soa, ZoneContent


@dataclass(frozen=True, slots=True)
class Delta:
    """One version of a zone after another: the record sets that went and came.

    `removed` holds the old versions of the sets that changed or went, `added` the new
    versions of those that changed or came (RFC 1995's difference sequence, by set).
    """

    origin: str
    old: Soa
    new: Soa
    removed: tuple[RecordSet, ...]
    added: tuple[RecordSet, ...]
    full: bool  # the static part changed too (a reload): not a managed-only change
    steered: frozenset[str] = frozenset()
    """Names whose steered answers (any location group's) changed, came or went; zone
    transfers carry only the default answers, so these are for the server's caches."""

    @property
    def names(self) -> frozenset[str]:
        """The names whose answers changed (steered ones included)."""
        return frozenset(rs.name for rs in (*self.removed, *self.added)) | self.steered


@dataclass(frozen=True, slots=True)
class ZoneChange:
    """What a publish did to one zone: `old` is None for a zone served for the first time."""

    old: ZoneContent | None
    new: ZoneContent
    delta: Delta | None  # None with `old`


def diff(old: ZoneContent, new: ZoneContent) -> Delta:
    """The sets that differ between two versions; by the managed sets alone when both share
    their static part (the usual publish: O(managed sets), not O(zone))."""
    if new.static is old.static:
        before = old.managed
        keys: list[Key] = [
            k
            for k, rs in new.managed.items()
            # values first: they are what a decision changes, and cheap to compare
            if (o := before.get(k)) is not rs and (o is None or o.values != rs.values or o != rs)
        ]
        keys += [k for k in old.managed if k not in new.managed]
        removed = tuple(old.managed[k] for k in keys if k in old.managed)
        added = tuple(new.managed[k] for k in keys if k in new.managed)
        return Delta(new.origin, old.soa, new.soa, removed, added, False, _steered(old, new))
    before = {(rs.name, rs.rtype): rs for rs in old.records}
    after = {(rs.name, rs.rtype): rs for rs in new.records}
    gone = tuple(rs for k, rs in before.items() if after.get(k) != rs)
    came = tuple(rs for k, rs in after.items() if before.get(k) != rs)
    return Delta(new.origin, old.soa, new.soa, gone, came, True, _steered(old, new))


def _steered(old: ZoneContent, new: ZoneContent) -> frozenset[str]:
    """The names whose steered sets differ between two versions."""
    if new.steered is old.steered:
        return frozenset()
    before = old.steered
    names = {
        st.name for key, st in new.steered.items() if (o := before.get(key)) is not st and o != st
    }
    names.update(name for name, rtype in before if (name, rtype) not in new.steered)
    return frozenset(names)
