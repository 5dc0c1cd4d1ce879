"""The embedded authoritative DNS server: immutable zone snapshots served over UDP and TCP,
with the answer fast path, EDNS, RRL, zone transfers, NOTIFY and worker processes.

Owns: snapshots and lookups (`zone.py`, `lookup.py`, steered names: `steered.py`), wire
handling (`wire.py`, `fast.py`, `replay.py`, `relearn.py`; the C hit path `_hits.c`),
transports (`dns.py`, `_mmsg.c`, `workers.py` and `worker_process.py`), `xfr.py`,
`notify.py`, `tsig.py`, and the `embedded` provider (`embedded.py`).
May import: the layers below (engine, health, config, provider, ground floor); not the
runtime, the API, the checks or the alerts.
"""

from dnsfailover.rdata import ZoneBuildError
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.zone import ZoneSnapshot

__all__ = ["DnsServer", "ZoneBuildError", "ZoneSnapshot"]
