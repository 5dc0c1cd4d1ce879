"""dnsfailover.drills."""
