"""dnsfailover.health."""
