"""Record sets, from any source, as one zone of a config.

What a config cannot hold (a type dnsfailover does not serve, DNSSEC records, a value its
parser refuses, a Route 53 alias ...) is set apart as `Skipped`, each record set with its
reason: the command warns about every one and lists them in the YAML it writes, so nothing
is lost without a word.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from dnsfailover.config.schema import STATIC_TYPES
from dnsfailover.errors import DnsFailoverError
from dnsfailover.fields import in_zone
from dnsfailover.rdata import ZoneBuildError, name_labels, parse_rdata

#: signed zones carry these; the embedded server serves zones unsigned
DNSSEC_TYPES = frozenset(
    {"RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "DS", "CDS", "CDNSKEY", "ZONEMD"}
)
_TYPE_ORDER = {t: i for i, t in enumerate(STATIC_TYPES)}


class ImportFailed(DnsFailoverError):
    """The zone cannot be imported (the source cannot be read, or holds no usable zone)."""


@dataclass(frozen=True, slots=True)
class SourceSet:
    """One record set as a source has it: the owner absolute, the values in presentation
    format with absolute names (`10 mail.example.com.`)."""

    name: str
    rtype: str
    ttl: int
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record set left out, and why; `detail` stands for its values when it has none
    (a Route 53 alias)."""

    name: str
    rtype: str
    ttl: int
    values: tuple[str, ...]
    why: str
    detail: str = ""

    def warning(self) -> str:
        count = len(self.values)
        what = f"{count} record{'' if count == 1 else 's'}" if count else self.detail
        return f"not imported: {self.name} {self.rtype} ({what}): {self.why}"

    def lines(self) -> list[str]:
        """The set in zone-file form, one line per record, for the YAML's comments."""
        head = f"{self.name} {self.ttl} IN {self.rtype}"
        return [f"{head} {v}" for v in self.values] or [f"{head} ; {self.detail}"]


@dataclass(frozen=True, slots=True)
class ImportedSet:
    """A record set as `records:` holds it."""

    rtype: str
    ttl: int
    values: tuple[str, ...]


@dataclass
class ImportedZone:
    """One zone, ready to be written as config: `soa`, `nameservers`, `records` by label."""

    origin: str
    soa: dict[str, str | int] | None = None
    nameservers: tuple[str, ...] = ()
    ns_ttl: int = 3600
    records: dict[str, list[ImportedSet]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings that are not a record's

    @property
    def set_count(self) -> int:
        """Record sets imported, the apex SOA and NS included."""
        apex = (self.soa is not None) + bool(self.nameservers)
        return apex + sum(len(sets) for sets in self.records.values())

    def warnings(self) -> list[str]:
        return self.notes + [s.warning() for s in self.skipped]


def build(origin: str, sets: Iterable[SourceSet], skipped: Iterable[Skipped] = ()) -> ImportedZone:
    """The zone `origin` from a source's record sets (`skipped`: what the source itself set
    apart, such as Route 53 aliases).

    :raises ImportFailed: when no apex NS record is there (an embedded zone needs them).
    """
    zone = ImportedZone(origin, skipped=list(skipped))
    kept: list[tuple[str, ImportedSet]] = []
    for s in sets:
        name = s.name.lower()
        why = _why_not(s, name, origin)
        if why is not None:
            zone.skipped.append(Skipped(name, s.rtype, s.ttl, s.values, why))
        elif s.rtype == "SOA":
            zone.soa = _soa(s)
        elif s.rtype == "NS" and name == origin:
            zone.nameservers = tuple(sorted(v.lower() for v in s.values))
            zone.ns_ttl = s.ttl
        else:
            kept.append((name, ImportedSet(s.rtype, s.ttl, _sorted(s.rtype, s.values))))
    cnames = {name for name, rs in kept if rs.rtype == "CNAME"}
    kept.sort(key=lambda item: (_order(item[0]), _TYPE_ORDER.get(item[1].rtype, 99)))
    for name, rs in kept:
        if name in cnames and rs.rtype != "CNAME":
            why = "a CNAME is at this name too, and a CNAME must be alone (RFC 1034 §3.6.2)"
            zone.skipped.append(Skipped(name, rs.rtype, rs.ttl, rs.values, why))
            continue
        zone.records.setdefault(label(name, origin), []).append(rs)
    if not zone.nameservers:
        raise ImportFailed(
            f"the source has no NS records at {origin}: an embedded zone needs its nameservers"
        )
    if zone.soa is None:
        zone.soa = {"mname": zone.nameservers[0], "rname": f"hostmaster.{origin}"}
        zone.notes.append(
            f"the source has no SOA at {origin}: soa is made up "
            f"(mname {zone.nameservers[0]}, rname hostmaster.{origin}); check it"
        )
    zone.skipped.sort(key=lambda s: (_order(s.name), s.rtype))
    return zone


def _sorted(rtype: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """Values in a stable order (a source's own, such as a server's rotation, is none)."""
    if rtype in ("A", "AAAA"):
        return tuple(sorted(set(values), key=lambda v: ipaddress.ip_address(v)))
    return tuple(sorted(set(values)))


def label(name: str, origin: str) -> str:
    """The key of `name` under `records:`: `@` for the apex, else relative to `origin`."""
    if name == origin:
        return "@"
    return name[: -len(origin) - 1] if origin != "." else name[:-1]


def _order(name: str) -> tuple[bytes, ...]:
    """Canonical DNS order (RFC 4034 §6.1): by label from the right."""
    try:
        return tuple(reversed(name_labels(name)))
    except ZoneBuildError:
        return ()


def _why_not(s: SourceSet, name: str, origin: str) -> str | None:
    """Why the set `s` (at `name`, lower case) cannot be in the zone's config, or None."""
    try:
        name_labels(name)
    except ZoneBuildError as e:
        return str(e)
    if not in_zone(name, origin):
        return f"{name} is outside the zone {origin}"
    if s.rtype in DNSSEC_TYPES:
        return "DNSSEC records are not imported: dnsfailover serves its zones unsigned"
    if s.rtype == "SOA":
        return None if name == origin else "an SOA below the zone apex"
    if s.rtype not in STATIC_TYPES:
        return f"type {s.rtype} is not one dnsfailover serves ({', '.join(STATIC_TYPES)})"
    if not s.values:
        return "the set has no records"
    if s.rtype == "CNAME" and name == origin:
        return "a CNAME cannot be at the zone apex"
    if s.rtype == "CNAME" and len(s.values) > 1:
        return "a CNAME has exactly one value"
    if s.rtype == "NS" and name.startswith("*."):
        return "a wildcard name cannot be a delegation"
    for value in s.values:
        try:
            parse_rdata(s.rtype, value)
        except (ZoneBuildError, ValueError) as e:
            return f"value {value!r}: {e}"
    return None


def _soa(s: SourceSet) -> dict[str, str | int]:
    mname, rname, _serial, refresh, retry, expire, minimum = s.values[0].split()
    return {
        "mname": mname.lower(),
        "rname": rname.lower(),
        "refresh": int(refresh),
        "retry": int(retry),
        "expire": int(expire),
        "minimum": int(minimum),
        "ttl": s.ttl,
    }
