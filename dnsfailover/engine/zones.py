"""What a decision publishes: each zone's managed sets from the names' decisions.

A full decision builds every zone (`build_zone`); an incremental one replaces the sets of the
names whose decision changed (`updated`), sharing the rest (and the static part) with the
zone it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dnsfailover.config.schema import SoaConfig, ZoneConfig
from dnsfailover.engine.settings import FailoverRecord
from dnsfailover.engine.steering import Steered, base_name
from dnsfailover.engine.values import NameDecision
from dnsfailover.fields import absolute_name
from dnsfailover.model import Key, RecordSet, Soa, SteeredSet, ZoneContent


def updated(
    zone: ZoneContent,
    changed: Iterable[tuple[str, FailoverRecord]],
    names: Mapping[str, NameDecision],
    steered: Mapping[str, Steered] | None = None,
) -> ZoneContent:
    """`zone` with the managed sets of its changed names replaced (the same object when none
    of them changes what it publishes).  `changed` holds decision names: a steered name's
    groups (`engine/steering.py`) rebuild its steered set, its default group its managed set
    too."""
    updates: dict[Key, RecordSet] = {}
    regroup: dict[Key, SteeredSet] = {}
    managed = zone.managed
    for name, record in changed:
        base = base_name(name) if steered else name
        s = steered.get(base) if steered else None
        if s is not None:
            key = (base, s.rtype)
            if key not in regroup:
                regroup[key] = steered_set(s, names)
            if name != base:
                continue
        rs = managed_set(name, record, names[name])
        key = (name, rs.rtype)
        old = managed.get(key)
        if old is None or old.values != rs.values or old != rs:  # values: what moves most
            updates[key] = rs
    regroup = {k: v for k, v in regroup.items() if zone.steered.get(k) != v}
    return zone.with_managed(updates, regroup) if updates or regroup else zone


def build_zone(
    origin: str,
    zone: ZoneConfig,
    names: Mapping[str, NameDecision],
    serial: int = 0,
    steered: Mapping[str, Steered] | None = None,
) -> ZoneContent:
    """The full content of one zone: its static sets (compiled once per config), the
    managed answers of `names`, and the per-group answers of its `steered` names."""
    managed: dict[Key, RecordSet] = {}
    groups: dict[Key, SteeredSet] = {}
    for label, record in zone.failover.items():
        fqdn = absolute_name(label, origin)
        nd = names.get(fqdn)
        if nd is not None:
            managed[(fqdn, record.type)] = managed_set(fqdn, record, nd)
        s = steered.get(fqdn) if steered else None
        if s is not None and nd is not None:
            groups[(fqdn, record.type)] = steered_set(s, names)
    # A zone published by an external provider has no SOA of ours; a placeholder keeps the
    # value shape uniform and is never published.
    soa = zone.soa or SoaConfig(mname=origin, rname=f"hostmaster.{origin}")
    return ZoneContent(
        origin,
        Soa(soa.mname, soa.rname, serial, soa.refresh, soa.retry, soa.expire, soa.minimum, soa.ttl),
        managed=managed,
        static=zone.static_records(origin),
        steered=groups,
    )


def steered_set(s: Steered, names: Mapping[str, NameDecision]) -> SteeredSet:
    """A steered name's answers per location group (a group not decided yet, as in a
    follower that has not caught up, answers as the default group)."""
    default = names[s.name]
    answers: dict[str, RecordSet] = {}
    for g in s.groups:
        nd = names.get(g.decision, default)
        answers[g.id] = managed_set(s.name, g.record, nd)
    return SteeredSet(s.name, s.rtype, s.default.id, answers, {g.id: g.places for g in s.groups})


def managed_set(name: str, record: FailoverRecord, nd: NameDecision) -> RecordSet:
    """What a managed name publishes for `nd`."""
    # An empty answer (serve_none) stays as an empty set: the name still exists, so
    # resolvers get NODATA rather than a cached NXDOMAIN for the whole name.
    ttl = record.ttl if nd.ttl is None else nd.ttl
    # Weights are published only when they differ (equal ones answer as before; one value
    # has nothing to differ from).  A shadow name's weights describe what it would answer,
    # not what it publishes.
    answer = nd.answer
    weights: tuple[int, ...] = ()
    if len(answer) > 1 and not nd.shadow:
        given = nd.weights
        weights = tuple(given.get(a, -1) for a in answer)
        if min(weights) < 0 or len(set(weights)) == 1:
            weights = ()
    return RecordSet(name, record.type, ttl, answer, weights)
