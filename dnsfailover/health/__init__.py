"""Endpoint health: hysteresis per target and region, then a vote of the regions.

Owns: the tracker (UNKNOWN → UP/DOWN with rise/fall, stale and isolated regions) and the
quorum rules.
May import: config, provider and the ground floor; no I/O (checked in CI).
"""
