"""`redecide` (re-decide only what changed) against `decide` (every name), the reference:
over random sequences of health changes, elapsed time, overrides and breaker resets, both
give the same answers, zones, transitions, wake times and refusals."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import decide, redecide
from dnsfailover.engine.overrides import Action, Override
from dnsfailover.engine.values import Decision, EngineState
from dnsfailover.model import State

ADDRESSES = [f"127.0.0.{i}" for i in range(11, 19)]
KEYS = [f"web@{a}:80" for a in ADDRESSES]
_ids = itertools.count()


def config(policy: dict[str, Any]) -> Config:
    """Six names over eight shared endpoints: active-active and active-passive, with the
    timed rules (hold-down, staged failback, degraded TTL, max_failovers, damping)."""
    a = ADDRESSES
    failover: dict[str, dict[str, Any]] = {
        "aa1": {"policy": "active-active", "endpoints": a[0:3], "min_healthy": 2},
        "aa2": {"policy": "active-active", "endpoints": a[2:5], "all_down": "serve_none"},
        "aa3": {"policy": "active-active", "endpoints": [a[0], a[7]]},
        "ap1": {
            "policy": "active-passive",
            "hold_down": "5s",
            "tiers": [{"name": "one", "endpoints": a[0:2]}, {"name": "two", "endpoints": a[5:7]}],
        },
        "ap2": {
            "policy": "active-passive",
            "failback": "staged",
            "hold_down": "3s",
            "staged": {"share": 0.5, "hold": "4s"},
            "tiers": [{"name": "one", "endpoints": a[3:5]}, {"name": "two", "endpoints": a[6:8]}],
        },
        "ap3": {
            "policy": "active-passive",
            "failback": "manual",
            "tiers": [{"name": "one", "endpoints": [a[1]]}, {"name": "two", "endpoints": [a[7]]}],
        },
        # steered: each location group is decided as a name of its own (NAME@GROUP)
        "st1": {
            "policy": "active-passive",
            "hold_down": "4s",
            "tiers": [
                {"name": "one", "endpoints": a[0:2]},
                {"name": "two", "endpoints": a[3:5]},
                {"name": "three", "endpoints": [a[7]]},
            ],
            "steering": {
                "by": "country",
                "map": {"DE": ["one", "two"], "US": ["two", "three", "one"], "JP": ["three"]},
                "default": ["two", "one"],
            },
        },
    }
    return zone_config({k: {"check": "web", **v} for k, v in failover.items()}, policy)


def zone_config(failover: dict[str, dict[str, Any]], policy: dict[str, Any]) -> Config:
    """One zone, example.test., with these failover records and policy; check `web` (tcp)."""
    return Config.model_validate(
        {
            "checks": {"web": {"type": "tcp", "port": 80, "interval": "1s", "timeout": "500ms"}},
            "policy": policy,
            "zones": {
                "example.test.": {
                    "soa": {"mname": "ns1.example.test.", "rname": "hostmaster.example.test."},
                    "nameservers": ["ns1.example.test."],
                    "records": {"ns1": {"type": "A", "value": "127.0.0.1"}},
                    "failover": failover,
                }
            },
        }
    )


POLICIES: dict[str, dict[str, Any]] = {
    "plain": {},
    "timed": {"degraded_ttl": 5, "max_failovers": {"count": 2, "window": "20s"}},
    "damped": {"damping": {"penalty": 1000, "suppress": 2000, "reuse": 750, "half_life": "10s"}},
    "breaker": {"circuit_breaker": {"down_pct": 40, "min_endpoints": 4}},
}

NAMES = ["aa1", "aa2", "aa3", "ap1", "ap2", "ap3", "st1"]
states = st.sampled_from([State.UP, State.DOWN, State.UNKNOWN])
flips = st.dictionaries(st.sampled_from(KEYS), states, max_size=4)
override = st.one_of(
    st.tuples(st.just("drain"), st.none(), st.sampled_from(ADDRESSES), st.none()),
    st.tuples(
        st.just("force_down"), st.sampled_from(["ap1", "ap2", "st1"]), st.none(), st.just("one")
    ),
    st.tuples(st.just("force_up"), st.none(), st.sampled_from(ADDRESSES), st.none()),
    st.tuples(st.just("failover"), st.sampled_from(["ap1", "ap3", "st1"]), st.none(), st.none()),
    st.tuples(st.just("failover"), st.just("st1"), st.none(), st.just("three")),
    st.tuples(st.just("failback"), st.sampled_from(["ap1", "ap3", "st1"]), st.none(), st.none()),
)
step = st.tuples(
    st.floats(min_value=0.0, max_value=8.0),  # time passing
    flips,
    st.lists(st.tuples(override, st.one_of(st.none(), st.floats(1.0, 20.0))), max_size=1),
    st.booleans(),  # drop the oldest override
    st.integers(0, 20),  # 0: the operator resets the breaker
)


def make(
    spec: tuple[str, str | None, str | None, str | None], at: float, life: float | None
) -> Override:
    action, name, endpoint, tier = spec
    full = None if name is None else f"{name}.example.test."
    expires = None if life is None else at + life
    return Override(
        f"o{next(_ids)}", Action(action), full, endpoint, tier, "test", "t", at, expires
    )


def same(full: Decision, inc: Decision) -> None:
    for name, nd in full.names.items():
        got = inc.names[name]
        assert (got.answer, got.tier, got.mode, got.ttl, dict(got.weights)) == (
            nd.answer, nd.tier, nd.mode, nd.ttl, dict(nd.weights)
        ), name  # fmt: skip
        a, b = full.state.names[name], inc.state.names[name]
        assert (a.active, a.answer, a.mode, a.weights, a.staged_from, a.pin) == (
            b.active, b.answer, b.mode, b.weights, b.staged_from, b.pin
        ), name  # fmt: skip
    assert [z.records for z in full.zones] == [z.records for z in inc.zones]
    assert [dict(z.steered) for z in full.zones] == [dict(z.steered) for z in inc.zones]
    assert full.wake_at == pytest.approx(inc.wake_at) if full.wake_at else inc.wake_at is None
    assert full.frozen == inc.frozen
    assert dict(full.refused) == dict(inc.refused)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@settings(max_examples=120, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=25))
def test_incremental_decisions_equal_full_ones(policy: str, steps: list[Any]) -> None:
    cfg = config(POLICIES[policy])
    health = dict.fromkeys(KEYS, State.UP)
    now = 1000.0
    overrides: list[Override] = []
    full = decide(cfg, health, EngineState(), now)
    inc = full
    for dt, changes, new, drop, reset in steps:
        now += dt
        changed = {k for k, s in changes.items() if health[k] is not s}
        health.update(changes)
        if drop and overrides:
            overrides.pop(0)
        overrides += [make(spec, now, life) for spec, life in new]
        kwargs: dict[str, Any] = {"overrides": list(overrides), "reset_breaker": reset == 0}
        full_transitions = decide(cfg, health, full.state, now, **kwargs)
        inc = redecide(cfg, health, inc, now, changed=changed, **kwargs)
        full = full_transitions
        same(full, inc)
        assert {(t.name, t.kind, t.new) for t in full.transitions} == {
            (t.name, t.kind, t.new) for t in inc.transitions
        }
        # a failback is taken once, as the node does after each decision
        overrides = [o for o in overrides if o.action is not Action.FAILBACK]


def test_a_change_re_decides_only_the_names_that_use_it() -> None:
    cfg = config({})
    health = dict.fromkeys(KEYS, State.UP)
    first = decide(cfg, health, EngineState(), 0.0)
    health[KEYS[7]] = State.DOWN  # 127.0.0.18: aa3, and ap2's and ap3's second tiers
    d = redecide(cfg, health, first, 1.0, changed={KEYS[7]})
    # only the names that use it are decided again; the others keep their very decisions:
    # of st1, only the location groups with tier three
    users = {
        "aa3.example.test.",
        "ap2.example.test.",
        "ap3.example.test.",
        "st1.example.test.@two,three,one",
        "st1.example.test.@three",
    }
    assert d.changed == users  # their state records the key DOWN
    assert all(d.names[n] is first.names[n] for n in first.names if n not in users)
    # and only aa3 answers differently: the one managed set replaced
    moved = {k for k, rs in d.zones[0].managed.items() if first.zones[0].managed[k] != rs}
    assert moved == {("aa3.example.test.", "A")}
    assert d.names["aa3.example.test."].answer == ("127.0.0.11",)
    unchanged = redecide(cfg, health, d, 2.0, changed=set())
    assert unchanged.changed == frozenset()
    assert unchanged.zones[0] is d.zones[0]


def test_a_new_failover_pin_on_a_dead_tier_decides_as_every_later_decision_does() -> None:
    """Found by the property test: a failover override naming the tier a name is already on,
    while that tier is down, kept the name on it (fail-open), and the next decision with the
    same inputs moved it to the next healthy tier (which an incremental decision never took)."""
    cfg = config(POLICIES["breaker"])
    health = dict.fromkeys(KEYS, State.UP)
    group = "st1.example.test.@two,three,one"
    start = decide(cfg, health, EngineState(), 1000.0)
    first = make(("failover", "st1", None, None), 1000.0, None)  # two -> three
    d = decide(cfg, health, start.state, 1000.0, overrides=[first])
    assert d.names[group].tier == "three"
    health[KEYS[7]] = State.DOWN  # 127.0.0.18: tier three
    second = make(("failover", "st1", None, "three"), 1000.0, None)
    pinned = decide(cfg, health, d.state, 1000.0, overrides=[first, second])
    again = decide(cfg, health, pinned.state, 1000.0, overrides=[first, second])
    assert pinned.names[group].answer == again.names[group].answer == ("127.0.0.11", "127.0.0.12")


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_deciding_every_name_again_later_changes_no_state_that_did_not_change(
    policy: str,
) -> None:
    """A new cluster leader decides every name once and writes to etcd the names whose
    decision or state differs: a state that moved with the clock alone (a damping time
    without penalties) made it rewrite every name of the config."""
    cfg = config(POLICIES[policy])
    health = dict.fromkeys(KEYS, State.UP)
    first = decide(cfg, health, EngineState(), 0.0)
    health[KEYS[7]] = State.DOWN
    moved = decide(cfg, health, first.state, 1.0)
    again = decide(cfg, health, moved.state, 60.0)
    damped = {n for n, s in moved.state.names.items() if s.penalties}
    assert policy != "damped" or damped  # the flap of KEYS[7] was charged somewhere
    kept = {n for n in moved.state.names if moved.state.names[n] == again.state.names[n]}
    assert kept == set(moved.state.names) - damped
    assert [n.answer for n in again.names.values()] == [n.answer for n in moved.names.values()]


def test_a_wake_due_at_the_very_time_of_a_decision_is_kept() -> None:
    """A rule that wakes at `since + hold_down` can be decided at exactly that time and not
    act yet (the difference rounds below the hold): the name must be taken again by the next
    decision, or the incremental one misses the failback a full one makes."""
    cfg = config({})
    health = dict.fromkeys(KEYS, State.UP)
    full = inc = decide(cfg, health, EngineState(), 1000.0)
    back = 1019.004
    assert (back + 5.0) - back < 5.0  # ap1's hold_down, rounded below
    tier_one = {KEYS[0], KEYS[1]}  # ap1's first tier
    for now, state in [
        (1010.0, State.DOWN),
        (back, State.UP),
        (back + 5.0, None),
        (back + 6.0, None),
    ]:
        changed = set()
        if state is not None:
            changed = tier_one
            health.update(dict.fromkeys(tier_one, state))
        full = decide(cfg, health, full.state, now)
        inc = redecide(cfg, health, inc, now, changed=changed)
        same(full, inc)
    assert inc.names["ap1.example.test."].tier == "one"  # failed back after hold_down
