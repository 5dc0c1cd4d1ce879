"""What the engine looks up by name, health key or endpoint, computed once per config.

A health change re-decides only the names that use the changed key (`by_key`); an override
that names an endpoint everywhere re-decides the names that answer it (`by_address`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dnsfailover.config.schema import Config
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.settings import FailoverRecord
from dnsfailover.engine.steering import decided, steered_names


@dataclass(frozen=True, slots=True)
class Index:
    # (origin, name, record) in config order: what is decided (a steered record's groups
    # each under its own decision name, see engine/steering.py)
    managed: tuple[tuple[str, str, FailoverRecord], ...]
    position: Mapping[str, int]  # name → its place in `managed`
    keys: Mapping[str, frozenset[str]]  # name → the health keys of its endpoints
    slots: Mapping[str, tuple[tuple[str, str, str], ...]]  # name → (tier, address, key)...
    by_key: Mapping[str, tuple[str, ...]]  # health key → the names that use it
    by_address: Mapping[str, tuple[str, ...]]  # endpoint address → the names it serves
    all_keys: frozenset[str]
    # a steered record's name → the names its location groups are decided under
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def affected(self, keys: Iterable[str]) -> int:
        """How many names a change of these health keys re-decides (at most)."""
        return sum(len(self.by_key.get(key, ())) for key in keys)

    def touched(self, o: Override) -> tuple[str, ...]:
        """The names an override can change."""
        if o.name is not None:
            found = self.groups.get(o.name)
            if found is not None:
                return found
            return (o.name,) if o.name in self.position else ()
        if o.endpoint is not None:
            return self.by_address.get(o.endpoint, ())
        return ()


def index(config: Config) -> Index:
    return config.derived("engine.index", _build)


def _build(config: Config) -> Index:
    managed = decided(config)
    keys: dict[str, frozenset[str]] = {}
    slots: dict[str, tuple[tuple[str, str, str], ...]] = {}
    by_key: dict[str, list[str]] = {}
    by_address: dict[str, list[str]] = {}
    for _origin, name, record in managed:
        mine = set()
        found = []
        for tier in record.tiers:
            for e in tier.endpoints:
                key = config.health_key(record, e)
                mine.add(key)
                found.append((tier.name, e.address, key))
                users = by_address.setdefault(e.address, [])
                if not users or users[-1] != name:
                    users.append(name)
        keys[name] = frozenset(mine)
        slots[name] = tuple(found)
        for key in mine:
            by_key.setdefault(key, []).append(name)
    return Index(
        managed=managed,
        position={name: i for i, (_o, name, _r) in enumerate(managed)},
        keys=keys,
        slots=slots,
        by_key={k: tuple(v) for k, v in by_key.items()},
        by_address={a: tuple(v) for a, v in by_address.items()},
        all_keys=frozenset(by_key),
        groups={
            name: tuple(g.decision for g in s.groups) for name, s in steered_names(config).items()
        },
    )
