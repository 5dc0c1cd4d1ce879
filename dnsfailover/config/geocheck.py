"""The geo rules that span the config: steering rules against their record's tiers, the
`geo.nets` labels and codes, the database (opened once at load, so a file that does not open
or lacks coordinates for proximity is a config error), and the zone's provider.

`steering_rules(config)` gives every steered name's validated `geo.steer.Rule`, and `places`
what each of its location groups stands for (what Route 53 geolocation sets are made of).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from dnsfailover.config.problems import Where, unknown
from dnsfailover.config.schema import ActivePassive, Config
from dnsfailover.config.yamlpos import YamlPath
from dnsfailover.errors import Problem
from dnsfailover.fields import Fqdn
from dnsfailover.geo import codes
from dnsfailover.geo.errors import DatabaseError, GeoError, NetsError
from dnsfailover.geo.locate import Locator
from dnsfailover.geo.nets import NetMap, unmapped
from dnsfailover.geo.steer import Region, Rule, groups, rule
from dnsfailover.geo.steering import Steering
from dnsfailover.model import DEFAULT_PLACE, group_id
from dnsfailover.provider.contract import UnknownProvider, load_provider

_FQDN: TypeAdapter[str] = TypeAdapter(Fqdn)


def net_map(config: Config) -> NetMap:
    """The `geo.nets` CIDR map (validated at load)."""
    return config.derived("geo.nets", _net_map)


def _net_map(config: Config) -> NetMap:
    return NetMap((cidr, label) for label, cidrs in config.geo.nets.items() for cidr in cidrs)


def steered(config: Config) -> list[tuple[str, str, ActivePassive]]:
    """Every steered failover record as (zone origin, absolute name, record), config order."""
    return [
        (origin, name, record)
        for origin, name, record in config.managed()
        if isinstance(record, ActivePassive) and record.steering is not None
    ]


def steering_rules(config: Config) -> Mapping[str, Rule]:
    """Every steered name → its rule (built once per config; the loader validated them)."""
    return config.derived("geo.rules", _rules)


def _rules(config: Config) -> dict[str, Rule]:
    return {name: _rule(config, record) for _origin, name, record in steered(config)}


def _rule(config: Config, record: ActivePassive) -> Rule:
    s = record.steering
    assert s is not None
    return rule(
        s.by,
        map=s.map,
        default=s.default,
        nets=s.nets,
        regions=(
            [Region(t.name, t.coordinates, t.bias) for t in record.tiers]
            if s.by == "proximity"
            else ()
        ),
        known=[t.name for t in record.tiers],
        labels=config.geo.nets,
    )


def places(r: Rule) -> dict[str, tuple[str, ...]]:
    """Each location group's id → the places it is for: ``country:DE``, ``continent:EU``,
    ``net:LABEL``, ``proximity``, and ``*`` for the default group."""
    found: dict[str, list[str]] = {group_id(g): [] for g in groups(r)}
    found[group_id(r.default)].append(DEFAULT_PLACE)
    kind = "net" if r.by == "subnet" else r.by
    for key, order in r.map.items():
        found[group_id(order)].append(f"{kind}:{key}")
    for label, order in r.nets.items():
        found[group_id(order)].append(f"net:{label}")
    if r.by == "proximity":
        for where in found.values():
            if not where:
                where.append("proximity")
    return {gid: tuple(where) for gid, where in found.items()}


def open_steering(config: Config) -> Steering | None:
    """A `Steering` over the config's database and CIDR map (None when nothing is steered).

    :raises DatabaseError: when the database does not open (it did at load).
    """
    rules = steering_rules(config)
    if not rules:
        return None
    proximity = any(r.by == "proximity" for r in rules.values())
    path = config.geo.database_path
    locator = Locator(path, net_map(config), need_coordinates=proximity)
    return Steering(rules, locator)


def geo_problems(config: Config, data: dict[str, Any], at: Where) -> list[Problem]:
    """Every problem of the `geo:` section and of each record's `steering:`."""
    problems: list[Problem] = []
    nets_ok = True
    try:
        net_map(config)
    except NetsError as e:
        nets_ok = False
        problems.append(at.problem(("geo", "nets", *_nets_path(config, str(e))), str(e)))
    else:
        problems += [at.problem(("geo", "nets", *p), m) for p, m in _overlaps(config)]
    records = list(_steered_paths(config, data))
    proximity = any(
        r.steering is not None and r.steering.by == "proximity" for _o, _p, r in records
    )
    geo = config.geo
    path = geo.database_path
    if path is not None:
        try:
            Locator(path, need_coordinates=proximity, private_copy=False).close()
        except DatabaseError as e:
            problems.append(at.problem(("geo", "database"), str(e)))
    for _origin, record_path, record in records:
        found = _record_problems(config, record_path, record, nets_ok)
        problems += [at.problem(where, message) for where, message in found]
    return problems + _provider_problems(config, at, records)


def _nets_path(config: Config, message: str) -> YamlPath:
    """The `geo.nets` entry a NetMap error is about: the first that does not parse, or the
    second entry of a network listed twice."""
    seen: set[object] = set()
    for label, cidrs in config.geo.nets.items():
        for index, cidr in enumerate(cidrs):
            try:
                network = unmapped(ipaddress.ip_network(cidr.strip()))
            except ValueError:
                return (label, index)
            if network in seen:
                return (label, index)
            seen.add(network)
    return ()


def _overlaps(config: Config) -> list[tuple[YamlPath, str]]:
    """Networks of one label inside each other: one of them says nothing (a typo, most
    likely).  A network inside another label's is how an office is carved out of a bigger
    block, and is allowed: the more specific one wins."""
    found: list[tuple[YamlPath, str]] = []
    for label, cidrs in config.geo.nets.items():
        seen: list[tuple[int, int, int, str]] = []  # (version, first, last, as written)
        for index, cidr in enumerate(cidrs):
            net = unmapped(ipaddress.ip_network(cidr.strip()))
            first, last = int(net.network_address), int(net.broadcast_address)
            for version, lo, hi, text in seen:
                if version == net.version and lo <= last and first <= hi:
                    message = (
                        f"{cidr} overlaps {text}, listed for {label} too (one of them says "
                        "nothing: list each network of a label once)"
                    )
                    found.append(((label, index), message))
            seen.append((net.version, first, last, cidr))
    return found


def _steered_paths(
    config: Config, data: dict[str, Any]
) -> Iterator[tuple[str, YamlPath, ActivePassive]]:
    """Each steered record with its zone and YAML path (zone keys as written)."""
    raw_zones = data.get("zones")
    written: dict[str, str] = {}
    for key in raw_zones if isinstance(raw_zones, dict) else ():
        try:
            written.setdefault(_FQDN.validate_python(key), key)
        except ValidationError:
            continue
    for origin, zone in config.zones.items():
        for label, record in zone.failover.items():
            if isinstance(record, ActivePassive) and record.steering is not None:
                yield origin, ("zones", written.get(origin, origin), "failover", label), record


def _record_problems(
    config: Config, path: YamlPath, record: ActivePassive, nets_ok: bool
) -> list[tuple[YamlPath, str]]:
    s = record.steering
    assert s is not None
    here = (*path, "steering")
    tiers = [t.name for t in record.tiers]
    labels = list(config.geo.nets)
    found: list[tuple[YamlPath, str]] = []

    def order(where: YamlPath, names: tuple[str, ...]) -> None:
        for index, name in enumerate(names):
            if name not in tiers:
                found.append(((*where, index), unknown("tier", name, tiers)))

    for key, names in s.map.items():
        try:
            if s.by == "country":
                codes.country(key)
            elif s.by == "continent":
                codes.continent(key)
            elif s.by == "subnet" and key not in labels:
                found.append(((*here, "map", key), _no_label(key, labels)))
        except GeoError as e:
            found.append(((*here, "map", key), str(e)))
        order((*here, "map", key), names)
    for label, names in s.nets.items():
        if label not in labels:
            found.append(((*here, "nets", label), _no_label(label, labels)))
        order((*here, "nets", label), names)
    if s.default is not None:
        order((*here, "default"), s.default)
    if s.by == "proximity":
        for index, t in enumerate(record.tiers):
            if t.coordinates is None:
                message = f"tier {t.name} has no coordinates (steering by: proximity needs them)"
                found.append(((*path, "tiers", index, "coordinates"), message))
        if config.geo.database is None:
            message = "by: proximity needs geo.database: a city database with coordinates"
            found.append(((*here, "by"), message))
    elif s.by in ("country", "continent") and config.geo.database is None:
        message = f"by: {s.by} needs geo.database (a MaxMind-format database) to locate clients"
        found.append(((*here, "by"), message))
    elif s.by == "subnet" and not labels:
        found.append(((*here, "by"), "by: subnet needs geo.nets (labelled networks)"))
    if not found and nets_ok:
        try:
            _rule(config, record)
        except GeoError as e:
            found.append((here, str(e)))
    return found


def _no_label(label: str, labels: list[str]) -> str:
    defined = ", ".join(labels) if labels else "none"
    return f"{unknown('geo.nets label', label, labels)} (geo.nets labels: {defined})"


def _provider_problems(
    config: Config, at: Where, records: list[tuple[str, YamlPath, ActivePassive]]
) -> list[Problem]:
    """A provider that publishes locations (Route 53) must be able to publish every place of
    the zone's rules; a provider that publishes none (RFC 2136) gets the default group."""
    problems: list[Problem] = []
    for origin, path, record in records:
        zone = config.zones[origin]
        if zone.provider == "embedded" or record.steering is None:
            continue
        try:
            cls = load_provider(zone.provider)
        except UnknownProvider:
            continue  # reported with the zone
        can: frozenset[str] = getattr(cls, "GEO_PLACES", frozenset())
        if not can:
            continue
        by = "net" if record.steering.by == "subnet" else record.steering.by
        wants = {by} | ({"net"} if record.steering.nets else set())
        missing = sorted(wants - can)
        if missing:
            message = (
                f"provider {zone.provider!r} can steer by {', '.join(sorted(can))}, "
                f"not by {', '.join(missing)}; serve this zone with the embedded server"
            )
            problems.append(at.problem((*path, "steering", "by"), message))
    return problems
