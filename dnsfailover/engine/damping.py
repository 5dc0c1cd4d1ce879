"""Route-flap damping (RFC 2439 style) for names and endpoints that keep flipping.

Each flip adds a fixed penalty; the penalty halves every `half_life`.  Once it reaches
`suppress` the flapping thing is held on its safer state until the penalty has decayed
below `reuse`.  The penalty is capped so that no suppression outlasts `max_suppress` after
the last flip.  Decay is computed from the time of the last update, so the state is just
(penalties, when) and the result does not depend on how often `decide` runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dnsfailover.config.policy import DampingConfig


@dataclass(frozen=True, slots=True)
class Damped:
    penalties: dict[str, float]  # decayed to `now`, flips added; near-zero ones dropped
    suppressed: tuple[str, ...]
    wake_at: float | None  # when the first suppressed key becomes reusable


def decay(penalty: float, elapsed: float, half_life: float) -> float:
    return penalty * 2 ** (-max(elapsed, 0.0) / half_life)


def update(
    cfg: DampingConfig,
    penalties: Mapping[str, float],
    since: float,
    suppressed: Iterable[str],
    flips: Iterable[str],
    now: float,
) -> Damped:
    """Decay every penalty to `now`, charge each key in `flips`, and say which are held.

    A key stays suppressed (hysteresis) until its penalty is below `reuse`; it becomes
    suppressed when it reaches `suppress`.
    """
    current = {k: decay(p, now - since, cfg.half_life) for k, p in penalties.items()}
    for key in flips:
        current[key] = min(current.get(key, 0.0) + cfg.penalty, cfg.ceiling)
    held = set(suppressed)
    out: list[str] = []
    for key, p in current.items():
        if p >= cfg.suppress or (key in held and p >= cfg.reuse):
            out.append(key)
    wakes = [reuse_at(cfg, current[k], now) for k in out]
    kept = {k: p for k, p in current.items() if p >= 1.0}  # forget what has decayed away
    return Damped(kept, tuple(sorted(out)), min(wakes) if wakes else None)


def reuse_at(cfg: DampingConfig, penalty: float, now: float) -> float:
    """When `penalty` (at `now`) will have decayed just below `reuse`."""
    if penalty < cfg.reuse:
        return now
    return now + cfg.half_life * math.log2(penalty / cfg.reuse) + 1e-6
