"""RFC 2136 provider for dnsfailover: signed dynamic updates to BIND, Knot or PowerDNS."""
