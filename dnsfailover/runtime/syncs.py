"""The external zones' sync workers as the node sees them: what they report (counted,
alerted, recorded), and what the API sees (`api.ports`): their status, and an operator's
`dnsfailover sync ZONE`.  A mixin of the node, which holds the workers in its publisher."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnsfailover.alerts.notice import Notice
from dnsfailover.provider.sync import SyncEvent, SyncStatus

if TYPE_CHECKING:
    from dnsfailover.alerts.alerter import Alerter
    from dnsfailover.api.metrics import Metrics
    from dnsfailover.runtime.publish import Publisher
    from dnsfailover.runtime.store_thread import AsyncStore


class ProviderSyncs:
    publisher: Publisher
    metrics: Metrics
    alerter: Alerter
    store: AsyncStore | None

    def _sync_event(self, event: SyncEvent) -> None:
        self.metrics.provider_event(event)
        if event.kind in ("failed", "refused"):
            self.alerter.emit(Notice.from_sync_event(event))
        if self.store is None:
            return
        row = (event.at, f"provider-{event.kind}", event.zone, event.message)
        self.publisher.later(lambda s: s.add_events([row]))

    def sync_statuses(self) -> dict[str, SyncStatus]:
        return {origin: sync.status for origin, sync in self.publisher.syncs.items()}

    async def sync_zone(self, zone: str) -> SyncStatus:
        """Re-read the zone and apply the latest decision now; its status afterwards."""
        return await self.publisher.syncs[zone].resync()
