"""dnsfailover.provider."""
