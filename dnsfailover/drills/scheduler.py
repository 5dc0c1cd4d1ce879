"""Scheduled drills: the config's `drills:` run inside the server at their slots.

A scheduled drill is the same procedure as `dnsfailover drill` (`procedure.run_drill`), run
against the node itself: overrides through its own vetting, persistence and audit, answers
from its own DNS server.  Each result lands in the history as a `drill` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dnsfailover.config.drill_targets import DrillTargetError
from dnsfailover.config.drills import MIN_EVERY, DrillConfig
from dnsfailover.config.schema import Config
from dnsfailover.drills.procedure import (
    DrillError,
    DrillOps,
    DrillRefused,
    _nap,
    run_drill,
    served,
)
from dnsfailover.drills.spec import Answer, DrillReport, DrillSpec
from dnsfailover.engine.overrides import Action, Override, OverrideRefused, new_id
from dnsfailover.engine.values import Published
from dnsfailover.errors import NotReady, UserError
from dnsfailover.tasks import cancel_and_wait

log = logging.getLogger("dnsfailover.drills")

IDLE = 60.0  # the scheduler looks at its drills at least this often (a reload may add some)
REPORTS = 50  # finished drills a scheduler keeps in memory (the history keeps them all)
STOP_WITHIN = 10.0  # a stopping server waits this long for a drill to restore its tier


class DrillHost(Protocol):
    """What a scheduled drill needs of the node it runs in."""

    @property
    def config(self) -> Config: ...

    @property
    def node_id(self) -> str: ...

    @property
    def published(self) -> Published | None: ...

    def cluster_status(self) -> dict[str, Any]: ...

    def dns_address(self) -> tuple[str, int] | None:
        """Where the node's DNS server listens (None before it runs)."""

    async def add_override(self, o: Override) -> None: ...

    async def remove_override(self, override_id: str, who: str, reason: str) -> bool: ...

    async def record_event(self, kind: str, subject: str, message: str) -> None: ...


def node_ops(node: DrillHost, who: str) -> DrillOps:
    """A drill run inside `node`: overrides through its own methods (the same vetting,
    persistence and audit as the API), answers from its own DNS server."""

    async def set_override(body: dict[str, Any]) -> str:
        now = time.time()  # as the API stamps overrides
        expires_in = body.get("expires_in")
        o = Override(
            id=new_id(),
            action=Action(body["action"]),
            name=body["name"],
            endpoint=None,
            tier=body.get("tier"),
            reason=body["reason"],
            who=who,
            created_at=now,
            expires_at=None if expires_in is None else now + float(expires_in),
        )
        try:
            await node.add_override(o)
        except OverrideRefused as e:
            raise DrillRefused(f"refused by an interlock: {e}") from e
        except UserError as e:
            raise DrillError(str(e)) from e
        return o.id

    async def remove_override(oid: str, reason: str) -> None:
        await node.remove_override(oid, who, reason)  # False: it had expired already

    async def query(name: str, rtype: str) -> Answer | None:
        address = node.dns_address()
        if address is None:
            return None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address[0], address[0])
        return await served(host, address[1], name, rtype)

    async def why(name: str) -> str | None:
        published = node.published
        decided = None if published is None else published.decision.names.get(name)
        return None if decided is None else decided.reason

    return DrillOps(set_override, remove_override, query, why)


class DrillScheduler:
    """Runs the config's `drills:` in the server at their slots, one drill at a time.

    `drills` None reads `node.config.drills` at each slot, so a reload takes effect.
    Only a single node or a cluster's leader drills.  `min_every` is the shortest period
    accepted (tests lower it; a config file cannot go below an hour).
    """

    def __init__(
        self,
        node: DrillHost,
        drills: Sequence[DrillConfig] | None = None,
        *,
        min_every: float = MIN_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self._drills = None if drills is None else tuple(drills)
        self._min_every = min_every
        self._clock = clock
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ran: dict[str, float] = {}  # drill key → the last slot it ran (or was skipped)
        self.reports: deque[DrillReport] = deque(maxlen=REPORTS)  # finished drills, newest last
        self._one_at_a_time = asyncio.Lock()

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="dnsfailover-drills")

    async def stop(self) -> None:
        """End a running drill early (its override is removed), then stop."""
        self._stop.set()
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait({self._task}, timeout=STOP_WITHIN)
        await cancel_and_wait(self._task)
        self._task = None

    def drills(self) -> tuple[DrillConfig, ...]:
        if self._drills is not None:
            return self._drills
        return tuple(getattr(self.node.config, "drills", ()))

    async def _loop(self) -> None:
        while not self._stop.is_set():
            now = self._clock()
            drills = [d for d in self.drills() if self._allowed(d)]
            for d in drills:
                # A slot that passed before the drill was known (start, reload) is not made up.
                self._ran.setdefault(d.key, d.next_slot(now) - d.every)
            for d in drills:
                slot = d.next_slot(self._clock()) - d.every
                if slot > self._ran[d.key] and not self._stop.is_set():
                    self._ran[d.key] = slot
                    try:
                        await self.run_once(d)
                    except Exception:  # the next slot still comes
                        log.exception("drill: %s failed unexpectedly", d.key)
            now = self._clock()
            wait = min((d.next_slot(now) - now for d in drills), default=IDLE)
            await _nap(min(max(wait, 0.01), IDLE), self._stop)

    def _allowed(self, d: DrillConfig) -> bool:
        if d.every >= self._min_every:
            return True
        if d.key not in self._ran:
            self._ran[d.key] = float("inf")
            log.error(
                "drill: %s: every %gs is below %gs; not scheduled", d.key, d.every, self._min_every
            )
        return False

    async def run_once(self, d: DrillConfig) -> DrillReport | None:
        """Run `d` now; None when it could not start (refused, not serving, not leader).
        Whatever happens is logged and recorded; a refusal waits for the next slot."""
        async with self._one_at_a_time:
            return await self._run(d)

    async def _run(self, d: DrillConfig) -> DrillReport | None:
        if self.node.cluster_status().get("leader") is False:
            log.info("drill: %s: skipped, this node is not the cluster's leader", d.key)
            return None
        who = f"drill-scheduler@{self.node.node_id}"
        subject = f"{d.name} tier {d.tier}"
        try:
            spec = DrillSpec.of(self.node.config, d.tier, d.name, d.for_, "scheduled drill")
            subject = f"{spec.name} tier {spec.tier}"
            report = await run_drill(spec, node_ops(self.node, who), who=who, abort=self._stop)
        except DrillRefused as e:
            await self._record(subject, f"scheduled drill refused (next try at its next slot): {e}")
            return None
        except (DrillError, DrillTargetError) as e:
            await self._record(subject, f"scheduled drill not run: {e}")
            return None
        self.reports.append(report)
        await self._record(subject, report.summary(), ok=report.ok)
        return report

    async def _record(self, subject: str, message: str, *, ok: bool = False) -> None:
        (log.info if ok else log.warning)("drill: %s: %s", subject, message)
        with contextlib.suppress(NotReady):  # a node that is not serving yet keeps no history
            await self.node.record_event("drill", subject, message)
