"""The engine with steered names: each location group answers from the first healthy tier of
its own list, every rule runs per group, and losing a region moves only the groups that were
on it.  (`test_engine_incremental.py` checks incremental against full decisions with a
steered name in the mix.)"""

from __future__ import annotations

from typing import Any

from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import decide, redecide, vet_override
from dnsfailover.engine.overrides import Action, Override
from dnsfailover.engine.values import Decision, EngineState
from dnsfailover.model import State

EU, US, AP = "127.0.0.11", "127.0.0.12", "127.0.0.13"
KEY = {a: f"web@{a}:80" for a in (EU, US, AP)}
NAME = "www.example.test."


def config(**record: Any) -> Config:
    www = {
        "policy": "active-passive",
        "check": "web",
        "hold_down": "10s",
        "tiers": [
            {"name": "eu", "endpoints": [EU]},
            {"name": "us", "endpoints": [US]},
            {"name": "ap", "endpoints": [AP]},
        ],
        "steering": {
            "by": "country",
            "map": {"DE": ["eu", "us"], "US": ["us", "eu"], "AU": ["ap", "us", "eu"]},
            "nets": {"office": ["eu"]},
            "default": ["us", "eu", "ap"],
        },
        **record,
    }
    return Config.model_validate(
        {
            "checks": {"web": {"type": "tcp", "port": 80, "interval": "1s", "timeout": "500ms"}},
            "geo": {"nets": {"office": ["10.1.0.0/16"]}},
            "zones": {
                "example.test.": {
                    "soa": {"mname": "ns1.example.test.", "rname": "hostmaster.example.test."},
                    "nameservers": ["ns1.example.test."],
                    "failover": {"www": www},
                }
            },
        }
    )


def answers(d: Decision) -> dict[str, tuple[str, ...]]:
    """What each location group's clients get, as the zone publishes it."""
    steered = d.zones[0].steered[(NAME, "A")]
    return {group: rs.values for group, rs in steered.answers.items()}


def up() -> dict[str, State]:
    return {k: State.UP for k in KEY.values()}


def test_each_group_answers_from_its_first_healthy_tier() -> None:
    d = decide(config(), up(), EngineState(), 0.0)
    assert answers(d) == {
        "us,eu,ap": (US,),
        "eu,us": (EU,),
        "us,eu": (US,),
        "ap,us,eu": (AP,),
        "eu": (EU,),
    }
    zone = d.zones[0]
    steered = zone.steered[(NAME, "A")]
    # the default group is the plain answer too (zone transfers, RFC 2136)
    assert steered.default == "us,eu,ap"
    assert zone.managed[(NAME, "A")].values == (US,)
    assert steered.places == {
        "us,eu,ap": ("*",),
        "eu,us": ("country:DE",),
        "us,eu": ("country:US",),
        "ap,us,eu": ("country:AU",),
        "eu": ("net:office",),
    }
    # each group is a decision of its own, with the group's tier
    assert d.names[f"{NAME}@eu,us"].tier == "eu"
    assert d.names[NAME].tier == "us"


def test_losing_a_region_moves_only_its_clients_to_their_next_nearest() -> None:
    cfg = config()
    health = up()
    first = decide(cfg, health, EngineState(), 0.0)
    health[KEY[EU]] = State.DOWN
    d = redecide(cfg, health, first, 1.0, changed={KEY[EU]})
    assert answers(d) == {
        "us,eu,ap": (US,),
        "eu,us": (US,),  # Germany goes to its next region
        "us,eu": (US,),
        "ap,us,eu": (AP,),
        "eu": (EU,),  # the office has no other tier: all_down serves it anyway (serve_all)
    }
    moved = {(t.name, t.kind, t.new) for t in d.transitions}
    assert moved == {(f"{NAME}@eu,us", "failover", (US,))}
    # the default group's (plain) answer did not move
    assert d.zones[0].managed[(NAME, "A")] == first.zones[0].managed[(NAME, "A")]
    # back up: each group fails back after its hold_down, not before
    health[KEY[EU]] = State.UP
    d = redecide(cfg, health, d, 2.0, changed={KEY[EU]})
    assert answers(d)["eu,us"] == (US,)
    assert d.wake_at == 12.0
    d = redecide(cfg, health, d, 12.0, changed=set())
    assert answers(d)["eu,us"] == (EU,)
    assert {(t.name, t.kind) for t in d.transitions} == {(f"{NAME}@eu,us", "failback")}


def test_manual_failback_holds_every_group_until_the_operator_asks() -> None:
    cfg = config(failback="manual")
    health = up()
    d = decide(cfg, health, EngineState(), 0.0)
    health[KEY[US]] = State.DOWN
    d = redecide(cfg, health, d, 1.0, changed={KEY[US]})
    assert answers(d)["us,eu"] == (EU,)
    assert answers(d)["us,eu,ap"] == (EU,)
    health[KEY[US]] = State.UP
    d = redecide(cfg, health, d, 100.0, changed={KEY[US]})
    assert answers(d)["us,eu"] == (EU,)
    d = redecide(cfg, health, d, 101.0, changed=set(), failback=frozenset({NAME}))
    assert answers(d)["us,eu"] == (US,)
    assert answers(d)["us,eu,ap"] == (US,)


def test_a_drain_on_the_name_applies_to_every_group() -> None:
    cfg = config()
    drain = Override("o1", Action.DRAIN, NAME, EU, None, "maintenance", "t", 0.0, None)
    d = decide(cfg, up(), EngineState(), 0.0, overrides=[drain])
    assert answers(d)["eu,us"] == (US,)
    # the office's group has only eu: the interlock keeps its last healthy endpoint
    assert answers(d)["eu"] == (EU,)
    why = "it would leave www.example.test.@eu without a healthy endpoint"
    assert dict(d.refused) == {"o1": why}


def test_a_failover_to_a_tier_moves_the_groups_that_have_it() -> None:
    cfg = config()
    to_ap = Override("o2", Action.FAILOVER, NAME, None, "ap", "drill", "t", 0.0, None)
    assert vet_override(cfg, up(), EngineState(), [], to_ap, 0.0) is None
    d = decide(cfg, up(), EngineState(), 0.0)
    d = redecide(cfg, up(), d, 1.0, changed=set(), overrides=[to_ap])
    assert answers(d) == {
        "us,eu,ap": (AP,),
        "eu,us": (EU,),  # no ap tier in this group: the override does not apply
        "us,eu": (US,),
        "ap,us,eu": (AP,),
        "eu": (EU,),
    }
    assert not d.refused
    assert any("does not apply" in n for n in d.names[f"{NAME}@eu,us"].notes)


def test_serve_none_empties_only_the_group_with_nothing_left() -> None:
    cfg = config(all_down="serve_none")
    health = up()
    health[KEY[EU]] = State.DOWN
    d = decide(cfg, health, EngineState(), 0.0)
    assert answers(d)["eu"] == ()
    assert answers(d)["eu,us"] == (US,)
    assert d.names[f"{NAME}@eu"].mode == "all_down"
