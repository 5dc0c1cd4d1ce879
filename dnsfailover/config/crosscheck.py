"""Pass 3 of loading a config: the rules that span several objects.

Unknown checks, names outside their zone, record conflicts (across `records:`, `zone_file:`
and `failover:`), repeated endpoints, record values (judged by the parser the server uses),
glue, providers and their options, TSIG keys and transfer peers, quorums.  Every zone is
checked in its valid part, so one mistake hides nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from dnsfailover.config.checks import _quorum
from dnsfailover.config.problems import Where, explain, unknown
from dnsfailover.config.schema import (
    ActiveActive,
    ActivePassive,
    NotifyTarget,
    StaticRecord,
    TransferPeer,
    TsigKeyConfig,
    ZoneConfig,
)
from dnsfailover.config.secrets import TsigSecretError, read_secret
from dnsfailover.config.yamlpos import YamlPath
from dnsfailover.config.zonefile import FileRecord, ZoneFile
from dnsfailover.errors import Problem
from dnsfailover.fields import Fqdn, absolute_name, in_zone
from dnsfailover.provider.contract import UnknownProvider, load_provider
from dnsfailover.rdata import ZoneBuildError, name_labels, parse_rdata

_FQDN: TypeAdapter[str] = TypeAdapter(Fqdn)
_ENTRIES: dict[str, TypeAdapter[Any]] = {  # one static or failover record, alone
    key: TypeAdapter(get_args(ZoneConfig.model_fields[key].annotation)[1])
    for key in ("records", "failover")
}


@dataclass(frozen=True, slots=True)
class _Zone:
    key: str  # as written, for paths
    origin: str  # normalized
    config: ZoneConfig

    @property
    def path(self) -> YamlPath:
        return ("zones", self.key)


@dataclass(frozen=True, slots=True)
class _Name:
    """One record set at a name: a static record or a failover record; `file` is set for a
    zone file's record set (its first line), whose YAML `path` is the zone's `zone_file`."""

    name: str
    type: str
    failover: bool
    path: YamlPath
    file: tuple[str, int] | None = None

    def problem(self, at: Where, message: str) -> Problem:
        if self.file is not None:
            return Problem(self.file[0], self.file[1], "", message)
        return at.problem(self.path, message)

    def where(self, at: Where) -> str:
        return f"{self.file[0]}:{self.file[1]}" if self.file else f"line {at.line(self.path)}"


def cross_check(data: dict[str, Any], at: Where, files: dict[str, ZoneFile]) -> list[Problem]:
    """Check the valid part of every zone, so that one mistake hides nothing else."""
    problems: list[Problem] = []
    zones: list[_Zone] = []
    raw_zones = data.get("zones")
    seen: dict[str, str] = {}
    for key, raw in raw_zones.items() if isinstance(raw_zones, dict) else ():
        try:
            origin = _FQDN.validate_python(key)
        except ValidationError:
            continue  # reported by the schema pass
        if origin in seen:
            first = at.line(("zones", seen[origin]))
            problems.append(
                at.problem(("zones", key), f"same zone as {seen[origin]!r} (line {first})")
            )
            continue
        seen[origin] = key
        if (valid := _valid_part(raw)) is not None:
            zones.append(_Zone(key, origin, valid))
    raw_checks = data.get("checks") or {}
    checks = list(raw_checks) if isinstance(raw_checks, dict) else None  # None: not even a mapping
    for zone in zones:
        problems += _check_zone(zone, checks, list(seen), at, files.get(zone.origin))
    return (
        problems
        + _check_providers(zones, at)
        + _check_transfers(data, zones, at)
        + _check_quorums(data, at)
    )


def _check_quorums(data: dict[str, Any], at: Where) -> list[Problem]:
    """A quorum of k regions can never be met with fewer than k regions declared: on a check,
    or on a record that overrides its check's quorum."""
    regions = data.get("regions")
    count = len(regions) if isinstance(regions, dict | list) and regions else 1
    found: list[tuple[YamlPath, Any]] = []
    raw_checks = data.get("checks")
    for name, check in raw_checks.items() if isinstance(raw_checks, dict) else ():
        if isinstance(check, dict) and "quorum" in check:
            found.append((("checks", name, "quorum"), check["quorum"]))
    raw_zones = data.get("zones")
    for key, zone in raw_zones.items() if isinstance(raw_zones, dict) else ():
        records = zone.get("failover") if isinstance(zone, dict) else None
        for name, record in records.items() if isinstance(records, dict) else ():
            if isinstance(record, dict) and "quorum" in record:
                found.append((("zones", key, "failover", name, "quorum"), record["quorum"]))
    problems: list[Problem] = []
    for path, raw in found:
        try:
            quorum = _quorum(raw)
        except ValueError:
            continue  # reported by the schema pass
        if isinstance(quorum, int) and quorum > count:
            problems.append(
                at.problem(
                    path,
                    f"quorum {quorum} needs at least {quorum} regions; "
                    f"{count} {'is' if count == 1 else 'are'} declared",
                )
            )
    return problems


def _valid_part(raw: Any) -> ZoneConfig | None:
    """The zone, or if some of its records are invalid (and so reported), the zone without them."""
    try:
        return ZoneConfig.model_validate(raw)
    except ValidationError:
        if not isinstance(raw, dict):
            return None
    kept = dict(raw)
    for key, adapter in _ENTRIES.items():
        if isinstance(entries := raw.get(key), dict):
            kept[key] = {name: entry for name, entry in entries.items() if _valid(adapter, entry)}
    try:
        return ZoneConfig.model_validate(kept)
    except ValidationError:
        return None


def _valid(adapter: TypeAdapter[Any], value: Any) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def _check_providers(zones: list[_Zone], at: Where) -> list[Problem]:
    """Every zone's provider must be installed, and its `options` valid for it."""
    problems: list[Problem] = []
    for z in zones:
        try:
            cls = load_provider(z.config.provider)
        except UnknownProvider as e:
            problems.append(at.problem((*z.path, "provider"), str(e)))
            continue
        try:
            cls.Options.model_validate(z.config.options)
        except ValidationError as e:
            for path, message in explain(e, cls.Options, z.config.options):
                problems.append(at.problem((*z.path, "options", *path), message))
        supported = ", ".join(sorted(cls.SUPPORTS))
        for section in ("records", "failover"):
            for label, value in getattr(z.config, section).items():
                entries = enumerate(value) if isinstance(value, tuple) else [(None, value)]
                for index, r in entries:
                    if r.type in cls.SUPPORTS:
                        continue
                    where = (label,) if index is None else (label, index)
                    message = (
                        f"provider {z.config.provider!r} cannot publish {r.type} records "
                        f"(it supports {supported})"
                    )
                    problems.append(at.problem((*z.path, section, *where, "type"), message))
    return problems


def _check_transfers(data: dict[str, Any], zones: list[_Zone], at: Where) -> list[Problem]:
    """TSIG secrets must be readable (errors name the key, never the secret); `allow_transfer`
    and `also_notify` must name defined keys and belong to embedded zones."""
    problems: list[Problem] = []
    known: list[str] = []
    raw_keys = data.get("tsig_keys")
    for name, raw in raw_keys.items() if isinstance(raw_keys, dict) else ():
        known.append(str(name).strip().lower().rstrip("."))
        try:
            key = TsigKeyConfig.model_validate(raw)
        except ValidationError:
            continue  # reported by the schema pass
        try:
            read_secret(str(name), key)
        except TsigSecretError as e:
            field = "secret_file" if key.secret_file is not None else "secret_env"
            problems.append(at.problem(("tsig_keys", name, field), str(e)))
    for zone in zones:
        sections: tuple[tuple[str, tuple[TransferPeer | NotifyTarget, ...]], ...] = (
            ("allow_transfer", zone.config.allow_transfer),
            ("also_notify", zone.config.also_notify),
        )
        for section, entries in sections:
            if entries and zone.config.provider != "embedded":
                message = f"{section} is for zones the embedded server serves"
                problems.append(at.problem((*zone.path, section), message))
            for index, entry in enumerate(entries):
                if entry.key is not None and entry.key not in known:
                    defined = ", ".join(known) if known else "none"
                    message = f"unknown TSIG key {entry.key!r} (tsig_keys defined: {defined})"
                    problems.append(at.problem((*zone.path, section, index, "key"), message))
    return problems


def _check_zone(
    zone: _Zone, checks: list[str] | None, origins: list[str], at: Where, file: ZoneFile | None
) -> list[Problem]:
    problems: list[Problem] = []
    names: list[_Name] = []
    if file is not None:
        problems += file.problems
        problems += _check_file(zone, file, origins, at, names)
    for path, label, record in _static_records(zone):
        name = absolute_name(label, zone.origin)
        if (message := _placement(name, record.type, zone, origins)) is not None:
            problems.append(at.problem(path, message))
            continue
        names.append(_Name(name, record.type, False, path))
        if name == zone.origin and record.type in ("NS", "CNAME", "DS"):
            why = {
                "NS": "the apex NS records come from the zone's nameservers; list them there",
                "DS": "the apex DS belongs in the parent zone (dnsfailover dnssec ds prints it)",
                "CNAME": "a CNAME cannot be at the zone apex, where the SOA and NS records are",
            }
            problems.append(at.problem((*path, "type"), why[record.type]))
        if record.type == "NS" and name.startswith("*."):
            message = "a wildcard name cannot be a delegation (NS below the apex)"
            problems.append(at.problem((*path, "type"), message))
        if record.type == "CNAME" and len(record.values) > 1:
            problems.append(at.problem((*path, "values"), "a CNAME has exactly one value"))
        values_key = "value" if isinstance(at.raw((*path, "value")), str) else "values"
        for index, value in enumerate(record.values):
            if (message := _rdata_problem(record.type, value)) is not None:
                where = (*path, "value") if values_key == "value" else (*path, "values", index)
                problems.append(at.problem(where, message))
    for label, failover in zone.config.failover.items():
        path = (*zone.path, "failover", label)
        name = absolute_name(label, zone.origin)
        if (message := _placement(name, failover.type, zone, origins)) is not None:
            problems.append(at.problem(path, message))
            continue
        names.append(_Name(name, failover.type, True, path))
        if checks is not None and failover.check not in checks:
            defined = f"defined: {', '.join(checks)}" if checks else "no checks are defined"
            message = unknown("check", failover.check, checks)
            problems.append(at.problem((*path, "check"), f"{message} ({defined})"))
        problems += _repeated_endpoints(path, failover, at)
    problems += _conflicts(names, at)
    problems += _glue(zone, names, origins, at)
    delegations = {n.name for n in names if n.type == "NS"}
    for n in names:
        if n.type == "DS" and n.name != zone.origin and n.name not in delegations:
            problems.append(n.problem(at, "a DS belongs at a delegation: add NS at this name"))
    return problems


def _check_file(
    zone: _Zone, file: ZoneFile, origins: list[str], at: Where, names: list[_Name]
) -> list[Problem]:
    """A zone file's records: where they are, apex NS as `nameservers`, values; each file
    record set joins `names` (located at its first line) for the conflict checks."""
    problems: list[Problem] = []
    apex = {r.value.lower() for r in file.apex_ns}
    if apex and apex != set(zone.config.nameservers):
        first = file.apex_ns[0]
        listed = ", ".join(zone.config.nameservers) or "none"
        message = (
            f"the apex NS records ({', '.join(sorted(apex))}) differ from the zone's "
            f"nameservers ({listed}); the nameservers are served: make them the same"
        )
        problems.append(Problem(first.file, first.line, "", message))
    seen: dict[tuple[str, str], FileRecord] = {}
    path = (*zone.path, "zone_file")
    for r in file.records:
        if (why := _placement(r.name, r.rtype, zone, origins)) is not None:
            problems.append(Problem(r.file, r.line, "", why))
            continue
        if (why := _rdata_problem(r.rtype, r.value)) is not None:
            problems.append(Problem(r.file, r.line, "", why))
        if r.name == zone.origin and r.rtype == "CNAME":
            message = "a CNAME cannot be at the zone apex, where the SOA and NS records are"
            problems.append(Problem(r.file, r.line, "", message))
        if r.rtype == "NS" and r.name.startswith("*."):
            message = "a wildcard name cannot be a delegation (NS below the apex)"
            problems.append(Problem(r.file, r.line, "", message))
        key = (r.name, r.rtype)
        if key in seen:
            if r.rtype == "CNAME":
                first = seen[key]
                message = f"a CNAME has exactly one value (another on {first.file}:{first.line})"
                problems.append(Problem(r.file, r.line, "", message))
            continue
        seen[key] = r
        names.append(_Name(r.name, r.rtype, False, path, (r.file, r.line)))
    return problems


def _static_records(zone: _Zone) -> Iterator[tuple[YamlPath, str, StaticRecord]]:
    for label, entry in zone.config.records.items():
        path = (*zone.path, "records", label)
        if isinstance(entry, StaticRecord):
            yield path, label, entry
        else:
            for index, record in enumerate(entry):
                yield (*path, index), label, record


def _placement(name: str, rtype: str, zone: _Zone, origins: list[str]) -> str | None:
    """Why `name` cannot be in `zone`: a bad name, outside the zone, or in a nested zone."""
    try:
        name_labels(name)
    except ZoneBuildError as e:
        return str(e)
    if not in_zone(name, zone.origin):
        return f"{name} is outside the zone {zone.origin}"
    for child in origins:
        inner = child != zone.origin and in_zone(child, zone.origin) and in_zone(name, child)
        if inner and not (name == child and rtype == "NS"):  # a delegation is fine
            return f"{name} is in the zone {child}, also defined here; put it there"
    return None


def _repeated_endpoints(
    path: YamlPath, record: ActiveActive | ActivePassive, at: Where
) -> list[Problem]:
    if isinstance(record, ActiveActive):
        lists = [((*path, "endpoints"), record.endpoints)]
    else:
        lists = [
            ((*path, "tiers", i, "endpoints"), tier.endpoints)
            for i, tier in enumerate(record.tiers)
        ]
    problems: list[Problem] = []
    first: dict[str, YamlPath] = {}
    for base, endpoints in lists:
        for index, endpoint in enumerate(endpoints):
            where: YamlPath = (*base, index)
            if isinstance(at.raw(where), dict):
                where = (*where, "address")
            if endpoint.address in first:
                line = at.line(first[endpoint.address])
                message = f"{endpoint.address} is already an endpoint of this record (line {line})"
                problems.append(at.problem(where, message))
            else:
                first[endpoint.address] = where
    return problems


def _conflicts(names: list[_Name], at: Where) -> list[Problem]:
    """Failover names that are also static records, CNAMEs next to anything, repeated sets."""
    problems: list[Problem] = []
    earlier: dict[str, list[_Name]] = {}
    for this in names:
        # static records come first, so `other` is never a later kind
        for other in earlier.setdefault(this.name, []):
            what = "failover" if other.failover else f"static {other.type}"
            clash = f"{this.name} is also a {what} record ({other.where(at)})"
            if this.failover:
                if other.failover or other.type in (this.type, "CNAME"):
                    problems.append(this.problem(at, clash))
            elif "CNAME" in (this.type, other.type):
                problems.append(this.problem(at, f"{clash}; a CNAME must be alone"))
            elif this.type == other.type:
                problems.append(this.problem(at, f"{clash}; put all values in one"))
        earlier[this.name].append(this)
    return problems


def _glue(zone: _Zone, names: list[_Name], origins: list[str], at: Where) -> list[Problem]:
    """A nameserver inside its own zone needs an address record there."""
    problems: list[Problem] = []
    addressed = {n.name for n in names if n.type in ("A", "AAAA")}
    for index, ns in enumerate(zone.config.nameservers):
        deepest = max((o for o in origins if in_zone(ns, o)), key=len, default=None)
        if deepest == zone.origin and ns not in addressed:
            message = f"nameserver {ns} is in this zone but has no A or AAAA record here"
            problems.append(at.problem((*zone.path, "nameservers", index), message))
    return problems


# What a value looks like, for types whose zone-file syntax has several fields or a name.
_SHAPES = {
    "CNAME": "an absolute name, e.g. 'www.example.test.'",
    "NS": "an absolute name, e.g. 'ns1.example.test.'",
    "PTR": "an absolute name, e.g. 'host.example.test.'",
    "MX": "'PRIORITY NAME', e.g. '10 mail.example.test.'",
    "SRV": "'PRIORITY WEIGHT PORT TARGET', e.g. '10 5 5060 sip.example.test.'",
    "CAA": "'FLAGS TAG VALUE', e.g. '0 issue \"letsencrypt.org\"'",
}


def _rdata_problem(rtype: str, value: str) -> str | None:
    """Why `value` is not valid data for `rtype`, judged by the parser the server uses."""
    try:
        parse_rdata(rtype, value)
    except (ZoneBuildError, ValueError) as e:  # ValueError: int() of odd digits such as "²"
        shape = _SHAPES.get(rtype)
        return f"{e}; expected {shape}" if shape else str(e)
    return None
