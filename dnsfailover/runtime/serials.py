"""SOA serials: time-based, strictly increasing, and never more than MAX_AHEAD ahead of the
clock, so that even a node that lost its state file can pick one above any it served."""

from __future__ import annotations

from dnsfailover.errors import StoreError

SERIAL_MAX = 2**32 - 1
# A serial never runs more than this many seconds ahead of the clock (bursts beyond it wait
# for the clock), so a node that lost its state file starts at now + MAX_AHEAD: above any
# serial it ever served.
MAX_AHEAD = 3600


def next_serial(
    previous: int | None, now: float, started: float | None = None, *, held: bool = True
) -> int:
    """A serial larger than `previous`: seconds since the epoch when that is larger.

    Without a previous serial (a new or lost state file) a zone whose serial others `held`
    (secondaries transfer it) starts at started + MAX_AHEAD + 1, where `started` (default
    `now`) is when this node opened its state, after any earlier run of it stopped serving:
    above anything served before as long as no serial ran further ahead than MAX_AHEAD
    (`serial_wait`).  +1 covers several changes within one second.  A zone nobody holds a
    serial of starts at the clock: nothing can see it go back, and it keeps the whole
    MAX_AHEAD of burst.  Kept below 2**32 (RFC 1982 serial space).
    """
    clock = int(now)
    if previous is None and held:
        candidate = int(now if started is None else started) + MAX_AHEAD + 1
    elif previous is None:
        candidate = clock
    else:
        candidate = max(previous + 1, clock)
    if candidate > SERIAL_MAX:
        raise StoreError(f"SOA serial would exceed {SERIAL_MAX}")
    return candidate


def serial_wait(serial: int, now: float) -> float:
    """Seconds until `serial` is at most MAX_AHEAD ahead of the clock (0: it is now)."""
    return max(0.0, serial - MAX_AHEAD - now)
