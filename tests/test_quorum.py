"""Quorum rules, stale regions and isolated regions, in the pure health core."""

from __future__ import annotations

import pytest

from dnsfailover.config.load import loads
from dnsfailover.health.quorum import needed, verdict
from dnsfailover.health.tracker import HealthTracker, Hysteresis
from dnsfailover.model import State

UP, DOWN = State.UP, State.DOWN


@pytest.mark.parametrize(
    ("rule", "ups", "voters", "expected"),
    [
        ("majority", 2, 3, UP),
        ("majority", 1, 3, DOWN),
        ("majority", 1, 2, None),  # a tie keeps the last verdict
        ("majority", 3, 5, UP),
        ("majority", 0, 1, DOWN),
        ("any", 1, 3, UP),
        ("any", 0, 3, DOWN),
        ("all", 2, 3, DOWN),
        ("all", 3, 3, UP),
        (2, 2, 3, UP),
        (2, 1, 3, DOWN),
        (2, 1, 1, DOWN),  # k regions are needed even when fewer are fresh
        ("50%", 1, 2, UP),
        ("50%", 1, 3, DOWN),  # ceil(1.5) = 2
        ("18%", 1, 5, UP),  # Route 53's rule: at least 18% of the checkers
        ("100%", 4, 5, DOWN),
        ("majority", 0, 0, None),
    ],
)
def test_quorum_table(rule: str | int, ups: int, voters: int, expected: State | None) -> None:
    assert verdict(rule, ups, voters) is expected


def test_needed_percentage_rounds_up_and_is_at_least_one() -> None:
    assert needed("34%", 3) == 2
    assert needed("1%", 3) == 1


TARGETS = [f"web@127.0.0.{i}:80" for i in range(11, 15)]
RULES = {t: Hysteresis(rise=1, fall=1, interval=1.0) for t in TARGETS}


def three_regions(quorum: str | int = "majority") -> HealthTracker:
    tracker = HealthTracker(RULES, {t: (t, quorum) for t in TARGETS})
    for region in ("us", "eu", "ap"):
        tracker.seen(region, 100.0)
        for t in TARGETS:
            tracker.set_remote(t, region, UP, 90.0, "ok", 100.0)
    return tracker


@pytest.mark.parametrize(
    ("quorum", "down_in", "expected"),
    [
        ("majority", ["us"], UP),
        ("majority", ["us", "eu"], DOWN),
        ("any", ["us", "eu"], UP),
        ("any", ["us", "eu", "ap"], DOWN),
        ("all", ["ap"], DOWN),
        (2, ["us"], UP),
        (2, ["us", "eu"], DOWN),
        ("34%", ["us", "eu"], DOWN),
        ("33%", ["us", "eu"], UP),
    ],
)
def test_rules_over_three_regions(quorum: str | int, down_in: list[str], expected: State) -> None:
    tracker = three_regions(quorum)
    t = TARGETS[0]
    for region in down_in:
        tracker.set_remote(t, region, DOWN, 101.0, "3 consecutive failed", 101.0)
    assert tracker.state(t) is expected
    # other targets are untouched
    assert tracker.state(TARGETS[1]) is UP


def test_stale_regions_do_not_vote() -> None:
    tracker = three_regions()
    t = TARGETS[0]
    tracker.set_remote(t, "us", DOWN, 101.0, "failed", 101.0)
    assert tracker.state(t) is UP  # 2 of 3 still see it up
    # eu and ap stop reporting; us keeps beating: after 3 intervals only us votes
    tracker.seen("us", 105.0)
    changes = tracker.revote(105.0)
    assert tracker.state(t) is DOWN
    voted = [c for c in changes if c.target == t and c.region is None]
    assert voted
    assert "not voting: ap, eu" in voted[0].reason
    assert tracker.regions(t, 105.0)["eu"].stale


def test_a_region_that_sees_everything_down_is_isolated_and_ignored() -> None:
    tracker = three_regions("any")  # "any" would otherwise let ap's view not matter...
    tracker = three_regions("all")  # ...so use "all", where one region's DOWN decides
    for t in TARGETS:
        tracker.set_remote(t, "ap", DOWN, 101.0, "timeout", 101.0)
    assert tracker.isolated() == {"ap"}
    assert all(tracker.state(t) is UP for t in TARGETS)
    assert tracker.regions(TARGETS[0])["ap"].isolated
    # ap recovers: it counts again
    for t in TARGETS:
        tracker.set_remote(t, "ap", UP, 102.0, "ok", 102.0)
    assert tracker.isolated() == frozenset()
    tracker.set_remote(TARGETS[0], "ap", DOWN, 103.0, "timeout", 103.0)
    assert tracker.isolated() == frozenset()  # one target down is not isolation
    assert tracker.state(TARGETS[0]) is DOWN  # and with quorum all, it decides


def test_a_real_outage_seen_everywhere_is_not_isolation() -> None:
    tracker = three_regions()
    for region in ("us", "eu", "ap"):
        for t in TARGETS:
            tracker.set_remote(t, region, DOWN, 101.0, "refused", 101.0)
    assert tracker.isolated() == frozenset()
    assert all(tracker.state(t) is DOWN for t in TARGETS)


def test_forgetting_a_region_recounts_the_vote() -> None:
    tracker = three_regions()
    t = TARGETS[0]
    tracker.set_remote(t, "us", DOWN, 101.0, "failed", 101.0)
    tracker.set_remote(t, "eu", DOWN, 101.0, "failed", 101.0)
    assert tracker.state(t) is DOWN
    tracker.forget("us", 101.5)
    tracker.forget("eu", 101.5)
    assert tracker.state(t) is UP  # only ap is left, and it sees it up


def test_record_quorum_votes_the_same_target_separately() -> None:
    config = loads(
        """
checks:
  web: {type: http, interval: 1s, quorum: majority}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: h.example.test.}
    nameservers: [ns1.example.test.]
    records: {ns1: {type: A, values: [127.0.0.1]}}
    failover:
      strict: {policy: active-active, check: web, quorum: all, endpoints: [127.0.0.11]}
      loose: {policy: active-active, check: web, endpoints: [127.0.0.11]}
"""
    )
    votes = config.votes()
    assert len(votes) == 2
    keys = sorted(votes)
    tracker = HealthTracker({"web@127.0.0.11:80": Hysteresis(1, 1, 1.0)}, votes)
    for region in ("us", "eu", "ap"):
        tracker.seen(region, 10.0)
        tracker.set_remote("web@127.0.0.11:80", region, UP, 9.0, "ok", 10.0)
    tracker.set_remote("web@127.0.0.11:80", "ap", DOWN, 11.0, "failed", 11.0)
    states = tracker.states()
    strict = next(k for k in keys if "quorum=all" in k)
    loose = next(k for k in keys if "quorum" not in k)
    assert states[strict] is DOWN
    assert states[loose] is UP


@pytest.mark.parametrize(
    ("value", "message"),
    [("most", "expected majority, any, all"), (0, "at least 1"), ("150%", "outside 1%-100%")],
)
def test_bad_quorum_is_a_config_error(value: object, message: str) -> None:
    from dnsfailover.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        loads(
            f"""
checks:
  web: {{type: http, quorum: {value!r}}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: h.example.test.}}
    nameservers: [ns1.example.test.]
"""
        )
    assert message in str(err.value)
    assert "checks.web.quorum" in str(err.value)


def test_a_quorum_larger_than_the_regions_is_a_config_error() -> None:
    from dnsfailover.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        loads(
            """
regions: [us, eu]
checks:
  web: {type: http, quorum: 3}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: h.example.test.}
    nameservers: [ns1.example.test.]
    records: {ns1: {type: A, values: [127.0.0.1]}}
"""
        )
    assert (
        "<string>:4: checks.web.quorum: quorum 3 needs at least 3 regions; 2 are declared"
        in str(err.value)
    )


def test_a_whole_region_flipping_at_scale_is_isolated_in_linear_time() -> None:
    """10,000 targets: one region's reports all turn DOWN (its checker lost its network).
    Isolation is kept incrementally, so this is O(targets), not a rescan per report."""
    import time

    targets = [f"web@10.0.{i // 250}.{i % 250}:80" for i in range(10_000)]
    tracker = HealthTracker({t: Hysteresis(1, 1, 1.0) for t in targets})
    for region in ("us", "eu", "ap"):
        tracker.seen(region, 100.0)
        for t in targets:
            tracker.set_remote(t, region, UP, 90.0, "ok", 100.0)
    started = time.perf_counter()
    changes = []
    for t in targets:
        changes += tracker.set_remote(t, "ap", DOWN, 101.0, "timeout", 101.0)
    took = time.perf_counter() - started
    assert tracker.isolated() == {"ap"}
    assert all(s is UP for s in tracker.states().values())
    assert not [c for c in changes if c.region is None], "no voted change at all"
    assert took < 10.0, f"{took:.1f}s"  # a rescan per report took minutes
