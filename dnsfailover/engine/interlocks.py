"""The circuit breaker: stop and alert instead of failing over en masse.

When more than `down_pct` % of all endpoints turn DOWN between one decision and the next,
the likelier cause is on the checkers' side (their network, a broken check, an expired
certificate in the probe), and moving every name at once would turn a monitoring problem
into an outage.  The engine then keeps every name on its previous answer, says why, and
stays frozen until the share of newly-down endpoints falls back to `down_pct` or below, or
an operator forces (a forced override releases its names; `reset_breaker` all of them).

"Newly down" is measured against the last *unfrozen* decision, kept per name in
`NameState.down`, so a freeze does not wear off just because it lasted two decisions.
"""

from __future__ import annotations

from collections.abc import Mapping

from dnsfailover.config.schema import Config
from dnsfailover.engine.index import index
from dnsfailover.engine.values import EngineState
from dnsfailover.model import State


def tripped(config: Config, health: Mapping[str, State], previous: EngineState) -> str | None:
    """Why the breaker holds every answer now, or None."""
    cb = config.policy.circuit_breaker
    if cb is None:
        return None
    ix = index(config)
    keys, total = ix.keys, ix.all_keys
    if len(total) < cb.min_endpoints:
        return None
    known = [n for n in keys if (p := previous.names.get(n)) is not None and p.active is not None]
    if not known:
        return None  # a first decision has nothing to compare with
    baseline = set().union(*(previous.names[n].down for n in known))
    compared = set().union(*(keys[n] for n in known))
    newly = sorted(k for k in compared - baseline if health.get(k) is State.DOWN)
    pct = 100 * len(newly) / len(total)
    if pct <= cb.down_pct:
        return None
    shown = ", ".join(newly[:5]) + (", ..." if len(newly) > 5 else "")
    return (
        f"circuit breaker: {len(newly)}/{len(total)} endpoints ({pct:.0f}%) went down at once, "
        f"more than down_pct {cb.down_pct:g}% ({shown}); likely a checker-side problem: "
        f"every name is frozen on its previous answer until the share recovers or an "
        f"operator forces"
    )
