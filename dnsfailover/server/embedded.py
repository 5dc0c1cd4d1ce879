"""Provider `embedded`: the zones served by dnsfailover's own authoritative DNS server.

All embedded zones share one `EmbeddedZones`, whose immutable snapshot the DNS server
serves; a publish makes the next snapshot from the current one, re-parsing only the managed
sets that changed, and swaps it in atomically (readers never see half of it).
"""

from __future__ import annotations

import asyncio
import operator
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import ClassVar

from dnsfailover.config.schema import STATIC_TYPES
from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.provider.contract import ApplyResult, BaseProvider, ProviderError, ProviderOptions
from dnsfailover.provider.plan import Key, Plan, Populated
from dnsfailover.rdata import Labels
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.rrsets import labels_of
from dnsfailover.server.secure import ZoneSigner
from dnsfailover.server.versions import Delta, ZoneChange, diff
from dnsfailover.server.zone import ZoneSnapshot

Listener = Callable[["EmbeddedZones", list[ZoneChange]], None]
HISTORY = 64  # differences kept per zone (for incremental zone transfers)
INLINE_SETS = 500  # an update of more sets than this (or a build) runs on a thread


class EmbeddedZones:
    """What the embedded server serves: one content per zone, one snapshot for all.

    Listeners are called after every publish with what changed in each zone (zone
    transfers, NOTIFY, worker processes); `history` keeps each zone's recent differences,
    oldest first (not whole versions: a publish costs what it changed).
    """

    def __init__(self) -> None:
        self.contents: dict[str, ZoneContent] = {}
        self.snapshot = ZoneSnapshot.build([])
        self.server: DnsServer | None = None
        self.history: dict[str, deque[Delta]] = {}
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()

    def sign_with(self, signers: Mapping[str, ZoneSigner]) -> None:
        """Sign these zones (origin → its signer) from their next publish on; a zone whose
        signer changes is signed anew then."""
        self.snapshot = self.snapshot.signed_by(signers)

    @property
    def signers(self) -> Mapping[str, ZoneSigner]:
        return self.snapshot.signers

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def attach(self, server: DnsServer) -> None:
        self.server = server
        server.publish(self.snapshot)

    def put(self, zones: Iterable[ZoneContent]) -> None:
        """Replace these zones' contents and publish (build first: a bad zone changes nothing)."""
        self._install(*self._prepare(self._changes(list(zones))))

    async def put_async(self, zones: Iterable[ZoneContent]) -> None:
        """`put`, with a zone built from scratch built on a thread (that takes seconds for a
        big zone; the event loop keeps answering TCP and running probes meanwhile).  A zone
        updated from its previous version is updated right here: it costs milliseconds, less
        than handing a thread the GIL on a busy loop (unless it re-signs much: new keys, or
        signatures due)."""
        zones = list(zones)
        async with self._lock:  # builds start from the contents the previous one installed
            changes = self._changes(zones)
            small = sum(len(c.delta.added) if c.delta else INLINE_SETS for c in changes)
            light = not any(self.snapshot.heavy(c.new.origin) for c in changes)
            if (
                small <= INLINE_SETS
                and light
                and all(c.delta and not c.delta.full for c in changes)
            ):
                self._install(*self._prepare(changes))
            else:
                self._install(*await asyncio.to_thread(self._prepare, changes))

    def _changes(self, zones: list[ZoneContent]) -> list[ZoneChange]:
        return [
            ZoneChange(old, z, None if old is None else diff(old, z))
            for z in zones
            for old in [self.contents.get(z.origin)]
        ]

    def _prepare(
        self, changes: list[ZoneChange]
    ) -> tuple[list[ZoneChange], dict[str, ZoneContent], ZoneSnapshot]:
        contents = dict(self.contents)
        contents.update((c.new.origin, c.new) for c in changes)
        snapshot = self.snapshot.update(
            [(c.old, c.new) for c in changes], [c.delta for c in changes]
        )
        return changes, contents, snapshot

    def _install(
        self, changes: list[ZoneChange], contents: dict[str, ZoneContent], snapshot: ZoneSnapshot
    ) -> None:
        self.contents, self.snapshot = contents, snapshot
        for c in changes:
            history = self.history.setdefault(c.new.origin, deque(maxlen=HISTORY))
            if c.delta is None:
                history.clear()  # a zone served anew: nothing to go back to
            else:
                history.append(c.delta)
        if self.server is not None:
            # signatures re-made for data that did not change: every answer may differ
            changed = None if snapshot.refreshed else changed_names(changes)
            self.server.publish(snapshot, changed)
        for listener in self._listeners:
            listener(self, changes)


def changed_names(changes: Iterable[ZoneChange]) -> frozenset[Labels] | None:
    """The names whose answers a publish changed; None when it changed more than managed
    answers (a new zone, a reload), so that nothing learned before may be replayed."""
    names: set[str] = set()
    for c in changes:
        if c.delta is None or c.delta.full:
            return None
        names.update(map(_NAME, c.delta.removed))
        names.update(map(_NAME, c.delta.added))
        names.update(c.delta.steered)
    return frozenset(map(labels_of, names))


_NAME = operator.attrgetter("name")


class EmbeddedProvider(BaseProvider):
    SUPPORTS: ClassVar[frozenset[str]] = frozenset(STATIC_TYPES)
    SERVES_APEX: ClassVar[bool] = True

    def __init__(
        self, zone: str, options: ProviderOptions, zones: EmbeddedZones | None = None
    ) -> None:
        super().__init__(zone, options)
        self.zones = zones if zones is not None else EmbeddedZones()

    async def populate(self, keys: Collection[Key]) -> Populated:
        content = self.zones.contents.get(self.zone)
        records = content.records if content else ()
        # The whole zone is ours: everything in it is owned, nothing is foreign.
        return Populated(records, owned=frozenset((r.name, r.rtype) for r in records))

    async def apply(self, plan: Plan) -> ApplyResult:
        current = self.zones.contents.get(self.zone)
        soa = plan.soa or (current.soa if current else None)
        if soa is None:
            raise ProviderError(f"{self.zone}: the embedded server needs the zone's SOA")
        sets: dict[Key, RecordSet] = (
            {(r.name, r.rtype): r for r in current.records} if current else {}
        )
        for change in plan.changes:
            if change.new is None:
                sets.pop(change.key, None)
            else:
                sets[change.key] = change.new
        if current is not None and not plan.changes and soa == current.soa:
            return ApplyResult(self.zone, 0, 0, True, "nothing to do")
        content = ZoneContent(self.zone, soa, tuple(sets[k] for k in sorted(sets)))
        await self.zones.put_async([content])
        return ApplyResult(self.zone, len(plan.changes), 1, True, f"serial {soa.serial}")
