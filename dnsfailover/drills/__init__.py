"""Failover drills: force a tier down through the real override path, verify in the served
DNS that the answers move off it and come back, and measure both.

Owns: the procedure (`procedure.py`, shared by `dnsfailover drill` and the scheduler), what
a drill targets and found (`spec.py`), the in-server scheduler (`scheduler.py`).
May import: the layers below (alerts, server, checks, engine, health, config, provider,
ground floor).  It sees the node only through `scheduler.DrillHost`.
"""
