"""dnsfailover.cli."""
