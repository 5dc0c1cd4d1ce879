"""Overrides and their interlocks, and the circuit breaker; with properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine import AA, AP, NAME, D, U, X, config, health, key, step

from dnsfailover.engine.decide import decide, vet_override
from dnsfailover.engine.overrides import Action, Override
from dnsfailover.engine.values import EngineState
from dnsfailover.model import State

_ids = itertools.count()


def override(
    action: str,
    *,
    name: str | None = None,
    endpoint: str | None = None,
    tier: str | None = None,
    force: bool = False,
    at: float = 0.0,
    expires_at: float | None = None,
) -> Override:
    return Override(
        f"o{next(_ids)}", Action(action), name, endpoint, tier, "test", "tester", at,
        expires_at, force,
    )  # fmt: skip


def test_drain_keeps_an_endpoint_out_and_expires() -> None:
    cfg = config(AA)
    o = override("drain", endpoint="127.0.0.11", expires_at=50)
    d = step(cfg, None, health(a11=U, a12=U, a13=U), 0, overrides=[o])
    assert d.names[NAME].answer == ("127.0.0.12", "127.0.0.13")
    assert "override: drain" in d.names[NAME].reason
    assert d.wake_at == 50
    d = step(cfg, d, health(a11=U, a12=U, a13=U), 50, overrides=[o])
    assert d.names[NAME].answer == ("127.0.0.11", "127.0.0.12", "127.0.0.13")


def test_draining_the_last_healthy_endpoint_is_refused_without_force() -> None:
    cfg = config(AA)
    states = health(a11=U, a12=D, a13=D)
    o = override("drain", name=NAME, endpoint="127.0.0.11")
    why = vet_override(cfg, states, EngineState(), [], o, 0)
    assert why is not None
    assert "without a healthy endpoint" in why
    d = step(cfg, None, states, 0, overrides=[o])
    assert d.names[NAME].answer == ("127.0.0.11",), "set aside at decision time as well"
    assert d.refused == {o.id: why}
    forced = override("drain", name=NAME, endpoint="127.0.0.11", force=True)
    assert vet_override(cfg, states, EngineState(), [], forced, 0) is None
    d = step(cfg, None, states, 0, overrides=[forced])
    assert "forced past interlock" in d.names[NAME].reason
    assert d.names[NAME].mode == "all_down"


def test_a_safe_drain_becomes_unsafe_when_the_others_fail() -> None:
    cfg = config(AA)
    o = override("drain", endpoint="127.0.0.11")
    assert vet_override(cfg, health(a11=U, a12=U, a13=U), EngineState(), [], o, 0) is None
    d = step(cfg, None, health(a11=U, a12=U, a13=U), 0, overrides=[o])
    d = step(cfg, d, health(a11=U, a12=D, a13=D), 1, overrides=[o])
    assert d.names[NAME].answer == ("127.0.0.11",)
    assert "interlock" in d.names[NAME].reason


def test_force_down_of_the_last_healthy_tier_is_refused() -> None:
    cfg = config(AP)
    states = health(a21=U, a22=U, a31=D)
    o = override("force_down", name=NAME, tier="east")
    assert "without a healthy tier" in (vet_override(cfg, states, EngineState(), [], o, 0) or "")
    ok = override("force_down", name=NAME, tier="east")
    healthy = health(a21=U, a22=U, a31=U)
    assert vet_override(cfg, healthy, EngineState(), [], ok, 0) is None
    d = step(cfg, None, healthy, 0, overrides=[ok])
    assert d.names[NAME].tier == "west"


def test_force_up_beats_the_checks() -> None:
    cfg = config(AA)
    o = override("force_up", endpoint="127.0.0.12")
    d = step(cfg, None, health(a11=U, a12=D, a13=D), 0, overrides=[o])
    assert d.names[NAME].answer == ("127.0.0.11", "127.0.0.12")


def test_operator_failover_holds_until_failback() -> None:
    cfg = config(AP)
    states = health(a21=U, a22=U, a31=U)
    d = step(cfg, None, states, 0)
    fo = override("failover", name=NAME, at=1)
    d = step(cfg, d, states, 1, overrides=[fo])
    assert d.names[NAME].tier == "west"
    assert [t.kind for t in d.transitions] == ["failover"]
    d = step(cfg, d, states, 500, overrides=[fo])
    assert d.names[NAME].tier == "west", "auto failback does not undo an operator failover"
    fb = override("failback", name=NAME, at=600)
    d = step(cfg, d, states, 600, overrides=[fo, fb])
    assert d.names[NAME].tier == "east"
    d = step(cfg, d, states, 601, overrides=[fo])  # the failback was taken and removed
    assert d.names[NAME].tier == "east", "the ended failover does not pin again"


def test_failover_to_an_unhealthy_tier_is_refused() -> None:
    cfg = config(AP)
    states = health(a21=U, a22=U, a31=D)
    d = step(cfg, None, states, 0)
    fo = override("failover", name=NAME)
    assert "no healthy tier" in (vet_override(cfg, states, d.state, [], fo, 1) or "")
    assert (
        vet_override(cfg, states, d.state, [], override("failover", name=NAME, force=True), 1)
        is None
    )
    d = step(cfg, d, states, 1, overrides=[fo])
    assert d.names[NAME].tier == "east"


def test_failover_override_versus_max_failovers() -> None:
    cfg = config({**AP, "hold_down": "1s", "max_failovers": {"count": 1, "window": "1h"}})
    d = step(cfg, None, health(a21=U, a22=U, a31=U), 0)
    d = step(cfg, d, health(a21=D, a22=D, a31=U), 1)  # the one change allowed
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 5)
    assert d.names[NAME].tier == "west"
    fb = override("failback", name=NAME)
    assert "max_failovers" in (
        vet_override(cfg, health(a21=U, a22=U, a31=U), d.state, [], fb, 6) or ""
    )
    forced = override("failback", name=NAME, force=True)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 6, overrides=[forced])
    assert d.names[NAME].tier == "east"


BREAKER = {"circuit_breaker": {"down_pct": 50, "min_endpoints": 3}}
BIG = {"policy": "active-active", "endpoints": ["127.0.0.14", "127.0.0.15"]}


def test_circuit_breaker_freezes_on_mass_failure_then_thaws() -> None:
    cfg = config(AA, policy=BREAKER, api=BIG)
    everything = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
    d = step(cfg, None, health(a11=U, a12=U, a13=U, a14=U, a15=U), 0)
    d = step(cfg, d, health(a11=D, a12=D, a13=U, a14=D, a15=U), 1)  # 3/5 = 60% at once
    assert d.frozen is not None
    assert "circuit breaker" in d.frozen
    assert d.names[NAME].answer == everything
    assert d.transitions == ()
    assert "interlock: circuit breaker" in d.names[NAME].reason
    d = step(cfg, d, health(a11=D, a12=D, a13=U, a14=D, a15=U), 100)
    assert d.frozen is not None, "still compared with the last unfrozen decision"
    d = step(cfg, d, health(a11=D, a12=U, a13=U, a14=D, a15=U), 101)  # 2/5 = 40%
    assert d.frozen is None
    assert d.names[NAME].answer == ("127.0.0.12", "127.0.0.13")


def test_a_forced_override_releases_its_name_from_the_breaker() -> None:
    cfg = config(AA, policy=BREAKER, api=BIG)
    d = step(cfg, None, health(a11=U, a12=U, a13=U, a14=U, a15=U), 0)
    states = health(a11=D, a12=D, a13=U, a14=D, a15=U)
    plain = override("drain", name=NAME, endpoint="127.0.0.13")
    assert vet_override(cfg, states, d.state, [], plain, 1) is not None
    forced = override("force_down", name=NAME, endpoint="127.0.0.11", force=True)
    d = step(cfg, d, states, 1, overrides=[forced])
    assert d.frozen is not None
    assert d.names[NAME].answer == ("127.0.0.13",)
    assert d.names["api.example.test."].answer == ("127.0.0.14", "127.0.0.15")


def test_small_deployments_are_exempt_from_the_breaker() -> None:
    cfg = config(AA, policy={"circuit_breaker": {"down_pct": 50, "min_endpoints": 4}})
    d = step(cfg, None, health(a11=U, a12=U, a13=U), 0)
    d = step(cfg, d, health(a11=D, a12=D, a13=U), 1)
    assert d.frozen is None
    assert d.names[NAME].answer == ("127.0.0.13",)


# -- properties ---------------------------------------------------------------------------

AA_ADDRS = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"]
STATES = st.sampled_from([U, D, X])


@settings(max_examples=200, deadline=None)
@given(
    states=st.fixed_dictionaries({key(a): STATES for a in AA_ADDRS[:3]}),
    target=st.sampled_from(AA_ADDRS[:3]),
)
def test_draining_the_last_healthy_endpoint_is_always_refused(
    states: dict[str, State], target: str
) -> None:
    cfg = config(AA)
    up = [a for a in AA_ADDRS[:3] if states[key(a)] is U]
    o = override("drain", endpoint=target)
    why = vet_override(cfg, states, EngineState(), [], o, 0)
    if up == [target]:
        assert why is not None
    d = decide(cfg, states, EngineState(), 0, overrides=[o])
    if up and why is None:
        assert target not in d.names[NAME].answer
    if up:
        assert set(d.names[NAME].answer) & set(up), "a healthy endpoint is always answered"


@settings(max_examples=150, deadline=None)
@given(
    seq=st.lists(st.fixed_dictionaries({key(a): STATES for a in AA_ADDRS}), min_size=2, max_size=12)
)
def test_the_answer_never_changes_while_frozen(seq: list[dict[str, State]]) -> None:
    cfg = config(AA, policy=BREAKER, api=BIG)
    prev = None
    for now, states in enumerate(seq):
        d = step(cfg, prev, states, now)
        if d.frozen is not None and prev is not None:
            assert d.transitions == ()
            assert {n: nd.answer for n, nd in d.names.items()} == {
                n: nd.answer for n, nd in prev.names.items()
            }
        prev = d


@pytest.mark.parametrize("action", ["drain", "force_down"])
def test_removal_overrides_of_an_endpoint_everywhere(action: str) -> None:
    cfg = config(AA, api={"policy": "active-active", "endpoints": ["127.0.0.11", "127.0.0.14"]})
    o = override(action, endpoint="127.0.0.11")
    d = step(cfg, None, health(a11=U, a12=U, a13=U, a14=U), 0, overrides=[o])
    assert "127.0.0.11" not in d.names[NAME].answer
    assert d.names["api.example.test."].answer == ("127.0.0.14",)
