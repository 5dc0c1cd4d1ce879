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
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from dnsfailover.fields import Duration, Model, parse_duration

MIN_EVERY = 3600.0  # a drill moves real traffic: not more often than hourly


DAY = 86400.0


_DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(d|w)\s*$")


_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def parse_period(value: Any) -> float:
    """Seconds from a duration as `parse_duration` reads it, or `7d`, `2w`."""
    seconds = value
    if isinstance(value, str) and (m := _DAYS.match(value)):
        seconds = float(m.group(1)) * (DAY if m.group(2) == "d" else 7 * DAY)
    try:
        return parse_duration(seconds)  # finite, at most 366 days
    except ValueError as e:
        if "366 days" in str(e):
            raise
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
