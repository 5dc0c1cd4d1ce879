"""Amazon Route 53 provider for dnsfailover."""
