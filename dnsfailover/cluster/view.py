"""A node's view of what the cluster holds in etcd, kept from a snapshot plus watch events.

Pure: it turns key-values into the changes the node's callbacks must hear about, and
does no I/O, so the etcd plumbing in `node.py` stays about connections and leases.
Reports and beats of the node itself are not echoed back: it knows them first-hand,
and an echo arriving after a newer local change would briefly undo it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dnsfailover.cluster import codec
from dnsfailover.cluster.keys import Keys
from dnsfailover.cluster.types import NameEntry, NodeBeat, Published, RegionReport, SharedDecision
from dnsfailover.engine.overrides import Override

log = logging.getLogger("dnsfailover.cluster")

# ("reports", RegionReport) | ("gone", (node, region)) | ("beat", NodeBeat)
# | ("overrides", None) | ("decision", Published)
Change = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class LeaderKey:
    node: str
    lease: int
    term: int  # the key's create revision


@dataclass(slots=True)
class View:
    keys: Keys
    me: str
    reports: dict[bytes, RegionReport] = field(default_factory=dict)
    groups: dict[tuple[str, str], set[bytes]] = field(default_factory=dict)  # (node, region)
    overrides: dict[str, Override] = field(default_factory=dict)
    decision: SharedDecision | None = None
    decision_rev: int = 0
    leader: LeaderKey | None = None
    names: dict[str, NameEntry] = field(default_factory=dict)  # in effect (seq <= head's)
    staged: dict[str, NameEntry] = field(default_factory=dict)  # written, head not yet

    @property
    def seq(self) -> int:
        """The newest decision number seen, staged entries included."""
        head = self.decision.seq if self.decision is not None else 0
        return max([head, *(e.seq for e in self.staged.values())])

    def load(self, kvs: list[Any]) -> list[Change]:
        """Replace everything with a full read; every current value is a change."""
        old_groups = self.groups
        self.reports, self.groups, self.overrides, self.leader = {}, {}, {}, None
        self.names, self.staged = {}, {}
        out: list[Change] = []
        for kv in kvs:
            out += self.put(kv, snapshot=True)
        if self.decision is not None:  # every name in effect at once, not one by one
            out.append(("decision", Published(self.decision, dict(self.names))))
        gone: list[Change] = [("gone", g) for g in old_groups if g not in self.groups]
        return [*gone, *out, ("overrides", None)]

    def put(self, kv: Any, *, snapshot: bool = False) -> list[Change]:
        p = self.keys.parse(kv.key)
        try:
            match p.kind:
                case "leader":
                    self.leader = LeaderKey(kv.value.decode(), kv.lease, kv.create_revision)
                case "decision":
                    if snapshot or kv.mod_revision > self.decision_rev:
                        self.decision = codec.loads(SharedDecision, kv.value)
                        self.decision_rev = kv.mod_revision
                        published = self._apply(self.decision)
                        return [] if snapshot else [("decision", published)]
                case "name":
                    entry = codec.loads(NameEntry, kv.value)
                    if self.decision is not None and entry.seq <= self.decision.seq:
                        self.names[p.id] = entry  # in a full read the head comes first
                        self.staged.pop(p.id, None)
                        if not snapshot:
                            return [("decision", Published(self.decision, {p.id: entry}))]
                    else:
                        self.staged[p.id] = entry
                case "override":
                    self.overrides[p.id] = Override.from_json(kv.value.decode())
                    return [] if snapshot else [("overrides", None)]
                case "node" if p.node != self.me:
                    return [("beat", codec.loads(NodeBeat, kv.value))]
                case "report" if p.node != self.me:
                    report = codec.loads(RegionReport, kv.value)
                    self.reports[kv.key] = report
                    self.groups.setdefault((p.node, p.region), set()).add(kv.key)
                    return [("reports", report)]
        except (codec.CodecError, ValueError, KeyError, TypeError) as e:
            # A newer node may write something this version cannot read: skip that key.
            log.warning("watch: cannot read %s: %s", kv.key.decode(errors="replace"), e)
        return []

    def _apply(self, head: SharedDecision) -> Published:
        """The staged entries a head brings into effect (those of its seq or older)."""
        due = {n: e for n, e in self.staged.items() if e.seq <= head.seq}
        for name in due:
            del self.staged[name]
        self.names.update(due)
        return Published(head, due)

    def delete(self, key: bytes) -> list[Change]:
        p = self.keys.parse(key)
        match p.kind:
            case "leader":
                self.leader = None
            case "override":
                if self.overrides.pop(p.id, None) is not None:
                    return [("overrides", None)]
            case "report" if p.node != self.me:
                self.reports.pop(key, None)
                group = self.groups.get((p.node, p.region))
                if group is not None:
                    group.discard(key)
                    if not group:
                        del self.groups[(p.node, p.region)]
                        return [("gone", (p.node, p.region))]
        # A deleted decision keeps being served: static stability over an operator's wipe.
        return []

    def override_list(self) -> list[Override]:
        return sorted(self.overrides.values(), key=lambda o: (o.created_at, o.id))
