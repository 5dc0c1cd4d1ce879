"""The etcd layer of a cluster: leases, election with a fenced decision publish, region
reports and beats, overrides; static stability through etcd outages.

Owns: the etcd client and node (`node.py`, `etcd.py`), the key layout (`keys.py`), the
watched view (`view.py`), the outbox, and the generic dataclass codec (`codec.py`).
May import: the layers below (alerts, server, checks, engine, health, config, provider,
ground floor).  The node's side of it is `runtime/cluster_link.py`.
"""
