"""Failover drills: force a tier down through the real override path, watch the served
answers move off it and come back, and measure both.

`run_drill` is the procedure, shared by `dnsfailover drill` (over the HTTP API) and by
`DrillScheduler` (in the server, against the `Service` itself).  It talks to either through
`DrillOps`, a few small async callables, and always reads the answers from the served DNS,
so a drill passes only when real queries see the change.

Every decision a drill makes lands in the history: the force_down override it sets and
removes (who, why: the reasons start with `drill:` and the removal carries the measured
fail-over time), the failback it requests for `failback: manual` records, an interlock's
refusal, and (scheduled drills) a `drill` event with the whole result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

from dnsfailover.drillconfig import (
    MIN_EVERY,
    Answer,
    DrillConfig,
    DrillReport,
    DrillSpec,
    DrillTargetError,
    show,
)
from dnsfailover.errors import DnsFailoverError
from dnsfailover.overrides import Action, Override, OverrideRefused, new_id
from dnsfailover.tasks import cancel_and_wait

if TYPE_CHECKING:
    from dnsfailover.service import Service

log = logging.getLogger("dnsfailover.drills")

FAILOVER_WITHIN = 10.0  # an override reaches the served answers in well under a second
EXPIRY_MARGIN = 60.0  # the override outlives the hold by this much, then expires by itself
POLL = 0.02
VERIFY_EVERY = 1.0
QUERY_TIMEOUT = 1.0
IDLE = 60.0  # the scheduler looks at its drills at least this often (a reload may add some)
REPORTS = 50  # finished drills a scheduler keeps in memory (the history keeps them all)
STOP_WITHIN = 10.0  # a stopping server waits this long for a drill to restore its tier


class DrillError(DnsFailoverError):
    """The drill could not run or could not finish."""


class DrillRefused(DrillError):
    """An interlock refused the drill's override; nothing was changed."""


@dataclass(frozen=True, slots=True)
class DrillOps:
    """How a drill acts and observes.

    `set_override` takes a body shaped like `POST /api/v1/overrides` and returns the new
    override's id (raising DrillRefused on an interlock, DrillError otherwise);
    `remove_override(id, reason)`; `query(name, rtype)` asks the served DNS (None: no
    reply); `why(name)` says why a name answers what it does, for failure messages.
    """

    set_override: Callable[[dict[str, Any]], Awaitable[str]]
    remove_override: Callable[[str, str], Awaitable[None]]
    query: Callable[[str, str], Awaitable[Answer | None]]
    why: Callable[[str], Awaitable[str | None]] | None = None


async def served(host: str, port: int, name: str, rtype: str) -> Answer | None:
    """The values of `name`'s `rtype` records as served over UDP (None: no reply)."""
    query = dns.message.make_query(name, rtype)
    try:
        reply = await dns.asyncquery.udp(query, host, port=port, timeout=QUERY_TIMEOUT)
    except (dns.exception.DNSException, OSError):
        return None
    wanted = dns.rdatatype.from_text(rtype)
    values = [rd.to_text() for rrset in reply.answer if rrset.rdtype == wanted for rd in rrset]
    return tuple(sorted(values))


async def serial(ops: DrillOps, origin: str) -> int | None:
    soa = await ops.query(origin, "SOA")
    try:
        return int(soa[0].split()[2]) if soa else None
    except (IndexError, ValueError):
        return None


def _stopped(abort: asyncio.Event | None) -> bool:
    return abort is not None and abort.is_set()


async def _nap(seconds: float, abort: asyncio.Event | None) -> None:
    if abort is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(abort.wait(), seconds)


async def _until(
    ops: DrillOps,
    spec: DrillSpec,
    done: Callable[[Answer], bool],
    within: float,
    abort: asyncio.Event | None,
) -> tuple[Answer | None, Answer | None]:
    """Poll the served answer until `done(answer)`: (that answer or None, the last seen)."""
    deadline = time.monotonic() + within
    last: Answer | None = None
    while not _stopped(abort):
        answer = await ops.query(spec.name, spec.rtype)
        last = answer if answer is not None else last
        if answer is not None and done(answer):
            return answer, answer
        if time.monotonic() >= deadline:
            break
        await _nap(POLL, abort)
    return None, last


async def run_drill(
    spec: DrillSpec,
    ops: DrillOps,
    *,
    who: str,
    abort: asyncio.Event | None = None,
    failover_within: float = FAILOVER_WITHIN,
) -> DrillReport:
    """Force `spec.tier` down, verify, hold, restore, verify; the override is removed
    whatever happens.  A failed drill is a report with `problem` set.

    :raises DrillRefused: an interlock refused the override (nothing changed).
    :raises DrillError: the served DNS does not answer, or the tier is not serving now.
    """

    def off(a: Answer) -> bool:
        return bool(a) and not set(a) & spec.addresses

    before = await ops.query(spec.name, spec.rtype)
    if before is None:
        raise DrillError(f"the served DNS does not answer for {spec.name} {spec.rtype}")
    if not set(before) & spec.addresses:
        raise DrillError(
            f"{spec.name} does not answer from tier {spec.tier} now ({show(before)}): a drill "
            f"forces down the tier that is serving"
        )
    report = DrillReport(spec.name, spec.tier, spec.failback, spec.duration, before)
    report.serial_before = await serial(ops, spec.origin)
    report.override = await ops.set_override(
        {
            "action": "force_down",
            "name": spec.name,
            "tier": spec.tier,
            "reason": f"drill: {spec.reason} (tier {spec.tier} down for {spec.duration:g}s)",
            "who": who,
            "expires_in": spec.duration + failover_within + EXPIRY_MARGIN,
        }
    )
    try:
        started = time.monotonic()
        during, last = await _until(ops, spec, off, failover_within, abort)
        report.during = during or last or ()
        if during is None:
            report.problem = f"the answer did not move off tier {spec.tier} within "
            report.problem += f"{failover_within:g}s (still {show(last)}){await _why(ops, spec)}"
        else:
            report.failover_time = time.monotonic() - started
            report.serial_during = await serial(ops, spec.origin)
            await _hold(spec, ops, report, off, abort)
    finally:
        await _restore(ops, report)
    removed = time.monotonic()
    if spec.failback == "manual":  # harmless if the name never left the tier
        await _failback(spec, ops, report, who)
    if report.problem is None:
        await _recover(spec, ops, report, removed, abort)
    return report


async def _hold(
    spec: DrillSpec,
    ops: DrillOps,
    report: DrillReport,
    off: Callable[[Answer], bool],
    abort: asyncio.Event | None,
) -> None:
    """Keep the tier down for the drill's duration, checking the answer about every second."""
    end = time.monotonic() + spec.duration
    while (left := end - time.monotonic()) > 0:
        await _nap(min(VERIFY_EVERY, left), abort)
        if _stopped(abort):
            report.problem = "aborted: the server is stopping"
            return
        answer = await ops.query(spec.name, spec.rtype)
        if answer is None:
            report.unanswered += 1
        elif off(answer):
            report.verified += 1
        else:
            held = spec.duration - max(0.0, end - time.monotonic())
            report.problem = f"the answer went back to tier {spec.tier} after {held:.1f}s "
            report.problem += f"of the hold ({show(answer)}){await _why(ops, spec)}"
            return


async def _restore(ops: DrillOps, report: DrillReport) -> None:
    """Remove the drill's override; its removal reason carries the measurement."""
    assert report.override is not None
    if report.problem is None:
        reason = f"drill: hold over; {report.moved()}; verified off the tier {report.verified}x"
    else:
        reason = f"drill: failed: {report.problem}"
    try:
        await ops.remove_override(report.override, reason[:480])
    except Exception as e:  # in a finally: report it, do not hide why the drill ended
        problem = f"could not remove override {report.override} ({e}); it expires by itself"
        report.problem = problem if report.problem is None else f"{report.problem}; {problem}"


async def _failback(spec: DrillSpec, ops: DrillOps, report: DrillReport, who: str) -> None:
    """`failback: manual` records stay off the tier until asked: ask, as an operator would."""
    body = {"action": "failback", "name": spec.name, "who": who}
    body["reason"] = f"drill: back to tier {spec.tier} (failback: manual); {report.moved()}"
    try:
        await ops.set_override(body)
    except DrillError as e:
        report.problem = (report.problem + "; " if report.problem else "") + (
            f"the failback after the drill was refused: {e}"
        )
        return
    report.notes.append("failback is manual: the drill requested the failback")


async def _recover(
    spec: DrillSpec,
    ops: DrillOps,
    report: DrillReport,
    removed: float,
    abort: asyncio.Event | None,
) -> None:
    """Wait for the answer to return to the tier (within the failback policy's bound)."""
    if spec.failback == "auto":
        report.notes.append("failback is auto: the time to recover includes hold_down")
    elif spec.failback == "staged":
        report.notes.append("failback is staged: the time to recover includes hold_down and hold")

    def back(a: Answer) -> bool:
        return bool(a) and set(a) <= spec.addresses

    after, last = await _until(ops, spec, back, spec.recover_within, abort)
    report.after = after or last or ()
    if after is not None:
        report.recovery_time = time.monotonic() - removed
        report.serial_after = await serial(ops, spec.origin)
    elif _stopped(abort):
        report.problem = "aborted: the server is stopping"
    else:
        report.problem = f"the answer did not come back to tier {spec.tier} within "
        report.problem += f"{spec.recover_within:g}s (now {show(last)}){await _why(ops, spec)}"


async def _why(ops: DrillOps, spec: DrillSpec) -> str:
    if ops.why is None:
        return ""
    try:
        why = await ops.why(spec.name)
    except DrillError:
        return ""
    return f"; the server says: {why}" if why else ""


# -- scheduled drills -------------------------------------------------------------------------


def service_ops(service: Service, who: str) -> DrillOps:
    """A drill run inside `service`: overrides through its own methods (the same vetting,
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
            await service.add_override(o)
        except OverrideRefused as e:
            raise DrillRefused(f"refused by an interlock: {e}") from e
        except ValueError as e:
            raise DrillError(str(e)) from e
        return o.id

    async def remove_override(oid: str, reason: str) -> None:
        await service.remove_override(oid, who, reason)  # False: it had expired already

    async def query(name: str, rtype: str) -> Answer | None:
        server = service.dns_server
        address = None if server is None else server.address
        if address is None:
            return None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address[0], address[0])
        return await served(host, address[1], name, rtype)

    async def why(name: str) -> str | None:
        published = service.published
        decided = None if published is None else published.decision.names.get(name)
        return None if decided is None else decided.reason

    return DrillOps(set_override, remove_override, query, why)


class DrillScheduler:
    """Runs the config's `drills:` in the server at their slots, one drill at a time.

    `drills` None reads `service.config.drills` at each slot, so a reload takes effect.
    Only a single node or a cluster's leader drills.  `min_every` is the shortest period
    accepted (tests lower it; a config file cannot go below an hour).
    """

    def __init__(
        self,
        service: Service,
        drills: Sequence[DrillConfig] | None = None,
        *,
        min_every: float = MIN_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
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
        return tuple(getattr(self.service.config, "drills", ()))

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
        if self.service.cluster_status().get("leader") is False:
            log.info("drill: %s: skipped, this node is not the cluster's leader", d.key)
            return None
        who = f"drill-scheduler@{self.service.node_id}"
        subject = f"{d.name} tier {d.tier}"
        try:
            spec = DrillSpec.of(self.service.config, d.tier, d.name, d.for_, "scheduled drill")
            subject = f"{spec.name} tier {spec.tier}"
            report = await run_drill(
                spec, service_ops(self.service, who), who=who, abort=self._stop
            )
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
        store = self.service.store
        if store is not None:
            row = (time.time(), "drill", subject, message)
            await store.run(lambda s: s.add_events([row]))
