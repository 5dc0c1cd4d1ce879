"""Drills as values: what one drill targets (`DrillSpec`, shared by `dnsfailover drill` and
the scheduler) and what it found (`DrillReport`).  No I/O here; the procedure is
`dnsfailover.drills.procedure.run_drill`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnsfailover.config.drill_targets import drill_target
from dnsfailover.config.schema import ActivePassive, Config

Answer = tuple[str, ...]  # the values of a served RRset, sorted

MARGIN = 10.0  # on top of hold_down and detection when waiting for the way back


@dataclass(frozen=True, slots=True)
class DrillSpec:
    """What one drill does: force `tier` of `name` down for `duration` seconds."""

    origin: str
    name: str
    tier: str
    rtype: str
    addresses: frozenset[str]  # the drilled tier's endpoints
    duration: float
    failback: str
    recover_within: float  # seconds from removing the override to being back
    reason: str

    @classmethod
    def of(
        cls, config: Config, tier: str, name: str | None, duration: float, reason: str
    ) -> DrillSpec:
        """:raises DrillTargetError: the tier or name is not in `config`."""
        origin, absolute, record = drill_target(config, tier, name)
        (chosen,) = [t for t in record.tiers if t.name == tier]
        return cls(
            origin=origin,
            name=absolute,
            tier=tier,
            rtype=record.type,
            addresses=frozenset(e.address for e in chosen.endpoints),
            duration=duration,
            failback=record.failback,
            recover_within=recovery_bound(config, record),
            reason=reason.strip() or "failover drill",
        )


def recovery_bound(config: Config, record: ActivePassive) -> float:
    """How long the way back may take: the failback policy's own wait (none for manual,
    which the drill requests) plus detection, should the tier really fail meanwhile."""
    wait = {"manual": 0.0, "auto": record.hold_down}.get(
        record.failback, record.hold_down + record.staged.hold
    )
    return wait + config.checks[record.check].detection_time + MARGIN


@dataclass(slots=True)
class DrillReport:
    name: str
    tier: str
    failback: str
    duration: float
    before: Answer
    during: Answer = ()
    after: Answer = ()
    serial_before: int | None = None
    serial_during: int | None = None
    serial_after: int | None = None
    failover_time: float | None = None
    recovery_time: float | None = None
    verified: int = 0  # queries during the hold that saw the answer off the tier
    unanswered: int = 0  # queries during the hold that got no reply
    override: str | None = None
    notes: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def moved(self) -> str:
        return (
            f"failed over in {_secs(self.failover_time)} ({show(self.before)} -> "
            f"{show(self.during)}, serial {self.serial_before} -> {self.serial_during})"
        )

    def summary(self) -> str:
        """One line for logs and the history."""
        head = f"drill {self.name} tier {self.tier} for {self.duration:g}s"
        if not self.ok:
            return f"{head} FAILED: {self.problem}"
        return (
            f"{head} passed: {self.moved()}, held (verified {self.verified}x), recovered in "
            f"{_secs(self.recovery_time)} ({show(self.after)}, serial {self.serial_after})"
        )


def show(answer: Answer | None) -> str:
    if answer is None:
        return "(no reply)"
    return ", ".join(answer) or "(empty)"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"
