"""dnsfailover.engine."""
