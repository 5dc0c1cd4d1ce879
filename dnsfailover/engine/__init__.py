"""The failover engine: pure functions from config + health + previous state to answers.

Owns: `decide` and every policy rule (tiers and failback, capacity, damping, interlocks and
the circuit breaker, overrides, answers and TTLs), the values it remembers and returns
(`values.py`), which overrides a decision ends (`endings.py`), which interlock edges it
tells (`edges.py`), and the what-if (`simulate.py`).  No I/O, no clock: `now` is a
parameter, so every rule is table-tested.
May import: health, config, provider (values only) and the ground floor; no event loop,
socket, database or network client (checked in CI).
"""
