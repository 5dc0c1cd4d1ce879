"""Quorum rules: how many of the fresh regions must see a target UP for it to be UP.

`majority` (more than half; a tie keeps the last verdict, so an even split never flaps),
`any` (one region is enough: fail open), `all` (every fresh region: fail closed), an integer
k (at least k regions, as Route 53's healthy-checker threshold), or `NN%` (at least that
share, rounded up, as Route 53's 18%).
"""

from __future__ import annotations

import math

from dnsfailover.model import State

Quorum = str | int


def needed(rule: Quorum, voters: int) -> int:
    """How many UP regions make the target UP, out of `voters` fresh regions."""
    if isinstance(rule, int):
        return rule
    if rule == "majority":
        return voters // 2 + 1
    if rule == "any":
        return 1
    if rule == "all":
        return voters
    if rule.endswith("%"):
        return max(1, math.ceil(int(rule[:-1]) * voters / 100))
    raise ValueError(f"unknown quorum rule {rule!r}")


def verdict(rule: Quorum, ups: int, voters: int) -> State | None:
    """UP or DOWN by `rule`; None for a majority tie (keep the last verdict)."""
    if voters <= 0:
        return None
    if ups >= needed(rule, voters):
        return State.UP
    if rule == "majority" and 2 * ups == voters:
        return None
    return State.DOWN
