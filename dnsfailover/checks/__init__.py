"""Health probes: one module per probe type, `make_probe` picks one for a check."""

from dnsfailover.checks.base import Probe, make_probe
from dnsfailover.checks.http import make_session

__all__ = ["Probe", "make_probe", "make_session"]
