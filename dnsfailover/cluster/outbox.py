"""Delivering cluster changes to the service's callbacks, in order, batched per loop turn.

A watch response can carry many events (a lease expiry deletes every key of a node in
one revision); they are queued as they are read and handed over on the next loop turn,
so the service hears one `on_reports` call per batch without any batching timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dnsfailover.cluster.types import NodeBeat, Published, RegionReport
from dnsfailover.cluster.view import Change
from dnsfailover.engine.overrides import Override

log = logging.getLogger("dnsfailover.cluster")


def call(fn: Callable[..., None], *args: Any) -> None:
    """Run a callback; its bug is logged and must not tear down the etcd session."""
    try:
        fn(*args)
    except Exception:
        log.exception("cluster: callback %s failed", getattr(fn, "__name__", fn))


@dataclass(slots=True)
class Outbox:
    on_reports: Callable[[list[RegionReport]], None]
    on_gone: Callable[[str, str], None]
    on_beat: Callable[[NodeBeat], None]
    on_decision: Callable[[Published], None]
    on_overrides: Callable[[list[Override]], None]
    overrides: Callable[[], list[Override]]  # the current full set
    _queue: list[Change] = field(default_factory=list)
    _handle: asyncio.Handle | None = None

    def emit(self, changes: list[Change]) -> None:
        """Queue changes; they are delivered once the current watch batch is consumed."""
        if changes:
            self._queue += changes
            if self._handle is None:
                self._handle = asyncio.get_running_loop().call_soon(self.flush)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def flush(self) -> None:
        """Deliver everything queued now (before a leadership or connection change)."""
        self.cancel()
        changes, self._queue = self._queue, []
        reports: list[RegionReport] = []
        overrides_told = False
        for kind, payload in changes:
            if kind == "reports":
                reports.append(payload)
                continue
            if reports:
                call(self.on_reports, reports)
                reports = []
            if kind == "gone":
                call(self.on_gone, *payload)
            elif kind == "beat":
                call(self.on_beat, payload)
            elif kind == "decision":
                call(self.on_decision, payload)
            elif kind == "overrides" and not overrides_told:
                overrides_told = True
                call(self.on_overrides, self.overrides())
        if reports:
            call(self.on_reports, reports)
