"""dnsfailover.runtime."""
