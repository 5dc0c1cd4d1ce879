"""dnsfailover.config."""
