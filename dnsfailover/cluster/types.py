"""What nodes of a cluster share through etcd, as plain values.

`RegionReport`: one node's hysteresis-filtered view of one target (changes only).
`NodeBeat`: a node is alive and probing; its `last_probe_at` keeps its region's reports fresh.
`SharedDecision`: what the leader decided and every node serves, serials included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dnsfailover.model import State, ZoneContent


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
class SharedDecision:
    """The leader's decision.  `term` is the leader key's create revision (fencing token).

    `names` and `engine` are the engine's NameDecision and EngineState encoded by
    `dnsfailover.cluster.codec` so a new leader continues where the old one stopped.
    """

    term: int
    leader: str
    at: float
    zones: tuple[ZoneContent, ...]  # with the serials every node serves
    names: Mapping[str, Any] = field(default_factory=dict)
    engine: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # isolated regions, etc.
