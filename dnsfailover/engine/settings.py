"""A record's effective policy: its own setting, else the `policy:` section's default."""

from __future__ import annotations

from dataclasses import dataclass

from dnsfailover.config.policy import DampingConfig, MaxFailovers
from dnsfailover.config.schema import ActiveActive, ActivePassive, Config

FailoverRecord = ActiveActive | ActivePassive


@dataclass(frozen=True, slots=True)
class Settings:
    damping: DampingConfig | None  # None: off
    degraded_ttl: int | None
    max_failovers: MaxFailovers | None
    shadow: bool


def settings(config: Config, record: FailoverRecord) -> Settings:
    g = config.policy
    damping = record.damping if record.damping is not None else g.damping
    return Settings(
        damping if damping is not None and damping.enabled else None,
        record.degraded_ttl if record.degraded_ttl is not None else g.degraded_ttl,
        record.max_failovers if record.max_failovers is not None else g.max_failovers,
        (record.mode or g.mode) == "shadow",
    )
