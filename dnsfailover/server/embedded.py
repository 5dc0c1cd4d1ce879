"""Provider `embedded`: the zones served by dnsfailover's own authoritative DNS server.

All embedded zones share one `EmbeddedZones`, whose immutable snapshot the DNS server
serves; an apply rebuilds the snapshot and swaps it in atomically.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from typing import ClassVar

from dnsfailover.config.schema import STATIC_TYPES
from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.provider.contract import ApplyResult, BaseProvider, ProviderError, ProviderOptions
from dnsfailover.provider.plan import Key, Plan, Populated
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.zone import ZoneSnapshot

Listener = Callable[["EmbeddedZones", list[ZoneContent]], None]
HISTORY = 64  # versions kept per zone (for incremental zone transfers)


class EmbeddedZones:
    """What the embedded server serves: one content per zone, one snapshot for all.

    Listeners are called after every publish with the zones that changed (zone transfers,
    NOTIFY, worker processes); `history` keeps each zone's recent versions, oldest first.
    """

    def __init__(self) -> None:
        self.contents: dict[str, ZoneContent] = {}
        self.snapshot = ZoneSnapshot.build([])
        self.server: DnsServer | None = None
        self.history: dict[str, deque[ZoneContent]] = {}
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def attach(self, server: DnsServer) -> None:
        self.server = server
        server.publish(self.snapshot)

    def put(self, zones: Iterable[ZoneContent]) -> None:
        """Replace these zones' contents and publish (build first: a bad zone changes nothing)."""
        zones = list(zones)
        self._install(zones, *self._prepare(zones))

    async def put_async(self, zones: Iterable[ZoneContent]) -> None:
        """`put`, with the snapshot built on a thread: a big zone takes seconds to build,
        and the event loop keeps answering TCP and running probes meanwhile."""
        zones = list(zones)
        async with self._lock:  # builds start from the contents the previous one installed
            prepared = await asyncio.to_thread(self._prepare, zones)
            self._install(zones, *prepared)

    def _prepare(self, zones: list[ZoneContent]) -> tuple[dict[str, ZoneContent], ZoneSnapshot]:
        contents = dict(self.contents)
        contents.update((z.origin, z) for z in zones)
        return contents, ZoneSnapshot.build(list(contents.values()))

    def _install(
        self, zones: list[ZoneContent], contents: dict[str, ZoneContent], snapshot: ZoneSnapshot
    ) -> None:
        self.contents, self.snapshot = contents, snapshot
        changed = [contents[z.origin] for z in zones]
        for z in changed:
            self.history.setdefault(z.origin, deque(maxlen=HISTORY)).append(z)
        if self.server is not None:
            self.server.publish(snapshot)
        for listener in self._listeners:
            listener(self, changed)


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


def with_serial(content: ZoneContent, serial: int) -> ZoneContent:
    return replace(content, soa=replace(content.soa, serial=serial))
