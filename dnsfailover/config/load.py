"""Load a YAML config into a frozen `Config`, or raise `ConfigError` listing every problem.

Three passes, each adding `Problem`s located by file, line and key path:

1. YAML (`yamlpos`): syntax, duplicate keys;
2. the pydantic schema (`schema`): types and per-object rules, with pydantic's `loc` mapped
   back to the key path the user wrote;
3. cross-references that span objects: unknown checks, names outside their zone, record
   conflicts, repeated endpoints, record values, providers.

Paths read like `zones["example.test."].failover.www.endpoints[1].address`: plain keys are
dotted, keys that are not plain words are quoted in brackets, list items are `[index]`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import TypeAdapter, ValidationError

from dnsfailover.config.drill_targets import drill_problems
from dnsfailover.config.problems import describe, explain, unknown
from dnsfailover.config.schema import (
    ActiveActive,
    ActivePassive,
    Config,
    NotifyTarget,
    StaticRecord,
    TransferPeer,
    TsigKeyConfig,
    ZoneConfig,
)
from dnsfailover.config.secrets import TsigSecretError, read_secret
from dnsfailover.config.yamlpos import Document, YamlPath, parse, value_at
from dnsfailover.errors import ConfigError, Problem
from dnsfailover.fields import Fqdn, absolute_name, in_zone
from dnsfailover.provider.contract import UnknownProvider, load_provider
from dnsfailover.rdata import ZoneBuildError, name_labels, parse_rdata

__all__ = ["load", "loads"]

_FQDN: TypeAdapter[str] = TypeAdapter(Fqdn)
_ENTRIES: dict[str, TypeAdapter[Any]] = {  # one static or failover record, alone
    key: TypeAdapter(get_args(ZoneConfig.model_fields[key].annotation)[1])
    for key in ("records", "failover")
}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at `path`.

    :raises ConfigError: listing every problem found, each as `FILE:LINE: key.path: message`.
    """
    filename = os.fspath(path)
    try:
        raw = Path(filename).read_bytes()
    except OSError as e:
        raise ConfigError(
            [Problem(filename, None, "", f"cannot read: {e.strerror or e}")]
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError([Problem(filename, line, "", "not valid UTF-8 text")]) from None
    return loads(text, filename)


def loads(text: str, filename: str = "<string>") -> Config:
    """Validate config `text`; `filename` is only used in problems.

    :raises ConfigError: listing every problem found.
    """
    try:
        doc = parse(text)
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(filename, text, e)]) from None
    at = _Where(filename, doc)
    if doc.data is None:
        raise ConfigError(
            [Problem(filename, None, "", "empty config; expected a mapping with zones")]
        )
    if not isinstance(doc.data, dict):
        got = describe(doc.data)
        raise ConfigError([at.problem((), f"expected a mapping with zones at the top, got {got}")])
    problems = [
        at.problem(d.path, f"duplicate key (first on line {d.first_line})") for d in doc.duplicates
    ]
    config: Config | None = None
    try:
        config = Config.model_validate(doc.data)
    except ValidationError as e:
        problems += [at.problem(path, message) for path, message in explain(e, Config, doc.data)]
    problems += _cross_check(doc.data, at)
    if config is not None:
        problems += [at.problem(p, m) for p, m in drill_problems(config, config.drills)]
    if problems:
        unique = dict.fromkeys(problems)
        raise ConfigError(sorted(unique, key=lambda p: (p.line or 0, p.path)))
    assert config is not None  # no problems means the schema validated
    return config


class _Where:
    """Turns paths into problems with a line number and a readable key path."""

    def __init__(self, filename: str, doc: Document) -> None:
        self.filename = filename
        self.doc = doc

    def problem(self, path: YamlPath, message: str) -> Problem:
        return Problem(self.filename, self.doc.line(path), _format_path(path), message)

    def line(self, path: YamlPath) -> int | None:
        return self.doc.line(path)

    def raw(self, path: YamlPath) -> Any:
        return value_at(self.doc.data, path)


def _format_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _yaml_problem(filename: str, text: str, e: yaml.YAMLError) -> Problem:
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML cannot hold
        line = text[: e.position].count("\n") + 1
        return Problem(filename, line, "", f"invalid YAML: character {e.character!r} not allowed")
    if not isinstance(e, yaml.MarkedYAMLError):
        return Problem(filename, None, "", f"invalid YAML: {e}")
    mark = e.problem_mark or e.context_mark
    message = e.problem or e.context or "syntax error"
    if e.problem and e.context and e.context_mark and mark:
        if not e.context.startswith("while "):  # "expected a single document", "but found ..."
            message = f"{e.context}, {e.problem}"
        elif e.context_mark.line != mark.line:
            message += f" ({e.context} that starts on line {e.context_mark.line + 1})"
    if "'@'" in message:
        message += '; quote names that start with @, e.g. "@"'
    elif "'\\t'" in message:
        message += "; indent with spaces, not tabs"
    return Problem(filename, mark.line + 1 if mark else None, "", f"invalid YAML: {message}")


# --- pass 3: rules that span several objects --------------------------------------------------


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
    """One record set at a name: a static record or a failover record."""

    name: str
    type: str
    failover: bool
    path: YamlPath


def _cross_check(data: dict[str, Any], at: _Where) -> list[Problem]:
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
        problems += _check_zone(zone, checks, list(seen), at)
    return (
        problems
        + _check_providers(zones, at)
        + _check_transfers(data, zones, at)
        + _check_quorums(data, at)
    )


def _check_quorums(data: dict[str, Any], at: _Where) -> list[Problem]:
    """A quorum of k regions can never be met with fewer than k regions declared."""
    regions = data.get("regions")
    count = len(regions) if isinstance(regions, dict | list) and regions else 1
    problems: list[Problem] = []
    raw_checks = data.get("checks")
    for name, check in raw_checks.items() if isinstance(raw_checks, dict) else ():
        quorum = check.get("quorum") if isinstance(check, dict) else None
        if isinstance(quorum, int) and not isinstance(quorum, bool) and quorum > count:
            problems.append(
                at.problem(
                    ("checks", name, "quorum"),
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


def _check_providers(zones: list[_Zone], at: _Where) -> list[Problem]:
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


def _check_transfers(data: dict[str, Any], zones: list[_Zone], at: _Where) -> list[Problem]:
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
    zone: _Zone, checks: list[str] | None, origins: list[str], at: _Where
) -> list[Problem]:
    problems: list[Problem] = []
    names: list[_Name] = []
    for path, label, record in _static_records(zone):
        name = absolute_name(label, zone.origin)
        if (message := _placement(name, record.type, zone, origins)) is not None:
            problems.append(at.problem(path, message))
            continue
        names.append(_Name(name, record.type, False, path))
        if name == zone.origin and record.type in ("NS", "CNAME"):
            why = {
                "NS": "the apex NS records come from the zone's nameservers; list them there",
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
    path: YamlPath, record: ActiveActive | ActivePassive, at: _Where
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


def _conflicts(names: list[_Name], at: _Where) -> list[Problem]:
    """Failover names that are also static records, CNAMEs next to anything, repeated sets."""
    problems: list[Problem] = []
    for i, this in enumerate(names):
        for other in names[:i]:  # static records come first, so `other` is never a later kind
            if this.name != other.name:
                continue
            what = "failover" if other.failover else f"static {other.type}"
            clash = f"{this.name} is also a {what} record (line {at.line(other.path)})"
            if this.failover:
                if other.failover or other.type in (this.type, "CNAME"):
                    problems.append(at.problem(this.path, clash))
            elif "CNAME" in (this.type, other.type):
                problems.append(at.problem(this.path, f"{clash}; a CNAME must be alone"))
            elif this.type == other.type:
                problems.append(at.problem(this.path, f"{clash}; put all values in one"))
    return problems


def _glue(zone: _Zone, names: list[_Name], origins: list[str], at: _Where) -> list[Problem]:
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
