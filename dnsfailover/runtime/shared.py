"""A cluster's decision in etcd and the node's own view of it, one changed name at a time.

The leader writes a `NameEntry` for each name its decision changed and a head with the
serials (`SharedDecision`); never the static records, which every node has in its config.
Every node (the leader too) keeps the decoded names and states of what it has applied and
makes its zones from its own config plus those names, so serving a head costs what it
changed, not the zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from dnsfailover.cluster.codec import decode, encode
from dnsfailover.cluster.types import NameEntry, Published
from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import build_zone, managed_set
from dnsfailover.engine.index import index
from dnsfailover.engine.values import Decision, EngineState, NameDecision, NameState, Transition
from dnsfailover.model import Key, RecordSet, ZoneContent


def entries(decision: Decision, seq: int, written: Mapping[str, NameEntry]) -> dict[str, NameEntry]:
    """The entries to write for `decision`: its changed names whose decision or state
    differs from what etcd holds (`written`)."""
    transitions = {t.name: t for t in decision.transitions}
    out: dict[str, NameEntry] = {}
    for name in decision.changed:
        nd, ns = decision.names.get(name), decision.state.names.get(name)
        if nd is None or ns is None:
            continue
        data, state = encode(nd, compact=True), encode(ns, compact=True)
        old = written.get(name)
        t = transitions.get(name)
        if old is not None and old.decision == data and old.state == state and t is None:
            continue
        out[name] = NameEntry(seq, data, state, None if t is None else encode(t, compact=True))
    return out


class SharedView:
    """What this node has applied of the cluster's decisions, decoded."""

    def __init__(self) -> None:
        self.names: dict[str, NameDecision] = {}
        self.states: dict[str, NameState] = {}
        self._zones: tuple[ZoneContent, ...] | None = None
        self._config: Config | None = None
        self._changed: set[str] = set()
        self._transitions: list[Transition] = []

    def take(self, published: Published) -> None:
        """Decode what a head brought into effect (it is served at the next `decision`)."""
        for name, entry in published.entries.items():
            self.names[name] = decode(NameDecision, entry.decision)
            self.states[name] = decode(NameState, entry.state)
            if entry.transition is not None:
                self._transitions.append(decode(Transition, entry.transition))
            self._changed.add(name)

    def decision(self, published: Published, config: Config) -> Decision:
        """The engine-shaped decision to serve: every name applied so far, the zones made
        from `config` (the changed names' sets replaced) and the head's serials."""
        head = published.head
        changed, self._changed = frozenset(self._changed), set()
        transitions, self._transitions = tuple(self._transitions), []
        if self._zones is None or config is not self._config:
            zones = tuple(build_zone(o, z, self.names) for o, z in config.zones.items())
        else:
            zones = _updated(self._zones, config, self.names, changed)
        self._zones, self._config = zones, config
        stamped = tuple(
            replace(z, soa=replace(z.soa, serial=head.serials.get(z.origin, 0))) for z in zones
        )
        return Decision(
            stamped,
            dict(self.names),
            transitions,
            EngineState(dict(self.states)),
            None,
            head.frozen,
            dict(head.refused),
            changed=changed,
        )


def _updated(
    zones: tuple[ZoneContent, ...],
    config: Config,
    names: Mapping[str, NameDecision],
    changed: Iterable[str],
) -> tuple[ZoneContent, ...]:
    ix = index(config)
    updates: dict[str, dict[Key, RecordSet]] = {}
    for name in changed:
        at = ix.position.get(name)
        if at is None or name not in names:
            continue  # a name of another config (the leader's, during a rolling reload)
        origin, _name, record = ix.managed[at]
        updates.setdefault(origin, {})[(name, record.type)] = managed_set(name, record, names[name])
    return tuple(z.with_managed(updates[z.origin]) if z.origin in updates else z for z in zones)
