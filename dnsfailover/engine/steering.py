"""Steered names: one decision per location group, each an active-passive record of its own.

A steered record (`steering:` on an active-passive record) answers each client from the
first healthy tier of the client's ordered list (its location group, see
`dnsfailover.geo.steer`).  The engine decides each group as if it were a record whose tiers
are the group's, in the group's order: so every rule (hysteresis and failback, capacity,
drains and other overrides, interlocks, `all_down`, TTL rules, shadow mode, damping) runs
per group, with per-group state and transitions, and losing a region moves only the groups
that were on it.

The default group is decided under the record's own name (what zone transfers and providers
without location support publish); every other group under ``NAME@GROUP``, e.g.
``www.example.com.@eu,us``.  `Index` lists these decision names like any other, so health
changes re-decide exactly the groups that use the changed endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dnsfailover.config.geocheck import places, steering_rules
from dnsfailover.config.schema import ActivePassive, Config
from dnsfailover.engine.settings import FailoverRecord
from dnsfailover.geo.steer import groups
from dnsfailover.model import group_id

SEP = "@"


def group_name(name: str, group: str) -> str:
    """The decision name of `name`'s group `group` (not the default group's)."""
    return f"{name}{SEP}{group}"


def decision_name(name: str, group: str, default: str) -> str:
    """The name `name`'s group `group` is decided under (the name itself for the default)."""
    return name if group == default else group_name(name, group)


def split_group(name: str) -> tuple[str, str]:
    """A decision name as (record name, group id); the group is "" for a name's own
    decision (a steered name's default group, or a name that is not steered)."""
    base, _, group = name.partition(SEP)
    return base, group


def base_name(name: str) -> str:
    """The record name a decision name belongs to (itself for an unsteered name)."""
    return name.split(SEP, 1)[0]


@dataclass(frozen=True, slots=True)
class Group:
    id: str  # its ordered tiers, comma-joined
    decision: str  # the name it is decided under
    record: ActivePassive  # the record with the group's tiers, in the group's order
    places: tuple[str, ...]  # what clients it is for (see SteeredSet.places)


@dataclass(frozen=True, slots=True)
class Steered:
    """One steered name's groups, default first."""

    name: str
    origin: str
    rtype: str
    groups: tuple[Group, ...]

    @property
    def default(self) -> Group:
        return self.groups[0]


def steered_names(config: Config) -> Mapping[str, Steered]:
    """Every steered name → its groups (computed once per config)."""
    return config.derived("engine.steered", _build)


def _build(config: Config) -> dict[str, Steered]:
    rules = steering_rules(config)
    found: dict[str, Steered] = {}
    for origin, name, record in config.managed():
        r = rules.get(name)
        if r is None or not isinstance(record, ActivePassive):
            continue
        where = places(r)
        tiers = {t.name: t for t in record.tiers}
        made: list[Group] = []
        for i, order in enumerate(groups(r)):
            gid = group_id(order)
            own = record.model_copy(
                update={"tiers": tuple(tiers[t] for t in order), "steering": None}
            )
            made.append(Group(gid, name if i == 0 else group_name(name, gid), own, where[gid]))
        found[name] = Steered(name, origin, record.type, tuple(made))
    return found


def decided(config: Config) -> tuple[tuple[str, str, FailoverRecord], ...]:
    """What the engine decides, in config order: every managed name, a steered one as its
    groups (default group first, under the name itself)."""
    return config.derived("engine.decided", _decided)


def _decided(config: Config) -> tuple[tuple[str, str, FailoverRecord], ...]:
    steered = steered_names(config)
    out: list[tuple[str, str, FailoverRecord]] = []
    for origin, name, record in config.managed():
        s = steered.get(name)
        if s is None:
            out.append((origin, name, record))
        else:
            out.extend((origin, g.decision, g.record) for g in s.groups)
    return tuple(out)
