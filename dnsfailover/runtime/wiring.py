"""Small pieces of the node's wiring: config → hysteresis rules, provider safety and sync
workers, probe deadlines and sources, serials stamped on zones, the interlocks' edges told."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

from dnsfailover.alerts.alerter import Alerter, Notice
from dnsfailover.config.checks import CheckConfig
from dnsfailover.config.schema import Config
from dnsfailover.engine.edges import Edge
from dnsfailover.health.tracker import Hysteresis
from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.provider.contract import create_provider
from dnsfailover.provider.plan import Safety
from dnsfailover.provider.sync import SyncEvent, ZoneSync
from dnsfailover.runtime.store import Row
from dnsfailover.tasks import cancel_and_wait

log = logging.getLogger("dnsfailover.service")


def trim_heap() -> None:
    """Give the C heap's free memory back to the system: loading and compiling a big zone
    peaks far above what stays alive (glibc only; elsewhere nothing happens)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class HeapTrimmer:
    """Trims the heap `delay` seconds after the last `later()`, holding `lock` (the
    decision lock: trimming holds malloc's lock, so it must not run during a decision)."""

    def __init__(self, lock: asyncio.Lock, delay: float) -> None:
        self._lock, self._delay = lock, delay
        self._task: asyncio.Task[None] | None = None

    def later(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.create_task(self._run(), name="dnsfailover-trim")

    async def _run(self) -> None:
        await asyncio.sleep(self._delay)
        async with self._lock:
            await asyncio.to_thread(trim_heap)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)


def tell(found: Sequence[Edge], now: float, alerter: Alerter) -> list[Row]:
    """Log, notify and return as history rows what the interlocks newly did."""
    rows: list[Row] = []
    for e in found:
        log.log(e.level, "%s: %s", e.kind, e.message)
        alerter.emit(Notice(e.kind, e.subject, e.message, now, e.severity))
        rows.append((now, e.kind, e.subject, e.message))
    return rows


def hysteresis(config: Config) -> dict[str, Hysteresis]:
    return {
        key: Hysteresis(check.rise, check.fall, check.interval)
        for key, (_target, check) in config.targets().items()
    }


def region_source(config: Config, region: str) -> str | None:
    spec = config.regions.get(region)
    return spec.source_address if spec is not None else None


def cold_start_deadline(config: Config) -> float:
    """How long the first round of probes may take: the slowest timeout, plus slack."""
    checks: list[CheckConfig] = [check for _t, check in config.targets().values()]
    return max((c.timeout for c in checks), default=0.0) + 0.5


def with_serials(zones: tuple[ZoneContent, ...], serials: Mapping[str, int]) -> list[ZoneContent]:
    return [replace(z, soa=replace(z.soa, serial=serials.get(z.origin, 0))) for z in zones]


def provider_records(content: ZoneContent) -> tuple[RecordSet, ...]:
    """What an external provider is given: everything but the apex NS, which it owns, and
    without weights, which only the embedded server publishes (as one address per answer)."""
    return tuple(
        replace(r, weights=()) if r.weights else r
        for r in content.records
        if not (r.name == content.origin and r.rtype == "NS")
    )


def safety(config: Config, origin: str) -> Safety:
    zone = config.zones[origin]
    empty_ok = frozenset(
        name
        for o, name, record in config.managed()
        if o == origin and record.all_down == "serve_none"
    )
    return Safety(max_change_pct=zone.max_change_pct, empty_ok=empty_ok, adopt=zone.adopt)


def make_syncs(
    config: Config,
    on_event: Callable[[SyncEvent], None],
    fence: Callable[[], Awaitable[bool]] | None,
) -> dict[str, ZoneSync]:
    """A sync worker for each external zone (embedded zones are served, not synced).
    Blocking: entry points read package metadata."""
    return {
        origin: ZoneSync(
            create_provider(zone.provider, origin, zone.options),
            safety(config, origin),
            force=zone.force,
            on_event=on_event,
            fence=fence,
        )
        for origin, zone in config.zones.items()
        if zone.provider != "embedded"
    }
