"""A running node: where the stages are put together.

Owns: `node.py` (the one composition root: lifecycle, engine loop, reload), `publish.py`
(the only writer of serials and of what is served), `control.py` (the override book),
`serving.py` (the DNS server, transfers, NOTIFY, workers), `cluster_link.py` (the node's
side of the cluster), `store.py` (SQLite) and `oneshot.py` (`plan` / `apply`).
May import: every package but `cli/`.  Nothing but `cli/` imports it.
"""
