"""What a probe process tells the node: the results that can matter, and counts of all.

A node probing 1,000 endpoints every 100 ms makes 10,000 probes a second; nearly all are
one more success of a target that is UP.  The probe process (`process.py`) sends the node
only the results its health tracker could act on, and counts everything else:

- every failure, every probe that could not run, and the first result after one that
  could not run (it clears the "cannot probe" problem);
- every success until `rise` successes in a row: the tracker needs exactly those to bring a
  target UP, and after them it is UP (its first result decides at once, and `rise` in a row
  bring it UP from anything else), so one more success changes nothing but the latency and
  detail the status page shows;
- one success per `refresh` seconds anyway, so that latency and detail stay recent.

Sending more than this is always safe; `tests/test_probe_process.py` checks that a tracker fed
only what `Forwarder.keep` passes goes through the same states as one fed everything.

`Tally` counts every probe per target (result, latency histogram) for `/metrics`; the node
adds what each `drain` returns.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from dnsfailover.model import Observation

PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the probe latency histogram; one more bucket for +Inf."""


@dataclass(slots=True)
class _Run:
    rise: int
    ok_run: int = 0
    last_sent: float = float("-inf")
    after_unknown: bool = False


class Forwarder:
    """Decides, per finished probe, whether the node must see it (see the module doc).

    :param refresh: send a success at least this often per target (seconds, monotonic).
    """

    def __init__(self, refresh: float) -> None:
        self.refresh = refresh
        self._runs: dict[str, _Run] = {}

    def track(self, key: str, rise: int) -> None:
        """Start (or restart: a changed check) following `key` from no results."""
        self._runs[key] = _Run(max(1, rise))

    def forget(self, key: str) -> None:
        self._runs.pop(key, None)

    def keep(self, obs: Observation, now: float) -> bool:
        """Whether to send `obs` (taken at monotonic time `now`)."""
        run = self._runs.get(obs.target)
        if run is None:
            return True
        if obs.unknown:
            run.after_unknown = True  # says nothing of the target: the run goes on
            return True
        if not obs.ok:
            run.ok_run = 0
        else:
            run.ok_run += 1
            if (
                run.ok_run > run.rise
                and not run.after_unknown
                and now - run.last_sent < self.refresh
            ):
                return False
        run.after_unknown = False
        run.last_sent = now
        return True


@dataclass(slots=True)
class Counts:
    """One target's probes (since the last drain, in a probe process)."""

    ok: int = 0
    failed: int = 0
    unknown: int = 0  # could not run: no latency either
    total_seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(PROBE_BUCKETS) + 1))

    def add(self, obs: Observation) -> None:
        if obs.unknown:
            self.unknown += 1
            return
        if obs.ok:
            self.ok += 1
        else:
            self.failed += 1
        self.total_seconds += obs.latency
        self.buckets[bisect_left(PROBE_BUCKETS, obs.latency)] += 1

    def merge(self, other: Counts) -> None:
        self.ok += other.ok
        self.failed += other.failed
        self.unknown += other.unknown
        self.total_seconds += other.total_seconds
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


class Tally:
    """Probe counts per target, handed over (and reset) by `drain`."""

    def __init__(self) -> None:
        self._counts: dict[str, Counts] = {}

    def add(self, obs: Observation) -> None:
        counts = self._counts.get(obs.target)
        if counts is None:
            counts = self._counts[obs.target] = Counts()
        counts.add(obs)

    def drain(self) -> dict[str, Counts]:
        counts, self._counts = self._counts, {}
        return counts
