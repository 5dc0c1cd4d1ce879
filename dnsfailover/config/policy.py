"""The failover policy's config: the top-level `policy:` section and the per-record keys
the engine's rules read (see dnsfailover/engine/)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from dnsfailover.fields import Duration, Model, Ttl

Capacity = Annotated[float, Field(ge=0)]
OverCapacity = Literal["serve_anyway", "fallback"]
PolicyMode = Literal["live", "shadow"]


def _percent(value: Any) -> float:
    """`25%` or a bare number of percent (`25`) → 25.0."""
    if isinstance(value, bool):
        raise ValueError("expected a share such as 25%")
    text = str(value).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%?", text)
    if m is None:
        raise ValueError(f"expected a share such as 25%, got {value!r}")
    pct = float(m.group(1))
    if not 0 < pct < 100:
        raise ValueError(f"share {value!r} must be between 0% and 100% (exclusive)")
    return pct


class Staged(Model):
    """`failback: staged`: send `share` of the traffic back first, all of it after `hold`."""

    share: Annotated[float, BeforeValidator(_percent)] = 25.0
    hold: Duration = 60.0


class MaxFailovers(Model):
    """At most `count` tier changes of one name within `window`; then it stays put."""

    count: Annotated[int, Field(ge=1)] = 3
    window: Duration = 600.0


def _switch(value: Any) -> Any:
    """`damping: true` (or `on`) means the defaults; `false` turns damping off."""
    if value is True or (isinstance(value, str) and value.strip().lower() in ("on", "true")):
        return {}
    return value


class DampingConfig(Model):
    """BGP-style flap damping (RFC 2439): each flip adds `penalty`, which halves every
    `half_life`; at `suppress` the flapping thing is held on its safer state until the
    penalty decays below `reuse`, and never longer than `max_suppress` after the last flip."""

    enabled: bool = True
    penalty: Annotated[float, Field(gt=0)] = 1000.0
    suppress: Annotated[float, Field(gt=0)] = 2000.0
    reuse: Annotated[float, Field(gt=0)] = 750.0
    half_life: Duration = 300.0
    max_suppress: Duration = 1800.0

    @model_validator(mode="before")
    @classmethod
    def _off(cls, data: Any) -> Any:
        if data is False or (isinstance(data, str) and data.strip().lower() in ("off", "false")):
            return {"enabled": False}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> DampingConfig:
        if self.reuse >= self.suppress:
            raise ValueError(f"reuse ({self.reuse:g}) must be below suppress ({self.suppress:g})")
        if self.half_life <= 0:
            raise ValueError("half_life must be greater than zero")
        if self.max_suppress < self.half_life:
            raise ValueError("max_suppress must be at least half_life")
        return self

    @property
    def ceiling(self) -> float:
        """The largest penalty kept: it decays to `reuse` in exactly `max_suppress`."""
        return float(self.reuse * 2 ** (self.max_suppress / self.half_life))


Damping = Annotated[DampingConfig, BeforeValidator(_switch)]


class CircuitBreaker(Model):
    """Freeze every answer when more than `down_pct` % of all endpoints go DOWN at once.

    So many endpoints failing together is more likely a checker-side problem (its network,
    a bad check) than a real outage; mass failover would then do harm, so the engine keeps
    the previous answers and alerts instead.  Tiny deployments (fewer than `min_endpoints`
    endpoints) are exempt, since one outage there is already a large share.
    """

    down_pct: Annotated[float, Field(gt=0, le=100)] = 50.0
    min_endpoints: Annotated[int, Field(ge=1)] = 4


class PolicyConfig(Model):
    """Global policy: the circuit breaker, and defaults for records that set nothing."""

    mode: PolicyMode = "live"
    circuit_breaker: CircuitBreaker | None = None
    damping: Damping | None = None
    degraded_ttl: Ttl | None = None
    max_failovers: MaxFailovers | None = None
