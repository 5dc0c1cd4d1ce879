"""What the API sees of a node: a read view and a control interface, and nothing else.

The runtime's node satisfies both Protocols; the API never imports the runtime, so what a
route can read or change is exactly what is listed here.
"""

from __future__ import annotations

from typing import Any, Protocol

from dnsfailover.alerts.alerter import DestinationStats
from dnsfailover.config.schema import Config
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.values import Published
from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.locate import Network
from dnsfailover.geo.steering import Placement
from dnsfailover.health.tracker import HealthTracker
from dnsfailover.model import Event
from dnsfailover.provider.sync import SyncStatus


class Heartbeat(Protocol):
    """The engine loop's heartbeat (`runtime.systemd.Supervision`)."""

    @property
    def stale_after(self) -> float:
        """Seconds without a beat after which the loop counts as wedged."""

    def age(self) -> float | None:
        """Seconds since the engine loop last beat; None before it first ran."""

    def alive(self) -> bool: ...


class NodeView(Protocol):
    """Read-only: what the node serves, why, and how it is doing.  Called on the event loop;
    everything but `events` reads memory only."""

    @property
    def config(self) -> Config: ...

    @property
    def node_id(self) -> str: ...

    @property
    def region(self) -> str: ...

    @property
    def tracker(self) -> HealthTracker: ...

    @property
    def published(self) -> Published | None:
        """What is served now (None until the first decision is published)."""

    def overrides(self) -> list[Override]:
        """The overrides in force now."""

    def cluster_status(self) -> dict[str, Any]:
        """Mode (single or cluster), leadership, degradation, isolated regions, nodes."""

    def sync_statuses(self) -> dict[str, SyncStatus]:
        """Each external provider zone's sync state, by origin."""

    def dns_counts(self) -> list[int] | None:
        """Responses by rcode (then dropped queries) of the embedded server; None before it
        runs."""

    def alert_stats(self) -> list[DestinationStats]: ...

    @property
    def supervision(self) -> Heartbeat:
        """Whether the engine loop still runs: /livez."""

    def state_problem(self) -> str | None:
        """Why state writes fail (a full disk...), None when they work: /healthz fails."""

    def probe_status(self) -> dict[str, Any]:
        """Where the probes run (process or inline), the probe process's pid and restarts."""

    def workers_status(self) -> dict[str, Any]:
        """The `--workers` DNS processes besides the node's own: count, alive, pids,
        restarts, and the problem while one is down (count 0 without `--workers`)."""

    def dnssec_status(self) -> dict[str, dict[str, Any]]:
        """Each signed zone's keys, signature counts and times, and its problem (or None)."""

    def place(self, name: str, client: Network) -> Placement | None:
        """The location group the embedded server puts `client` (a network already cut to
        the ECS source limits) in for steered `name`; None when `name` is not steered."""

    def dns_steered_queries(self) -> dict[tuple[str, str], int]:
        """Queries of steered names answered, per (name, location group), since start."""

    def source_limits(self) -> SourceLimits:
        """The ECS source limits the embedded server applies."""

    async def events(self, limit: int, before: int | None) -> list[Event]:
        """The history, newest first.

        :raises NotReady: while the node is starting.
        """


class NodeControl(Protocol):
    """What an authorised caller may change; every call is audited by the node."""

    async def add_override(self, o: Override) -> None:
        """:raises InvalidOverride: `o` names what does not exist.
        :raises OverrideRefused: an interlock would trip and `o.force` is not set."""

    async def remove_override(self, override_id: str, who: str, reason: str) -> bool:
        """False when there is no such override."""

    async def sync_zone(self, zone: str) -> SyncStatus:
        """Re-read external zone `zone` (an origin of `sync_statuses`) and apply the latest
        decision to it now; its status once that round is over."""

    async def reload_from_file(self) -> str:
        """Re-read the node's config file; a summary of what changed.

        :raises ConfigError: the file is invalid (nothing changes).
        :raises ReloadRefused: the change needs a restart (nothing changes).
        :raises OSError: the file cannot be read.
        """

    async def reset_breaker(self, who: str, reason: str) -> bool:
        """Release the circuit breaker; whether it was frozen."""

    async def record_event(self, kind: str, subject: str, message: str) -> None:
        """Add an entry to the history (a client's drill report)."""
