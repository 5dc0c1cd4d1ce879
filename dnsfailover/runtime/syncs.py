"""What the API sees of the external zones' sync workers (`api.ports`): their status, and an
operator's `dnsfailover sync ZONE`.  A mixin of the node, which holds the workers in its
publisher."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnsfailover.provider.sync import SyncStatus

if TYPE_CHECKING:
    from dnsfailover.runtime.publish import Publisher


class ProviderSyncs:
    publisher: Publisher

    def sync_statuses(self) -> dict[str, SyncStatus]:
        return {origin: sync.status for origin, sync in self.publisher.syncs.items()}

    async def sync_zone(self, zone: str) -> SyncStatus:
        """Re-read the zone and apply the latest decision now; its status afterwards."""
        return await self.publisher.syncs[zone].resync()
