"""The failover engine: tables for each rule, hypothesis for the properties."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import decide
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.values import Decision, EngineState
from dnsfailover.model import State

U, D, X = State.UP, State.DOWN, State.UNKNOWN
NAME = "www.example.test."


def config(
    record: dict[str, Any], policy: dict[str, Any] | None = None, **others: dict[str, Any]
) -> Config:
    """A one-zone config: `record` is www; `others` more failover records by label."""
    failover = {label: {"check": "web", **r} for label, r in {"www": record, **others}.items()}
    return Config.model_validate(
        {
            "checks": {"web": {"type": "tcp", "port": 80, "interval": "1s", "timeout": "500ms"}},
            "policy": policy or {},
            "zones": {
                "example.test.": {
                    "soa": {"mname": "ns1.example.test.", "rname": "hostmaster.example.test."},
                    "nameservers": ["ns1.example.test."],
                    "failover": failover,
                }
            },
        }
    )


def key(address: str) -> str:
    return f"web@{address}:80"


def health(**states: State) -> dict[str, State]:
    """`a11=U` means 127.0.0.11 is up."""
    return {key(f"127.0.0.{k[1:]}"): v for k, v in states.items()}


AA = {"policy": "active-active", "endpoints": ["127.0.0.11", "127.0.0.12", "127.0.0.13"]}
AP = {
    "policy": "active-passive",
    "hold_down": "30s",
    "tiers": [
        {"name": "east", "endpoints": ["127.0.0.21", "127.0.0.22"]},
        {"name": "west", "endpoints": ["127.0.0.31"]},
    ],
}


def answer(d: Decision) -> tuple[str, ...]:
    return d.names[NAME].answer


def served(d: Decision) -> tuple[str, ...] | None:
    """What the zone content really answers for www A (None: no record set at all)."""
    for rs in d.zones[0].records:
        if rs.name == NAME and rs.rtype == "A":
            return rs.values
    return None


@pytest.mark.parametrize(
    ("extra", "states", "expected", "mode"),
    [
        ({}, health(a11=U, a12=U, a13=U), ("127.0.0.11", "127.0.0.12", "127.0.0.13"), "healthy"),
        ({}, health(a11=U, a12=D, a13=U), ("127.0.0.11", "127.0.0.13"), "degraded"),
        ({}, health(a11=D, a12=D, a13=U), ("127.0.0.13",), "degraded"),
        ({}, health(a11=D, a12=D, a13=D), ("127.0.0.11", "127.0.0.12", "127.0.0.13"), "all_down"),
        ({"all_down": "serve_none"}, health(a11=D, a12=D, a13=D), (), "all_down"),
        (
            {"all_down": "fallback", "fallback": ["192.0.2.1"]},
            health(a11=D, a12=D, a13=D),
            ("192.0.2.1",),
            "all_down",
        ),
        (
            {"min_healthy": 2},
            health(a11=U, a12=D, a13=D),
            ("127.0.0.11", "127.0.0.12", "127.0.0.13"),
            "all_down",
        ),
        ({"min_healthy": 2, "all_down": "serve_none"}, health(a11=U, a12=D, a13=D), (), "all_down"),
        ({"min_healthy": 2}, health(a11=U, a12=D, a13=U), ("127.0.0.11", "127.0.0.13"), "degraded"),
        ({"all_down": "serve_none"}, {}, ("127.0.0.11", "127.0.0.12", "127.0.0.13"), "no_data"),
        ({}, health(a11=U, a12=X, a13=X), ("127.0.0.11",), "degraded"),
    ],
)
def test_active_active_table(
    extra: dict[str, Any], states: dict[str, State], expected: tuple[str, ...], mode: str
) -> None:
    d = decide(config({**AA, **extra}), states, EngineState(), 100.0)
    assert answer(d) == expected
    assert served(d) == expected
    assert d.names[NAME].mode == mode


def step(
    cfg: Config,
    prev: Decision | None,
    states: dict[str, State],
    now: float,
    failback: frozenset[str] = frozenset(),
    overrides: Sequence[Override] = (),
) -> Decision:
    state = prev.state if prev else EngineState()
    return decide(cfg, states, state, now, failback=failback, overrides=overrides)


def test_active_passive_fails_over_and_back_after_hold_down() -> None:
    cfg = config(AP)
    d = step(cfg, None, health(a21=U, a22=U, a31=U), 0)
    assert answer(d) == ("127.0.0.21", "127.0.0.22")
    assert d.names[NAME].tier == "east"
    d = step(cfg, d, health(a21=D, a22=U, a31=U), 1)
    assert answer(d) == ("127.0.0.22",), "min_healthy 1: one survivor keeps the tier"
    d = step(cfg, d, health(a21=D, a22=D, a31=U), 2)
    assert answer(d) == ("127.0.0.31",)
    assert [t.kind for t in d.transitions] == ["failover"]
    d = step(cfg, d, health(a21=U, a22=D, a31=U), 10)
    assert answer(d) == ("127.0.0.31",), "east is back but not for hold_down yet"
    assert d.wake_at == pytest.approx(40)
    d = step(cfg, d, health(a21=U, a22=D, a31=U), 39.9)
    assert answer(d) == ("127.0.0.31",)
    d = step(cfg, d, health(a21=U, a22=D, a31=U), 40)
    assert answer(d) == ("127.0.0.21",)
    assert [t.kind for t in d.transitions] == ["failback"]


def test_hold_down_restarts_when_primary_flaps() -> None:
    cfg = config(AP)
    d = step(cfg, None, health(a21=D, a22=D, a31=U), 0)
    assert answer(d) == ("127.0.0.31",)
    d = step(cfg, d, health(a21=U, a31=U), 10)
    d = step(cfg, d, health(a21=D, a31=U), 25)
    d = step(cfg, d, health(a21=U, a31=U), 30)
    d = step(cfg, d, health(a21=U, a31=U), 45)
    assert answer(d) == ("127.0.0.31",), "health must be continuous for hold_down"
    d = step(cfg, d, health(a21=U, a31=U), 60)
    assert answer(d) == ("127.0.0.21",)


def test_manual_failback_waits_for_operator() -> None:
    cfg = config({**AP, "failback": "manual"})
    d = step(cfg, None, health(a21=U, a31=U), 0)
    d = step(cfg, d, health(a21=D, a22=D, a31=U), 1)
    assert answer(d) == ("127.0.0.31",)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 1000)
    assert answer(d) == ("127.0.0.31",)
    assert "manual" in d.names[NAME].reason
    assert d.wake_at is None
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 1001, frozenset({NAME}))
    assert answer(d) == ("127.0.0.21", "127.0.0.22")
    assert [t.kind for t in d.transitions] == ["failback"]


def test_passive_failure_with_primary_back_goes_to_primary_even_if_manual() -> None:
    cfg = config({**AP, "failback": "manual"})
    d = step(cfg, None, health(a21=D, a22=D, a31=U), 0)
    d = step(cfg, d, health(a21=U, a31=D), 5)
    assert answer(d) == ("127.0.0.21",), "the serving tier failed: best healthy tier wins"


def test_all_tiers_down_keeps_serving_the_active_tier() -> None:
    cfg = config(AP)
    d = step(cfg, None, health(a21=D, a22=D, a31=U), 0)
    d = step(cfg, d, health(a21=D, a22=D, a31=D), 1)
    assert answer(d) == ("127.0.0.31",)
    assert d.names[NAME].mode == "all_down"
    assert [t.kind for t in d.transitions] == []


def test_same_inputs_make_no_transition() -> None:
    cfg = config(AA)
    d = step(cfg, None, health(a11=U, a12=D, a13=U), 0)
    again = step(cfg, d, health(a11=U, a12=D, a13=U), 1)
    assert again.transitions == ()
    assert again.zones == d.zones


# -- properties -------------------------------------------------------------------------------

STATES = st.sampled_from([U, D, X])
AP_ADDRS = ["127.0.0.21", "127.0.0.22", "127.0.0.31"]
AA_ADDRS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def vectors(addrs: list[str]) -> st.SearchStrategy[list[tuple[float, dict[str, State]]]]:
    step_ = st.tuples(st.floats(0, 50), st.fixed_dictionaries({key(a): STATES for a in addrs}))
    return st.lists(step_, min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(
    seq=vectors(AA_ADDRS),
    all_down=st.sampled_from(["serve_all", "serve_none", "fallback"]),
    min_healthy=st.integers(1, 3),
)
def test_only_serve_none_empties_an_answer(
    seq: list[tuple[float, dict[str, State]]], all_down: str, min_healthy: int
) -> None:
    cfg = config(
        {**AA, "all_down": all_down, "fallback": ["192.0.2.1"], "min_healthy": min_healthy}
    )
    prev, now = None, 0.0
    for dt, states in seq:
        now += dt
        d = step(cfg, prev, states, now)
        ans = answer(d)
        assert set(ans) <= {*AA_ADDRS, "192.0.2.1"}
        if not ans:
            assert all_down == "serve_none"
        up = sorted(a for a in AA_ADDRS if states[key(a)] is U)
        if len(up) >= min_healthy:
            assert list(ans) == up, "enough healthy: answer exactly the healthy endpoints"
        prev = d


@settings(max_examples=300, deadline=None)
@given(seq=vectors(AP_ADDRS), failback=st.sampled_from(["auto", "manual"]))
def test_never_fails_back_early(seq: list[tuple[float, dict[str, State]]], failback: str) -> None:
    """While west serves and is healthy, east takes over only after 30s of continuous health
    (auto) or never (manual, no operator request)."""
    cfg = config({**AP, "failback": failback})
    prev: Decision | None = None
    now = 0.0
    east_healthy_since: float | None = None
    for dt, states in seq:
        now += dt
        east_ok = any(states[key(a)] is U for a in AP_ADDRS[:2])
        west_ok = states[key(AP_ADDRS[2])] is U
        if east_ok:
            east_healthy_since = now if east_healthy_since is None else east_healthy_since
        else:
            east_healthy_since = None
        d = step(cfg, prev, states, now)
        was_west = prev is not None and prev.names[NAME].tier == "west" and west_ok
        if was_west and d.names[NAME].tier == "east":
            assert failback == "auto"
            assert east_healthy_since is not None
            assert now - east_healthy_since >= 30
        prev = d
