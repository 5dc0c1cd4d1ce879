"""Health probes and their scheduler: one module per probe type, `make_probe` picks one for
a check, `scheduler.ProbeScheduler` runs them (APScheduler) and reports `Observation`s.

Owns: http/https, tcp and dns probes, their failure details, the probe schedule.
May import: config, provider and the ground floor; nothing that decides or serves.
"""

from dnsfailover.checks.base import Probe, make_probe
from dnsfailover.checks.http import make_session

__all__ = ["Probe", "make_probe", "make_session"]
