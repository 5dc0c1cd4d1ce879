"""The config schema: frozen pydantic models, one per YAML mapping.

`dnsfailover.config.load()` turns YAML into these and maps every validation error back to
its file and line.  Field-level rules live here; rules that span several parts of the
config (a record naming an unknown check, a name outside its zone) live in `config.load`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    model_validator,
)

from dnsfailover.config.alerts import NotificationsConfig
from dnsfailover.config.api import ApiConfig
from dnsfailover.config.checks import CheckConfig, DnsQueryType, Quorum, StatusRange, _quorum  # noqa: F401 (re-exported)
from dnsfailover.config.cluster import ClusterConfig, RegionConfig, regions_shorthand
from dnsfailover.config.dnssec import DnssecConfig
from dnsfailover.config.drills import DrillConfig
from dnsfailover.config.geo import Bias, Coordinates, GeoConfig, SteeringConfig
from dnsfailover.config.policy import (
    Capacity,
    Damping,
    MaxFailovers,
    OverCapacity,
    PolicyConfig,
    PolicyMode,
    Staged,
)
from dnsfailover.config.zonefile import FileRecord
from dnsfailover.fields import (
    Duration,
    Fqdn,
    IPAddress,
    Model,
    Port,
    Ttl,
    absolute_name,
)
from dnsfailover.model import RecordSet, Target


class Endpoint(Model):
    """One answer of a failover record; `check_address`/`check_port` say where to probe it."""

    address: IPAddress
    weight: Annotated[int, Field(ge=0, le=255)] = 1
    # What it can carry, in the unit of its record's `load` (e.g. requests/s); None: unbounded.
    capacity: Capacity | None = None
    check_address: IPAddress | None = None
    check_port: Port | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"address": data} if isinstance(data, str) else data

    def target(self, check_name: str, check: CheckConfig) -> Target:
        return Target(
            check=check_name,
            address=self.check_address or self.address,
            port=self.check_port or check.effective_port,
        )


class Tier(Model):
    name: Annotated[str, Field(min_length=1)]
    endpoints: Annotated[tuple[Endpoint, ...], Field(min_length=1)]
    min_healthy: Annotated[int, Field(ge=1)] = 1
    # Total the tier can carry; shared evenly by endpoints that declare no capacity of their own.
    capacity: Capacity | None = None
    # where the tier is (latitude, longitude), for `steering: {by: proximity}`, and its bias
    coordinates: Coordinates | None = None
    bias: Bias = 0.0

    @model_validator(mode="after")
    def _enough(self) -> Tier:
        if self.min_healthy > len(self.endpoints):
            raise ValueError(
                f"min_healthy {self.min_healthy} is more than the {len(self.endpoints)} endpoints"
            )
        return self


AllDown = Literal["serve_all", "serve_none", "fallback"]


class _FailoverBase(Model):
    type: Literal["A", "AAAA"] = "A"
    ttl: Ttl = 30
    check: str
    all_down: AllDown = "serve_all"
    fallback: tuple[IPAddress, ...] = ()
    quorum: Quorum | None = None  # overrides the check's quorum for this record's endpoints
    # policy (dnsfailover.policy): None means "the `policy:` section's default"
    load: Capacity | None = None  # expected load, in the unit of the endpoints' capacity
    over_capacity: OverCapacity = "serve_anyway"
    max_failovers: MaxFailovers | None = None
    damping: Damping | None = None
    degraded_ttl: Ttl | None = None
    mode: PolicyMode | None = None
    # per-client tier order (active-passive only; see dnsfailover.config.geo)
    steering: SteeringConfig | None = None

    def _check_families(self, addresses: list[str]) -> None:
        want = 4 if self.type == "A" else 6
        for address in addresses:
            if ipaddress.ip_address(address).version != want:
                raise ValueError(
                    f"{address} is not an IPv{want} address, as type {self.type} needs"
                )
        if self.all_down == "fallback" and not self.fallback:
            raise ValueError("all_down: fallback needs a non-empty fallback list")
        if self.over_capacity == "fallback" and not self.fallback:
            raise ValueError("over_capacity: fallback needs a non-empty fallback list")


class ActiveActive(_FailoverBase):
    """Answer every healthy endpoint; below `min_healthy`, `all_down` applies."""

    policy: Literal["active-active"]
    endpoints: Annotated[tuple[Endpoint, ...], Field(min_length=1)]
    min_healthy: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _coherent(self) -> ActiveActive:
        if self.steering is not None:
            raise ValueError(
                "steering orders tiers (regions) per client: use policy: active-passive "
                "with a tier per region"
            )
        self._check_families([e.address for e in self.endpoints] + list(self.fallback))
        if self.min_healthy > len(self.endpoints):
            raise ValueError(
                f"min_healthy {self.min_healthy} is more than the {len(self.endpoints)} endpoints"
            )
        return self

    @functools.cached_property
    def tiers(self) -> tuple[Tier, ...]:
        """The record seen as a single tier, so the engine treats both policies alike
        (made once: the engine asks for it at every decision)."""
        return (Tier(name="all", endpoints=self.endpoints, min_healthy=self.min_healthy),)


class ActivePassive(_FailoverBase):
    """Serve the first tier that meets its `min_healthy`; fail back per `failback`."""

    policy: Literal["active-passive"]
    tiers: Annotated[tuple[Tier, ...], Field(min_length=2)]
    failback: Literal["auto", "manual", "staged"] = "auto"
    hold_down: Duration = 60.0
    staged: Staged = Field(default_factory=Staged)  # used by `failback: staged`

    @model_validator(mode="after")
    def _coherent(self) -> ActivePassive:
        addresses = [e.address for t in self.tiers for e in t.endpoints]
        self._check_families(addresses + list(self.fallback))
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        return self


T = TypeVar("T")

FailoverRecord = Annotated[ActiveActive | ActivePassive, Field(discriminator="policy")]

STATIC_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR", "DS")


class StaticRecord(Model):
    type: Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR", "DS"]
    ttl: Ttl = 3600
    values: Annotated[tuple[str, ...], Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _single_value(cls, data: Any) -> Any:
        if isinstance(data, dict) and "value" in data and "values" not in data:
            data = dict(data)
            data["values"] = [data.pop("value")]
        return data


class SoaConfig(Model):
    mname: Fqdn
    rname: Fqdn
    refresh: Ttl = 3600
    retry: Ttl = 600
    expire: Ttl = 604800
    minimum: Ttl = 30
    ttl: Ttl = 3600


TsigAlgorithm = Literal["hmac-sha256", "hmac-sha512", "hmac-sha1"]


def _key_name(value: str) -> str:
    """A TSIG key name: a DNS name, written without the trailing dot (`xfr-key`)."""
    name = value.strip().lower().rstrip(".")
    if not name or any(not label or len(label) > 63 for label in name.split(".")):
        raise ValueError(f"{value!r} is not a valid TSIG key name (a DNS name such as xfr-key)")
    return name


KeyName = Annotated[str, AfterValidator(_key_name)]


class TsigKeyConfig(Model):
    """A TSIG key; its base64 secret is read from a file or the environment, never the YAML."""

    algorithm: TsigAlgorithm = "hmac-sha256"
    secret_file: str | None = None
    secret_env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TsigKeyConfig:
        if (self.secret_file is None) == (self.secret_env is None):
            raise ValueError("a TSIG key needs exactly one of secret_file or secret_env")
        return self


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an address or network (10.0.0.1, 10.0.0.0/8)") from None


class TransferPeer(Model):
    """Who may transfer a zone: an address or network, a TSIG key, or both (both must match)."""

    address: Annotated[str, AfterValidator(_network)] | None = None
    key: KeyName | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"address": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _something(self) -> TransferPeer:
        if self.address is None and self.key is None:
            raise ValueError("a transfer peer needs an address, a key or both")
        return self


class NotifyTarget(Model):
    """A secondary to send NOTIFY to: `HOST:PORT` (`[::1]:53`), a bare address, or a mapping."""

    address: IPAddress
    port: Port = 53
    key: KeyName | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        text = data.strip()
        if m := re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text):
            host, port = m.group(1), m.group(2)
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host, port = text, None
        return {"address": host} if port is None else {"address": host, "port": port}


class ZoneConfig(Model):
    """One zone and who publishes it.

    The embedded server serves the whole zone, so it needs `soa` and `nameservers`; an
    external provider (Route 53, ...) owns the zone's apex and gets only the record sets
    declared here, marked as dnsfailover's.
    """

    provider: str = "embedded"
    options: dict[str, Any] = Field(default_factory=dict)  # validated by the provider
    soa: SoaConfig | None = None
    nameservers: tuple[Fqdn, ...] = ()
    ns_ttl: Ttl = 3600
    records: dict[str, StaticRecord | tuple[StaticRecord, ...]] = Field(default_factory=dict)
    failover: dict[str, FailoverRecord] = Field(default_factory=dict)
    # safety of provider applies (see dnsfailover.provider.Safety)
    max_change_pct: Annotated[int, Field(ge=1, le=100)] = 100
    adopt: bool = False
    force: bool = False
    # zone transfers and NOTIFY (embedded zones; see dnsfailover.server.xfr / notify)
    allow_transfer: tuple[TransferPeer, ...] = ()
    also_notify: tuple[NotifyTarget, ...] = ()
    # more static records, from a master file (relative to the config file's directory)
    zone_file: str | None = None
    # signing by the embedded server (see dnsfailover.dnssec, config/dnssec.py)
    dnssec: DnssecConfig | None = None
    # read from `zone_file` by `config.load`, and the static records compiled once
    _file_records: tuple[FileRecord, ...] = PrivateAttr(default=())
    _static: tuple[RecordSet, ...] | None = PrivateAttr(default=None)

    def attach_file_records(self, origin: str, records: tuple[FileRecord, ...]) -> None:
        """What `zone_file` holds (the loader reads it; the config stays frozen otherwise),
        compiled into the static sets right away: the file's lines are not kept."""
        self._file_records, self._static = records, None
        self.static_records(origin)
        self._file_records = ()

    def static_records(self, origin: str) -> tuple[RecordSet, ...]:
        """The zone's static record sets, sorted: the apex NS from `nameservers`, `records:`
        and `zone_file:` (a file's lines for one name and type are one set, at the lowest
        TTL).  Compiled once per config, so a decision never rebuilds them."""
        if self._static is not None:
            return self._static
        sets: dict[tuple[str, str], RecordSet] = {}

        def add(name: str, rtype: str, ttl: int, values: tuple[str, ...]) -> None:
            old = sets.get((name, rtype))
            if old is not None:
                values = tuple(sorted(set(values) | set(old.values)))
                ttl = min(ttl, old.ttl)
            else:
                values = tuple(sorted(set(values)))
            sets[(name, rtype)] = RecordSet(name, rtype, ttl, values)

        if self.nameservers:
            add(origin, "NS", self.ns_ttl, tuple(self.nameservers))
        for label, value in self.records.items():
            fqdn = absolute_name(label, origin)
            for r in value if isinstance(value, tuple) else (value,):
                add(fqdn, r.type, r.ttl, r.values)
        for f in self._file_records:
            add(f.name, f.rtype, f.ttl, (f.value,))
        self._static = tuple(sets[k] for k in sorted(sets))
        return self._static

    @model_validator(mode="after")
    def _apex(self) -> ZoneConfig:
        if self.provider == "embedded":
            if self.soa is None:
                raise ValueError("an embedded zone needs soa (it serves the whole zone)")
            if not self.nameservers:
                raise ValueError("an embedded zone needs at least one nameserver")
        return self


class RrlConfig(Model):
    """Response rate limiting for UDP (BIND-style); 0 responses per second turns it off."""

    responses_per_second: Annotated[float, Field(ge=0)] = 0
    slip: Annotated[int, Field(ge=0, le=10)] = 2
    window: Duration = 15.0


class ServerConfig(Model):
    """Settings of the embedded DNS server."""

    rrl: RrlConfig = Field(default_factory=RrlConfig)


class Config(Model):
    """The whole validated config. Zone keys are absolute, lower-case names."""

    checks: dict[str, CheckConfig] = Field(default_factory=dict)
    tsig_keys: dict[KeyName, TsigKeyConfig] = Field(default_factory=dict)
    zones: Annotated[dict[Fqdn, ZoneConfig], Field(min_length=1)]
    server: ServerConfig = Field(default_factory=ServerConfig)
    regions: Annotated[dict[str, RegionConfig], BeforeValidator(regions_shorthand)] = Field(
        default_factory=dict
    )
    cluster: ClusterConfig | None = None
    api: ApiConfig = Field(default_factory=ApiConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    drills: tuple[DrillConfig, ...] = ()  # scheduled drills (dnsfailover/drills.py)
    geo: GeoConfig = Field(default_factory=GeoConfig)  # where clients are (steering)

    @functools.cached_property
    def memo(self) -> dict[str, Any]:
        """What other stages derive from this config once (the engine's index, ...): a
        config never changes, so neither does anything computed from it."""
        return {}

    def derived(self, key: str, build: Callable[[Config], T]) -> T:
        """`build(self)`, computed once per config and kept under `key`."""
        memo = self.memo
        if key not in memo:
            memo[key] = build(self)
        return cast(T, memo[key])

    def managed(self) -> list[tuple[str, str, ActiveActive | ActivePassive]]:
        """Every failover record as (zone origin, absolute name, record), in config order."""
        return list(self.derived("config.managed", _managed))

    def health_key(self, record: ActiveActive | ActivePassive, endpoint: Endpoint) -> str:
        """The key the engine looks health up by: the target's, or the target's voted under
        the record's own quorum when the record sets one that differs from its check's."""
        keys: dict[tuple[int, int], str] = self.derived("config.health_keys", lambda _c: {})
        found = keys.get((id(record), id(endpoint)))
        if found is None:
            found = keys[(id(record), id(endpoint))] = self._health_key(record, endpoint)
        return found

    def _health_key(self, record: ActiveActive | ActivePassive, endpoint: Endpoint) -> str:
        check = self.checks[record.check]
        key = endpoint.target(record.check, check).key
        if record.quorum is None or record.quorum == check.quorum:
            return key
        return f"{key}#quorum={record.quorum}"

    def votes(self) -> dict[str, tuple[str, str | int]]:
        """Every health key → (target key, quorum rule it is voted by)."""
        found: dict[str, tuple[str, str | int]] = {}
        for _origin, _name, record in self.managed():
            check = self.checks[record.check]
            quorum = check.quorum if record.quorum is None else record.quorum
            for tier in record.tiers:
                for endpoint in tier.endpoints:
                    target = endpoint.target(record.check, check).key
                    found.setdefault(self.health_key(record, endpoint), (target, quorum))
        return found

    def targets(self) -> dict[str, tuple[Target, CheckConfig]]:
        """Every distinct probe target, keyed by `Target.key`, with its check."""
        return dict(self.derived("config.targets", _targets))


def _managed(config: Config) -> tuple[tuple[str, str, ActiveActive | ActivePassive], ...]:
    return tuple(
        (origin, absolute_name(label, origin), record)
        for origin, zone in config.zones.items()
        for label, record in zone.failover.items()
    )


def _targets(config: Config) -> dict[str, tuple[Target, CheckConfig]]:
    found: dict[str, tuple[Target, CheckConfig]] = {}
    for _origin, _name, record in config.managed():
        check = config.checks[record.check]
        for tier in record.tiers:
            for endpoint in tier.endpoints:
                target = endpoint.target(record.check, check)
                found.setdefault(target.key, (target, check))
    return found
