"""What nodes of a cluster share through etcd, as plain values.

`RegionReport`: one node's hysteresis-filtered view of one target (changes only).
`NodeBeat`: a node is alive and probing; its `last_probe_at` keeps its region's reports fresh.
`SharedDecision` and `NameEntry`: what the leader decided and every node serves: a head
(serials, breaker, refusals) and one entry per managed name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dnsfailover.model import State


@dataclass(frozen=True, slots=True)
class RegionReport:
    target: str
    region: str
    node: str
    state: State
    since: float
    reason: str


@dataclass(frozen=True, slots=True)
class NodeBeat:
    node: str
    region: str
    at: float  # wall clock of the beat
    last_probe_at: float  # newest observation this node made
    leader: bool = False
    isolated: bool = False  # the node's own view: its region is flagged isolated
    config: str = ""  # digest of the node's config: nodes should all run the same one


@dataclass(frozen=True, slots=True)
class NameEntry:
    """One managed name as the leader decided it: the engine's NameDecision and NameState,
    encoded compactly by `dnsfailover.cluster.codec`, and the transition that brought it
    there.  `seq` is the decision that wrote it; it is served once a head of that `seq`
    (or later) is in etcd."""

    seq: int
    decision: Mapping[str, Any]
    state: Mapping[str, Any]
    transition: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SharedDecision:
    """The head of the leader's decision.  `term` is the leader key's create revision
    (fencing token); `seq` numbers decisions across leaders.

    The names it changed are written (as `NameEntry`s, before it or in the same transaction)
    under their own keys, never the static records every node has in its config: what a
    decision writes to etcd is in proportion to what it changed.
    """

    term: int
    leader: str
    at: float
    seq: int = 0
    serials: Mapping[str, int] = field(default_factory=dict)  # every zone's, as served
    frozen: str | None = None
    refused: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # isolated regions, etc.


@dataclass(frozen=True, slots=True)
class Published:
    """A head that came into effect, and the name entries it made visible with it."""

    head: SharedDecision
    entries: Mapping[str, NameEntry]
