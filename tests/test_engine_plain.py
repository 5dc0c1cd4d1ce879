"""The plain active-active path (`engine.plain`) against the general one it shortcuts
(`decide._decide_name`, the reference): for random records, health and previous states,
both give equal decisions, states and wake times, field for field."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_incremental import zone_config

from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import _decide_name, decide
from dnsfailover.engine.index import index
from dnsfailover.engine.plain import decide_plain, plain
from dnsfailover.engine.values import EngineState, NameState
from dnsfailover.model import State

ADDRESSES = [f"127.0.0.{i}" for i in range(11, 16)]
NAME = "a.example.test."

states = st.sampled_from(
    [State.UP, State.UP, State.UP, State.DOWN, State.UNKNOWN, None]
)  # None: none yet


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    addresses = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=4, unique=True))
    endpoints = [
        {"address": a, "weight": draw(st.sampled_from([0, 1, 1, 5, 255]))} for a in addresses
    ]
    for e in endpoints:
        if draw(st.booleans()):  # probed elsewhere: endpoints may share one health key
            e["check_address"] = "127.0.0.20"
    record: dict[str, Any] = {
        "policy": "active-active",
        "check": "web",
        "endpoints": endpoints,
        "min_healthy": draw(st.integers(1, len(addresses))),
        "all_down": draw(st.sampled_from(["serve_all", "serve_none", "fallback"])),
        "fallback": ["127.0.0.99", "127.0.0.98"],
        "ttl": draw(st.sampled_from([5, 30, 60])),
    }
    if draw(st.booleans()):
        record["degraded_ttl"] = draw(st.sampled_from([5, 10, 60]))
    if draw(st.booleans()):
        record["max_failovers"] = {"count": draw(st.integers(1, 3)), "window": "20s"}
    return record


def config(record: dict[str, Any], policy: dict[str, Any]) -> Config:
    return zone_config({"a": record}, policy)


NOW = 1000.0
previous = st.builds(
    NameState,
    active=st.sampled_from([None, "all", "all", "gone"]),  # "gone": a tier no longer there
    healthy_since=st.sampled_from([{}, {"all": NOW - 10}, {"all": NOW + 1}]),
    answer=st.sampled_from([(), ("127.0.0.11",)]),
    # long before, within max_failovers' window, at and (a clock gone back) after `now`
    changes=st.lists(st.sampled_from([NOW - 30, NOW - 20, NOW - 5, NOW, NOW + 10]), max_size=3).map(
        tuple
    ),
    penalties=st.sampled_from([{}, {"": 10.0}]),
    suppressed=st.sampled_from([(), ("127.0.0.11",)]),
    released=st.sampled_from([None, "o1"]),
)


@settings(max_examples=1000, deadline=None)
@given(
    record=records(),
    policy=st.sampled_from([{}, {"degraded_ttl": 10}, {"max_failovers": {"count": 1}}]),
    health=st.lists(states, min_size=len(ADDRESSES), max_size=len(ADDRESSES)),
    prev=previous,
)
def test_the_plain_path_decides_as_the_general_one(
    record: dict[str, Any],
    policy: dict[str, Any],
    health: list[State | None],
    prev: NameState,
) -> None:
    now = NOW
    cfg = config(record, policy)
    ix = index(cfg)
    p = plain(cfg)[NAME]
    origin, name, rec = ix.managed[0]
    keys = {address: key for _tier, address, key in ix.slots[name]}
    voted = {
        keys[a]: s for a, s in zip(ADDRESSES, health, strict=True) if a in keys and s is not None
    }
    down = tuple(sorted(k for k in ix.keys[name] if voted.get(k) is State.DOWN))
    nd, ns, wakes, refused = _decide_name(cfg, origin, name, rec, voted, prev, now, [], False, down)
    got = decide_plain(p, origin, name, voted, prev, now)
    assert got == (nd, ns, wakes)
    assert refused == {}


def test_only_plain_names_take_the_plain_path() -> None:
    """Capacity, damping, shadow mode and active-passive names keep the general path."""
    plain_one: dict[str, Any] = {
        "policy": "active-active",
        "check": "web",
        "endpoints": ["127.0.0.11"],
    }
    others: dict[str, dict[str, Any]] = {
        "load": {**plain_one, "load": 10, "endpoints": [{"address": "127.0.0.11", "capacity": 5}]},
        "damped": {
            **plain_one,
            "damping": {"penalty": 1000, "suppress": 2000, "reuse": 750, "half_life": "10s"},
        },
        "shadow": {**plain_one, "mode": "shadow"},
        "ap": {
            "policy": "active-passive",
            "check": "web",
            "tiers": [
                {"name": "one", "endpoints": ["127.0.0.11"]},
                {"name": "two", "endpoints": ["127.0.0.12"]},
            ],
        },
    }
    cfg = Config.model_validate(
        {
            "checks": {"web": {"type": "tcp", "port": 80, "interval": "1s", "timeout": "500ms"}},
            "zones": {
                "example.test.": {
                    "soa": {"mname": "ns1.example.test.", "rname": "hostmaster.example.test."},
                    "nameservers": ["ns1.example.test."],
                    "failover": {"plain": plain_one, **others},
                }
            },
        }
    )
    assert set(plain(cfg)) == {"plain.example.test."}
    # and a whole decision of such a mix still answers
    d = decide(cfg, {k: State.UP for k in index(cfg).all_keys}, EngineState(), 1000.0)
    assert d.names["plain.example.test."].answer == ("127.0.0.11",)
    assert d.names["ap.example.test."].answer == ("127.0.0.11",)
