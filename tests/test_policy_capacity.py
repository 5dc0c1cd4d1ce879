"""Capacity-aware failover: spreading a record's load so no survivor is overrun."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine import NAME, D, U, config, health, key, served

from dnsfailover.engine.decide import decide
from dnsfailover.engine.values import EngineState
from dnsfailover.model import State

TIERS: dict[str, Any] = {
    "policy": "active-passive",
    "load": 900,
    "tiers": [
        {
            "name": "east",
            "endpoints": [
                {"address": "127.0.0.21", "capacity": 400},
                {"address": "127.0.0.22", "capacity": 400},
                {"address": "127.0.0.23", "capacity": 400},
            ],
        },
        {"name": "west", "capacity": 600, "endpoints": ["127.0.0.31", "127.0.0.32"]},
        {"name": "south", "endpoints": [{"address": "127.0.0.41", "capacity": 500}]},
    ],
}
ALL = ("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.31", "127.0.0.32", "127.0.0.41")


def every(**down: State) -> dict[str, State]:
    states = {key(a): U for a in ALL}
    states.update(health(**down))
    return states


@pytest.mark.parametrize(
    ("down", "answer", "notes"),
    [
        ({}, ("127.0.0.21", "127.0.0.22", "127.0.0.23"), ""),
        # 800 left in east: one endpoint of west (300) is added, not all of west
        ({"a21": D}, ("127.0.0.22", "127.0.0.23", "127.0.0.31"), "capacity: spread into"),
        # east gone: west (600) plus south (500), instead of piling 900 onto west
        (
            {"a21": D, "a22": D, "a23": D},
            ("127.0.0.31", "127.0.0.32", "127.0.0.41"),
            "capacity: spread into tier(s) south",
        ),
    ],
)
def test_load_spills_into_next_tiers_only_as_far_as_needed(
    down: dict[str, State], answer: tuple[str, ...], notes: str
) -> None:
    d = decide(config(TIERS), every(**down), EngineState(), 0)
    nd = d.names[NAME]
    assert nd.answer == answer
    assert served(d) == answer
    assert all(nd.loads[a] <= cap for a, cap in _caps().items() if a in nd.loads)
    assert sum(nd.loads.values()) == pytest.approx(900)
    assert notes in nd.reason


def _caps() -> dict[str, float]:
    return {
        "127.0.0.21": 400,
        "127.0.0.22": 400,
        "127.0.0.23": 400,
        "127.0.0.31": 300,
        "127.0.0.32": 300,
        "127.0.0.41": 500,
    }


def test_weights_follow_capacity() -> None:
    d = decide(config(TIERS), every(a21=D, a22=D, a23=D), EngineState(), 0)
    w = d.names[NAME].weights
    assert w["127.0.0.41"] > w["127.0.0.31"] == w["127.0.0.32"] > 0


@pytest.mark.parametrize(
    ("choice", "answer"),
    [
        ("serve_anyway", ("127.0.0.41",)),
        ("fallback", ("192.0.2.1",)),
    ],
)
def test_over_capacity_is_loud_and_follows_the_choice(choice: str, answer: tuple[str, ...]) -> None:
    cfg = config({**TIERS, "over_capacity": choice, "fallback": ["192.0.2.1"]})
    d = decide(cfg, every(a21=D, a22=D, a23=D, a31=D, a32=D), EngineState(), 0)
    nd = d.names[NAME]
    assert nd.answer == answer
    assert nd.over_capacity
    assert "OVER CAPACITY" in nd.reason
    assert f"over_capacity={choice}" in nd.reason


def test_capacity_does_not_override_min_healthy() -> None:
    """A tier below min_healthy is failed over from, whatever its capacity; the next tier
    then gets the spill-over rule applied in its turn."""
    record = {**TIERS, "tiers": [{**TIERS["tiers"][0], "min_healthy": 2}, *TIERS["tiers"][1:]]}
    d = decide(config(record), every(a21=D, a22=D), EngineState(), 0)
    assert d.names[NAME].tier == "west"
    assert d.names[NAME].answer == ("127.0.0.31", "127.0.0.32", "127.0.0.41")


def test_without_load_capacity_plays_no_part() -> None:
    record = {k: v for k, v in TIERS.items() if k != "load"}
    d = decide(config(record), every(a21=D), EngineState(), 0)
    assert d.names[NAME].answer == ("127.0.0.22", "127.0.0.23")
    assert "capacity" not in d.names[NAME].reason


def test_active_active_over_capacity_serves_survivors_anyway() -> None:
    record = {
        "policy": "active-active",
        "load": 300,
        "endpoints": [
            {"address": "127.0.0.11", "capacity": 200},
            {"address": "127.0.0.12", "capacity": 200},
        ],
    }
    d = decide(config(record), health(a11=U, a12=D), EngineState(), 0)
    assert d.names[NAME].answer == ("127.0.0.11",)
    assert d.names[NAME].loads == {"127.0.0.11": 300}
    assert "OVER CAPACITY" in d.names[NAME].reason


@settings(max_examples=200, deadline=None)
@given(
    caps=st.lists(st.integers(0, 500), min_size=6, max_size=6),
    load=st.integers(1, 2000),
    ups=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_no_endpoint_past_capacity_when_survivors_suffice(
    caps: list[int], load: int, ups: list[bool]
) -> None:
    tiers = [
        {
            "name": "a",
            "endpoints": [
                {"address": a, "capacity": c} for a, c in zip(ALL[:3], caps, strict=False)
            ],
        },
        {
            "name": "b",
            "endpoints": [
                {"address": a, "capacity": c} for a, c in zip(ALL[3:], caps[3:], strict=False)
            ],
        },
    ]
    cfg = config({"policy": "active-passive", "load": load, "tiers": tiers})
    states = {key(a): U if ok else D for a, ok in zip(ALL, ups, strict=False)}
    nd = decide(cfg, states, EngineState(), 0).names[NAME]
    cap = dict(zip(ALL, caps, strict=False))
    survivors = sum(c for a, c, ok in zip(ALL, caps, ups, strict=False) if ok)
    if survivors >= load and nd.mode != "all_down":
        assert not nd.over_capacity
        for a in nd.answer:
            assert nd.loads[a] <= cap[a] + 1e-9
    if nd.answer == ():
        pytest.fail("an answer is never empty without serve_none or over_capacity fallback")
