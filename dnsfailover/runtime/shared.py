"""A cluster's decision in etcd and the node's own view of it, one changed name at a time.

The leader writes a `NameEntry` for each name its decision changed and a head with the
serials (`SharedDecision`); never the static records, which every node has in its config.
Every node (the leader too) keeps the decoded names and states of what it has applied and
makes its zones from its own config plus those names, so serving a head costs what it
changed, not the zone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any

from dnsfailover.cluster.codec import decode, encode
from dnsfailover.cluster.types import NameEntry, Published
from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import build_zone
from dnsfailover.engine.index import index
from dnsfailover.engine.settings import FailoverRecord
from dnsfailover.engine.steering import steered_names
from dnsfailover.engine.values import Decision, EngineState, NameDecision, NameState, Transition
from dnsfailover.engine.zones import updated
from dnsfailover.model import ZoneContent


def entries(
    decision: Decision,
    seq: int,
    written: Mapping[str, NameEntry],
    also: Collection[str] = (),
) -> dict[str, NameEntry]:
    """The entries to write for `decision`: its changed names whose decision or state
    differs from what etcd holds (`written`), and the names `also` whatever it holds (those
    of a publish that failed: etcd may lack them, or hold them staged for a later head)."""
    transitions = {t.name: t for t in decision.transitions}
    out: dict[str, NameEntry] = {}
    for name in {*decision.changed, *also}:
        nd, ns = decision.names.get(name), decision.state.names.get(name)
        if nd is None or ns is None:
            continue
        t = transitions.get(name)
        data, state, change = pack(name, nd, ns, t)
        old = written.get(name)
        same = old is not None and old.decision == data and old.state == state
        if same and t is None and name not in also:
            continue
        out[name] = NameEntry(seq, data, state, change)
    return out


# What an entry leaves out because it repeats another of its values: field -> where that
# value is ("@" the key's name, "1" one weight per answered address).  A field that differs
# is written, even when it holds its default.  Entries of the earlier layout always carry
# the decision's `name`; one without it is of this layout.  (An endpoint's 20 names: ~9 KB
# in etcd per change instead of ~13 KB.)
_SAME_IN_DECISION = {"name": "@", "would_answer": "answer", "weights": "1"}
_SAME_AS_DECISION = {"answer": "answer", "weights": "weights", "would_answer": "would_answer",
                     "mode": "mode"}  # fmt: skip
_SAME_IN_TRANSITION = {"name": "@", "new": "answer", "reason": "reason"}


def pack(
    name: str, nd: NameDecision, ns: NameState, t: Transition | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """A name's decision, state and transition, encoded compactly for its etcd entry."""
    full = encode(nd)
    data = _leave_out(encode(nd, compact=True), full, _SAME_IN_DECISION, name, full)
    state = _leave_out(encode(ns, compact=True), encode(ns), _SAME_AS_DECISION, name, full)
    change = None
    if t is not None:
        change = _leave_out(encode(t, compact=True), encode(t), _SAME_IN_TRANSITION, name, full)
    return data, state, change


def unpack(name: str, entry: NameEntry) -> tuple[NameDecision, NameState, Transition | None]:
    """What `pack` wrote, decoded (entries of the earlier layout decode as they are)."""
    data, state, t = dict(entry.decision), dict(entry.state), entry.transition
    change = None if t is None else dict(t)
    if "name" not in data:
        _fill_in(data, _SAME_IN_DECISION, name, data)
        _fill_in(state, _SAME_AS_DECISION, name, data)
        if change is not None:
            _fill_in(change, _SAME_IN_TRANSITION, name, data)
    nd, ns = decode(NameDecision, data), decode(NameState, state)
    return nd, ns, None if change is None else decode(Transition, change)


def _value(where: str, name: str, ref: Mapping[str, Any]) -> Any:
    if where == "@":
        return name
    if where == "1":
        return {a: 1 for a in ref["answer"]}
    return ref[where]


def _leave_out(
    d: dict[str, Any],
    full: Mapping[str, Any],
    same: Mapping[str, str],
    name: str,
    ref: Mapping[str, Any],
) -> dict[str, Any]:
    """`d` (compact) without the fields of `same` equal to their reference, and with
    those that differ written even when they hold their default (`full`)."""
    for field, where in same.items():
        if full[field] == _value(where, name, ref):
            d.pop(field, None)
        else:
            d[field] = full[field]
    return d


def _fill_in(d: dict[str, Any], same: Mapping[str, str], name: str, ref: dict[str, Any]) -> None:
    for field, where in same.items():
        if field not in d:
            d[field] = _value(where, name, ref)


COSTLY_NAMES = 500  # names whose decoding and sets are worth a thread's hand-over


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
            self.names[name], self.states[name], t = unpack(name, entry)
            if t is not None:
                self._transitions.append(t)
            self._changed.add(name)

    def costly(self, batch: list[Published], config: Config) -> bool:
        """Whether `advance` would take long enough to belong on a thread."""
        fresh = self._zones is None or config is not self._config
        return fresh or sum(len(p.entries) for p in batch) > COSTLY_NAMES

    def advance(self, batch: list[Published], config: Config) -> Decision:
        """Take every head of `batch` (oldest first) and make the decision of the last."""
        for published in batch:
            self.take(published)
        return self.decision(batch[-1], config)

    def decision(self, published: Published, config: Config) -> Decision:
        """The engine-shaped decision to serve: every name applied so far, the zones made
        from `config` (the changed names' sets replaced) and the head's serials."""
        head = published.head
        changed, self._changed = frozenset(self._changed), set()
        transitions, self._transitions = tuple(self._transitions), []
        if self._zones is None or config is not self._config:
            steered = steered_names(config)
            zones = tuple(
                build_zone(o, z, self.names, steered=steered) for o, z in config.zones.items()
            )
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
    by_zone: dict[str, list[tuple[str, FailoverRecord]]] = {}
    for name in changed:
        at = ix.position.get(name)
        if at is None or name not in names:
            continue  # a name of another config (the leader's, during a rolling reload)
        origin, _name, record = ix.managed[at]
        by_zone.setdefault(origin, []).append((name, record))
    steered = steered_names(config)
    return tuple(
        updated(z, by_zone[z.origin], names, steered) if z.origin in by_zone else z for z in zones
    )
