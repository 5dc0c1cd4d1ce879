"""Failback policies, flap damping, max-failovers, TTL while degraded and shadow mode."""

from __future__ import annotations

from typing import Any

import pytest
from test_engine import AA, AP, NAME, D, U, config, health, served, step

from dnsfailover.engine.values import Decision

EAST, WEST = ("127.0.0.21", "127.0.0.22"), ("127.0.0.31",)
STAGED = {**AP, "failback": "staged", "staged": {"share": "25%", "hold": "20s"}}


def down_then_up(cfg: Any) -> Decision:
    d = step(cfg, None, health(a21=U, a22=U, a31=U), 0)
    d = step(cfg, d, health(a21=D, a22=D, a31=U), 1)
    assert d.names[NAME].answer == WEST
    return step(cfg, d, health(a21=U, a22=U, a31=U), 2)


def test_staged_failback_returns_a_share_then_everything() -> None:
    cfg = config(STAGED)
    d = down_then_up(cfg)
    assert d.wake_at == pytest.approx(32)  # hold_down 30s from t=2
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 32)
    nd = d.names[NAME]
    assert nd.answer == (*EAST, *WEST), "both tiers while staged"
    assert nd.weights["127.0.0.31"] > nd.weights["127.0.0.21"], "west still carries 75%"
    assert [t.kind for t in d.transitions] == ["failback"]
    assert "staged failback: 25% to east" in nd.reason
    assert d.wake_at == pytest.approx(52)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 51)
    assert d.names[NAME].answer == (*EAST, *WEST)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 52)
    assert d.names[NAME].answer == EAST
    assert "staged failback complete" in d.names[NAME].reason


def test_staged_failback_completes_early_when_the_old_tier_dies() -> None:
    cfg = config(STAGED)
    d = step(cfg, down_then_up(cfg), health(a21=U, a22=U, a31=U), 32)
    d = step(cfg, d, health(a21=U, a22=U, a31=D), 33)
    assert d.names[NAME].answer == EAST


def test_manual_failback_by_override_equals_the_failback_argument() -> None:
    from test_policy_interlocks import override

    cfg = config({**AP, "failback": "manual"})
    d = down_then_up(cfg)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 500)
    assert d.names[NAME].answer == WEST
    o = override("failback", name=NAME)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 501, overrides=[o])
    assert d.names[NAME].answer == EAST
    assert "operator requested failback" in d.names[NAME].reason


DAMPED = {
    **AP,
    "hold_down": "1s",
    "damping": {"penalty": 1000, "suppress": 2000, "reuse": 750, "half_life": "60s"},
}


def flap(cfg: Any, times: int) -> tuple[Decision, float]:
    d = step(cfg, None, health(a21=U, a22=U, a31=U), 0)
    now = 0.0
    for _ in range(times):
        now += 1
        d = step(cfg, d, health(a21=D, a22=D, a31=U), now)
        now += 1
        d = step(cfg, d, health(a21=U, a22=U, a31=U), now)
        now += 1.5  # past hold_down: fail back
        d = step(cfg, d, health(a21=U, a22=U, a31=U), now)
    return d, now


def test_a_flapping_name_is_held_on_its_backup_until_the_penalty_decays() -> None:
    cfg = config(DAMPED)
    d, now = flap(cfg, 1)  # 2 tier changes so far: the 3rd (a failover) reaches suppress
    assert d.names[NAME].answer == EAST
    d = step(cfg, d, health(a21=D, a22=D, a31=U), now + 1)
    assert d.names[NAME].answer == WEST
    d = step(cfg, d, health(a21=U, a22=U, a31=U), now + 2)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), now + 4)
    nd = d.names[NAME]
    assert nd.answer == WEST, "failback held by damping although east is past hold_down"
    assert nd.damped
    assert nd.penalty >= 2000
    assert "damping:" in nd.reason
    assert d.wake_at is not None
    reuse = d.wake_at
    # damping vs hold_down: hold_down (1s) is long past; the penalty decides
    d = step(cfg, d, health(a21=U, a22=U, a31=U), reuse - 1)
    assert d.names[NAME].answer == WEST
    d = step(cfg, d, health(a21=U, a22=U, a31=U), reuse)
    assert d.names[NAME].answer == EAST
    assert not d.names[NAME].damped


def test_damping_never_blocks_failing_over_from_a_dead_tier() -> None:
    cfg = config(DAMPED)
    d, now = flap(cfg, 1)
    d = step(cfg, d, health(a21=D, a22=D, a31=U), now + 1)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), now + 5)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), now + 7)
    assert d.names[NAME].answer == WEST
    assert d.names[NAME].damped
    d = step(cfg, d, health(a21=U, a22=U, a31=D), now + 8)
    assert d.names[NAME].answer == EAST


def test_damping_keeps_a_flapping_active_active_endpoint_out() -> None:
    cfg = config({**AA, "damping": {"half_life": "60s"}})
    d = step(cfg, None, health(a11=U, a12=U, a13=U), 0)
    for t in (1, 3, 5):
        d = step(cfg, d, health(a11=D, a12=U, a13=U), t)
        d = step(cfg, d, health(a11=U, a12=U, a13=U), t + 1)
    nd = d.names[NAME]
    assert nd.answer == ("127.0.0.12", "127.0.0.13")
    assert nd.damped
    assert "127.0.0.11" in nd.reason
    # ... but not when that would break min_healthy
    d = step(cfg, d, health(a11=U, a12=D, a13=D), 7)
    assert d.names[NAME].answer == ("127.0.0.11",)
    assert "kept in" in d.names[NAME].reason


def test_max_failovers_keeps_the_name_where_it_is() -> None:
    cfg = config({**AP, "hold_down": "1s", "max_failovers": {"count": 2, "window": "10m"}})
    d = step(cfg, None, health(a21=U, a22=U, a31=U), 0)
    d = step(cfg, d, health(a21=D, a22=D, a31=U), 1)  # 1st change
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 3)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 5)  # 2nd change (failback)
    assert d.names[NAME].answer == EAST
    d = step(cfg, d, health(a21=D, a22=D, a31=U), 6)
    nd = d.names[NAME]
    assert nd.answer == EAST, "stays on east (all_down rule) rather than a 3rd change"
    assert "max_failovers" in nd.reason
    assert d.wake_at == pytest.approx(601)
    d = step(cfg, d, health(a21=D, a22=D, a31=U), 601)
    assert d.names[NAME].answer == WEST, "the window has passed"


@pytest.mark.parametrize(
    ("states", "ttl"),
    [
        (health(a21=U, a22=U, a31=U), 30),
        (health(a21=U, a22=D, a31=U), 5),  # degraded
        (health(a21=D, a22=D, a31=U), 5),  # failed over
        (health(a21=D, a22=D, a31=D), 5),  # all down
    ],
)
def test_ttl_is_lowered_while_degraded(states: dict[str, Any], ttl: int) -> None:
    cfg = config({**AP, "ttl": 30}, policy={"degraded_ttl": 5})
    d = step(cfg, step(cfg, None, health(a21=U, a22=U, a31=U), 0), states, 1)
    assert d.names[NAME].ttl == ttl
    assert {rs.ttl for rs in d.zones[0].records if rs.name == NAME} == {ttl}


def test_ttl_is_restored_after_the_hold_following_a_failback() -> None:
    cfg = config({**AP, "ttl": 30, "degraded_ttl": 5})
    d = down_then_up(cfg)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 32)
    assert d.names[NAME].answer == EAST
    assert d.names[NAME].ttl == 5
    assert d.wake_at == pytest.approx(62)
    d = step(cfg, d, health(a21=U, a22=U, a31=U), 62)
    assert d.names[NAME].ttl == 30
    assert {rs.ttl for rs in d.zones[0].records if rs.name == NAME} == {30}


def test_shadow_mode_records_the_change_but_publishes_nothing_new() -> None:
    cfg = config(AA, policy={"mode": "shadow"})
    d = step(cfg, None, health(a11=U, a12=U, a13=U), 0)
    everything = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
    d = step(cfg, d, health(a11=D, a12=U, a13=U), 1)
    nd = d.names[NAME]
    assert nd.answer == everything
    assert served(d) == everything
    assert nd.would_answer == ("127.0.0.12", "127.0.0.13")
    assert [(t.kind, t.new) for t in d.transitions] == [("shadow", nd.would_answer)]
    assert "would publish" in d.transitions[0].reason


def test_a_live_record_overrides_a_global_shadow_mode() -> None:
    cfg = config({**AA, "mode": "live"}, policy={"mode": "shadow"})
    d = step(cfg, None, health(a11=U, a12=U, a13=U), 0)
    d = step(cfg, d, health(a11=D, a12=U, a13=U), 1)
    assert d.names[NAME].answer == ("127.0.0.12", "127.0.0.13")
