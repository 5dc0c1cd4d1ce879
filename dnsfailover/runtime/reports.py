"""What the API sees of a node's health as a process (`api.ports`): problems that keep it
from its job, where its probes run, its DNS server's counts, its alerts and its history.  A
mixin of the node."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dnsfailover.alerts.alerter import Alerter, DestinationStats
from dnsfailover.checks.process import INLINE_PROBES, ProbeProcess
from dnsfailover.errors import NotReady
from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.locate import Network
from dnsfailover.geo.steering import Placement
from dnsfailover.model import Event

if TYPE_CHECKING:
    from dnsfailover.runtime.publish import Publisher
    from dnsfailover.runtime.serving import Serving
    from dnsfailover.runtime.store_thread import AsyncStore


class NodeReports:
    publisher: Publisher
    prober: ProbeProcess | None
    serving: Serving
    alerter: Alerter
    store: AsyncStore | None
    _clock: Callable[[], float]

    def state_problem(self) -> str | None:
        error = self.publisher.store_error
        found = [] if error is None else [f"state store: {error}"]
        if self.prober is not None and self.prober.problem is not None:
            found.append(self.prober.problem)
        return "; ".join(found) or None

    def probe_status(self) -> dict[str, Any]:
        return INLINE_PROBES if self.prober is None else self.prober.status()

    def workers_status(self) -> dict[str, Any]:
        return self.serving.workers_status()

    def dnssec_status(self) -> dict[str, dict[str, Any]]:
        from dnsfailover.runtime.signing import status

        return status(self.serving.embedded, self._clock())

    def place(self, name: str, client: Network) -> Placement | None:
        steering = self.serving.steering
        if steering is None or not steering.steers(name):
            return None
        return steering.place(name, client)

    def dns_steered_queries(self) -> dict[tuple[str, str], int]:
        server = self.serving.server
        return {} if server is None else dict(server.steered_queries)

    def source_limits(self) -> SourceLimits:
        return self.serving.limits

    def dns_counts(self) -> list[int] | None:
        return self.serving.response_counts()

    def dns_address(self) -> tuple[str, int] | None:
        server = self.serving.server
        return None if server is None else server.address

    def alert_stats(self) -> list[DestinationStats]:
        return self.alerter.stats()

    async def events(self, limit: int, before: int | None) -> list[Event]:
        if self.store is None:
            raise NotReady("the service is starting; its history is not open yet")
        return await self.store.run(lambda s: s.events(limit, before))

    async def record_event(self, kind: str, subject: str, message: str) -> None:
        if self.store is None:
            raise NotReady("the service is starting; its history is not open yet")
        row = (self._clock(), kind, subject, message)
        await self.store.run(lambda s: s.add_events([row], durable=True))
