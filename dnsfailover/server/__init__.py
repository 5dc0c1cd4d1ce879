"""The embedded authoritative DNS server: immutable zone snapshots served over UDP and TCP."""

from dnsfailover.rdata import ZoneBuildError
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.zone import ZoneSnapshot

__all__ = ["DnsServer", "ZoneBuildError", "ZoneSnapshot"]
