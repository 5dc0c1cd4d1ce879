"""Drills as values: `drills:` in the config (drills the server runs on a schedule), what
one drill targets (`DrillSpec`, shared by `dnsfailover drill` and the scheduler) and what it
found (`DrillReport`).  No I/O here; the procedure is `dnsfailover.drills.run_drill`.

```yaml
drills:
  - {name: api, tier: primary, every: 7d, for: 5m, at: "03:00"}
```

A drill forces `tier` of the active-passive record `name` down for `for`, checks that the
served answers moved off it and came back, and records all of it in the history.  Drills
run at fixed wall-clock slots: every multiple of `every` since the unix epoch (UTC), plus
`at` (the offset into each period: a time of day when `every` is whole days).  A slot missed
while the server was down is not made up; the next one runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from dnsfailover.fields import Duration, Model, absolute_name, parse_duration

if TYPE_CHECKING:  # schema.py imports DrillConfig from here
    from dnsfailover.schema import ActivePassive, Config

Answer = tuple[str, ...]  # the values of a served RRset, sorted

MIN_EVERY = 3600.0  # a drill moves real traffic: not more often than hourly
DAY = 86400.0
MARGIN = 10.0  # on top of hold_down and detection when waiting for the way back

_DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(d|w)\s*$")
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def parse_period(value: Any) -> float:
    """Seconds from a duration as `parse_duration` reads it, or `7d`, `2w`."""
    if isinstance(value, str) and (m := _DAYS.match(value)):
        return float(m.group(1)) * (DAY if m.group(2) == "d" else 7 * DAY)
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"expected a period such as 12h, 1d or 7d, got {value!r}") from None


def parse_clock(value: Any) -> float:
    """Seconds after midnight from `"HH:MM"` (UTC)."""
    if isinstance(value, str) and (m := _CLOCK.match(value)):
        hours, minutes = int(m.group(1)), int(m.group(2))
        if hours < 24 and minutes < 60:
            return float(hours * 3600 + minutes * 60)
    # YAML 1.1 reads an unquoted 03:00 as the base-60 number 180: ask for quotes.
    raise ValueError(f'expected a UTC time of day such as "03:00" (quoted), got {value!r}')


Period = Annotated[float, BeforeValidator(parse_period)]
ClockTime = Annotated[float, BeforeValidator(parse_clock)]


class DrillConfig(Model):
    """One scheduled drill."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[str, Field(min_length=1)]  # relative to its zone (`api`) or absolute
    tier: Annotated[str, Field(min_length=1)]
    every: Period
    for_: Duration = Field(default=300.0, alias="for")
    at: ClockTime | None = None  # offset into each period, UTC; default 00:00

    @field_validator("every")
    @classmethod
    def _every(cls, value: float, info: ValidationInfo) -> float:
        # Tests pass a shorter minimum in the validation context; a config file cannot.
        context = info.context if isinstance(info.context, dict) else {}
        least = float(context.get("min_every", MIN_EVERY))
        if value < least:
            raise ValueError(f"every must be at least {least:g}s (1h): a drill moves real traffic")
        return value

    @field_validator("for_")
    @classmethod
    def _for(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("for must be longer than zero")
        return value

    def problems(self) -> list[tuple[str, str]]:
        """Rules across fields, as (key, message): what a field validator cannot see."""
        found = []
        if self.for_ >= self.every:
            found.append(("for", f"for ({self.for_:g}s) must be shorter than every"))
        if self.at is not None and self.at >= self.every:
            found.append(("at", f"at must fall within the period (every {self.every:g}s)"))
        return found

    @property
    def key(self) -> str:
        return f"{self.name}/{self.tier}"

    def next_slot(self, now: float) -> float:
        """The first slot strictly after `now` (unix time)."""
        offset = self.at or 0.0
        base = (now - offset) // self.every * self.every + offset
        return base + self.every if base <= now else base


class DrillTargetError(ValueError):
    """A drill names what is not there; the message says what is."""


def drill_target(
    config: Config, tier: str, name: str | None = None
) -> tuple[str, str, ActivePassive]:
    """(zone origin, absolute name, record) of the active-passive record whose tier `tier`
    a drill forces down; `name` picks one when several have such a tier.

    :raises DrillTargetError: nothing matches, or several do and `name` does not choose.
    """
    from dnsfailover.schema import ActivePassive

    records = [(o, n, r) for o, n, r in config.managed() if isinstance(r, ActivePassive)]
    if name is not None:
        wanted = name.strip().lower()
        chosen = [
            (o, n, r)
            for o, n, r in records
            if n in (wanted, f"{wanted}.", absolute_name(wanted, o)) or n.split(".")[0] == wanted
        ]
        if not chosen:
            known = ", ".join(n for _o, n, _r in records) or "none"
            raise DrillTargetError(
                f"{name!r} is not an active-passive managed name (active-passive: {known})"
            )
        if len(chosen) > 1:
            listed = ", ".join(n for _o, n, _r in chosen)
            raise DrillTargetError(f"{name!r} is ambiguous: it could be {listed}")
        records = chosen
    having = [(o, n, r) for o, n, r in records if tier in (t.name for t in r.tiers)]
    if not having:
        tiers = ", ".join(sorted({f"{n} {t.name}" for _o, n, r in records for t in r.tiers}))
        where = f"{records[0][1]} has no tier" if name is not None else "no name has a tier"
        raise DrillTargetError(f"{where} {tier!r} (tiers: {tiers or 'none'})")
    if len(having) > 1:
        listed = ", ".join(n for _o, n, _r in having)
        raise DrillTargetError(f"several names have a tier {tier!r} ({listed}): pick one with name")
    return having[0]


def drill_problems(config: Config, drills: tuple[DrillConfig, ...]) -> list[tuple[Any, str]]:
    """What is wrong with `drills` against the rest of `config`, as (YAML path, message)
    for the loader's file:line problems."""
    found: list[tuple[Any, str]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, drill in enumerate(drills):
        found += [(("drills", i, key), message) for key, message in drill.problems()]
        try:
            _origin, name, _record = drill_target(config, drill.tier, drill.name)
        except DrillTargetError as e:
            found.append((("drills", i, "tier" if "tier" in str(e) else "name"), str(e)))
            continue
        if (name, drill.tier) in seen:
            first = seen[(name, drill.tier)]
            found.append((("drills", i), f"the same drill as drills[{first}]"))
        seen.setdefault((name, drill.tier), i)
    return found


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
