"""dnsfailover: DNS-based global failover."""

__version__ = "0.1.0"
