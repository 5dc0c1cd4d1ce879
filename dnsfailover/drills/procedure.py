"""Failover drills: force a tier down through the real override path, watch the served
answers move off it and come back, and measure both.

`run_drill` is the procedure, shared by `dnsfailover drill` (over the HTTP API) and by
`DrillScheduler` (in the server, against the node itself).  It talks to either through
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

from dnsfailover.drills.spec import Answer, DrillReport, DrillSpec, show
from dnsfailover.errors import DnsFailoverError

if TYPE_CHECKING:
    pass

log = logging.getLogger("dnsfailover.drills")


FAILOVER_WITHIN = 10.0  # an override reaches the served answers in well under a second


EXPIRY_MARGIN = 60.0  # the override outlives the hold by this much, then expires by itself


POLL = 0.02


VERIFY_EVERY = 1.0


QUERY_TIMEOUT = 1.0


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
    """Poll the served answer until `done(answer)`: (that answer or None, the last seen).

    An abort ends the wait after one more look, so what already happened is reported."""
    deadline = time.monotonic() + within
    last: Answer | None = None
    while True:
        answer = await ops.query(spec.name, spec.rtype)
        last = answer if answer is not None else last
        if answer is not None and done(answer):
            return answer, answer
        if _stopped(abort) or time.monotonic() >= deadline:
            return None, last
        await _nap(POLL, abort)


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
        if during is None and _stopped(abort):
            report.problem = "aborted: the server is stopping"
        elif during is None:
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
