"""The engine's value types: what it remembers between decisions and what it decides.

Every field added after the first release has a default, so older constructors, stored rows
and the cluster codec (which fills missing keys with defaults) keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dnsfailover.engine.overrides import Override
from dnsfailover.model import ZoneContent


@dataclass(frozen=True, slots=True)
class NameState:
    """What the engine remembers of one managed name between decisions."""

    active: str | None = None  # name of the serving tier; None before the first decision
    healthy_since: Mapping[str, float] = field(default_factory=dict)  # tier → since when
    answer: tuple[str, ...] = ()  # what is published (a shadow name keeps its old answer)
    would_answer: tuple[str, ...] = ()  # what the rules chose (equals `answer` when live)
    mode: str = ""  # the last decision's mode, kept while the circuit breaker freezes
    up: tuple[str, ...] = ()  # addresses that were serviceable: flips are counted against it
    down: tuple[str, ...] = ()  # health keys DOWN at the last unfrozen decision (breaker)
    changes: tuple[float, ...] = ()  # when the serving tier changed, within max_failovers
    penalties: Mapping[str, float] = field(default_factory=dict)  # damping: "" or address
    penalty_at: float = 0.0  # when `penalties` were last decayed
    weights: Mapping[str, int] = field(default_factory=dict)  # published with `answer`
    suppressed: tuple[str, ...] = ()  # damping keys held until their penalty falls to reuse
    staged_from: str | None = None  # staged failback: the tier still carrying the rest
    staged_since: float | None = None
    pin: str | None = None  # id of the failover override that holds `active`
    released: str | None = None  # id of a failover override a failback has ended


@dataclass(frozen=True, slots=True)
class EngineState:
    names: Mapping[str, NameState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """A managed name's answer changed; `kind` is failover, failback, answer, all_down, or
    shadow (what a shadow-mode name would have published)."""

    name: str
    at: float
    kind: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class NameDecision:
    """Why one name answers what it answers."""

    name: str
    zone: str
    policy: str
    answer: tuple[str, ...]  # what is published
    tier: str | None
    mode: str  # healthy | degraded | all_down | no_data
    reason: str
    weights: Mapping[str, int] = field(default_factory=dict)  # address → relative weight
    loads: Mapping[str, float] = field(default_factory=dict)  # address → expected load
    ttl: int | None = None  # None: the record's ttl
    would_answer: tuple[str, ...] = ()  # what live mode would publish (shadow mode)
    shadow: bool = False
    damped: bool = False
    penalty: float = 0.0  # the largest current damping penalty of the name
    over_capacity: bool = False
    notes: tuple[str, ...] = ()  # each rule that acted, prefixed with the rule's name


@dataclass(frozen=True, slots=True)
class Decision:
    """Every managed name's decision, and what the next (incremental) decision needs.

    `changed` lists the names whose decision or state this decision changed (every name
    after a full decision): what a publisher, a store or a cluster has to pass on.
    """

    zones: tuple[ZoneContent, ...]  # serial 0: the service numbers what it publishes
    names: Mapping[str, NameDecision]
    transitions: tuple[Transition, ...]
    state: EngineState
    wake_at: float | None  # re-decide then even if no health changes (timed rules)
    frozen: str | None = None  # why the circuit breaker holds every answer, if it does
    refused: Mapping[str, str] = field(default_factory=dict)  # override id → why not applied
    refusals: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # per name
    wakes: Mapping[str, float] = field(default_factory=dict)  # name → its next timed change
    overrides: tuple[Override, ...] = ()  # those in force for this decision
    changed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Published:
    """What a node serves now: the zones (with their serials) of the decision it serves."""

    zones: tuple[ZoneContent, ...]
    decision: Decision
    at: float
