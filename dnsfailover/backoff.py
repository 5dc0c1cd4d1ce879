"""Exponential backoff with full jitter, shared by the core and every provider."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Sleep U(0, min(cap, base * 2**attempt)) before retry number `attempt` (from 0).

    Full jitter spreads the retries of many clients hit by the same outage, so a recovering
    API is not met by a synchronised wave.
    """

    base: float
    cap: float
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, min(self.cap, self.base * 2.0 ** min(attempt, 30)))
