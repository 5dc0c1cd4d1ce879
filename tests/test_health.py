"""Hysteresis and the region vote."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dnsfailover.health.tracker import HealthTracker, Hysteresis
from dnsfailover.model import Observation, State

T = "web@127.0.0.11:80"


def tracker(rise: int = 2, fall: int = 3) -> HealthTracker:
    return HealthTracker({T: Hysteresis(rise=rise, fall=fall, interval=1.0)})


def obs(ok: bool, at: float, region: str = "local") -> Observation:
    return Observation(T, region, ok, at, 0.001, "HTTP 200" if ok else "connection refused")


def feed(t: HealthTracker, results: str, start: float = 0.0, region: str = "local") -> list[State]:
    """`results` is a string of 1 (ok) and 0 (fail); returns the voted state after each."""
    states = []
    for i, r in enumerate(results):
        t.observe(obs(r == "1", start + i, region))
        states.append(t.state(T))
    return states


def test_unknown_until_first_result_then_first_result_decides() -> None:
    t = tracker()
    assert t.state(T) is State.UNKNOWN
    assert feed(t, "1") == [State.UP]
    t2 = tracker()
    assert feed(t2, "0") == [State.DOWN]


def test_fall_and_rise() -> None:
    t = tracker(rise=2, fall=3)
    got = feed(t, "1001000110")
    U, D = State.UP, State.DOWN
    assert got == [U, U, U, U, U, U, D, D, U, U]


def test_changes_carry_a_reason_with_the_detail() -> None:
    t = tracker(fall=1)
    t.observe(obs(True, 0))
    changes = t.observe(obs(False, 1))
    assert [(c.region, c.new) for c in changes] == [("local", State.DOWN), (None, State.DOWN)]
    assert "connection refused" in changes[0].reason


def test_restored_state_holds_until_a_fresh_result() -> None:
    t = tracker()
    t.restore(T, "local", State.DOWN, 5.0, "was down")
    assert t.state(T) is State.DOWN
    assert feed(t, "1", start=10) == [State.UP], "the first fresh result decides"


def test_majority_vote_across_regions() -> None:
    t = tracker(fall=1, rise=1)
    feed(t, "1", 0, "a")
    feed(t, "1", 0, "b")
    feed(t, "1", 0, "c")
    t.observe(obs(False, 1, "a"))
    assert t.state(T) is State.UP, "one region of three cannot fail an endpoint"
    t.observe(obs(False, 1.1, "b"))
    assert t.state(T) is State.DOWN


def test_stale_region_does_not_vote() -> None:
    t = tracker(fall=1, rise=1)
    t.observe(obs(False, 0, "a"))
    t.observe(obs(True, 0, "b"))
    t.observe(obs(True, 0, "c"))
    assert t.state(T) is State.UP
    # b and c go silent; a keeps reporting down well past 3 intervals
    t.observe(obs(False, 10, "a"))
    assert t.state(T) is State.DOWN


@settings(max_examples=200, deadline=None)
@given(
    results=st.lists(st.booleans(), min_size=1, max_size=60),
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
)
def test_no_flip_faster_than_hysteresis(results: list[bool], rise: int, fall: int) -> None:
    t = tracker(rise=rise, fall=fall)
    history: list[bool] = []
    prev = State.UNKNOWN
    for i, ok in enumerate(results):
        t.observe(obs(ok, float(i)))
        history.append(ok)
        now = t.state(T)
        if prev is not State.UNKNOWN and now is not prev:
            need = rise if now is State.UP else fall
            assert len(history) >= need
            assert all(h == (now is State.UP) for h in history[-need:])
        prev = now


def test_a_probe_that_could_not_run_changes_nothing_and_is_reported() -> None:
    """Out of file descriptors says nothing about the target: no fall count, no DOWN, no
    freshness; the target is listed as unprobed until a probe of it runs again."""
    t = tracker(rise=2, fall=2)
    feed(t, "1")
    t.observe(obs(False, 1))  # one real failure: fall count 1 of 2
    unknown = Observation(T, "local", False, 2.0, 0.0, "could not probe: out of fds", True)
    for i in range(50):
        assert t.observe(Observation(T, "local", False, 2.0 + i, 0.0, unknown.detail, True)) == []
    assert t.state(T) is State.UP
    assert t.unprobed() == {T: (51.0, "could not probe: out of fds")}
    assert t.regions(T)["local"].last_at == 1.0  # not fresh from an unknown result
    assert feed(t, "1", start=60) == [State.UP]  # the run of failures was broken by nothing
    assert t.unprobed() == {}
    t.observe(obs(False, 61))
    assert t.state(T) is State.UP  # one failure again: the unknowns did not count
    t.observe(obs(False, 62))
    assert t.state(T) is State.DOWN


KEYS = ["web@127.0.0.1:80", "web@127.0.0.2:80", "db@127.0.0.3:5432"]


def _regional() -> HealthTracker:
    rules = {
        KEYS[0]: Hysteresis(rise=1, fall=2, interval=0.1),
        KEYS[1]: Hysteresis(rise=2, fall=1, interval=0.1),
        KEYS[2]: Hysteresis(rise=1, fall=1, interval=0.5),
    }
    votes = {k: (k, "majority") for k in KEYS} | {"any:" + KEYS[0]: (KEYS[0], "any")}
    return HealthTracker(rules, votes)


_STEP = st.one_of(
    st.tuples(st.just("observe"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("remote"), st.integers(0, 2), st.sampled_from(["b", "c"]), st.booleans()),
    st.tuples(st.just("seen"), st.sampled_from(["a", "b", "c"]), st.floats(0, 0.4)),
    st.tuples(st.just("seen"), st.sampled_from(["a", "b", "c"]), st.floats(0, 0.4)),
    st.tuples(st.just("revote")),
    st.tuples(st.just("revote")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.35), _STEP), min_size=1, max_size=80))
def test_a_revote_that_skips_the_fresh_votes_counts_as_a_full_one(
    steps: list[tuple[float, tuple[object, ...]]],
) -> None:
    """`revote` skips the re-count while every region is fresh and no vote left one out; a
    tracker that always re-counts (the reference) goes through the same votes."""
    fast, full = _regional(), _regional()
    now = 100.0
    for advance, step in steps:
        now += advance
        for t in (fast, full):
            kind = step[0]
            if kind == "observe":
                _, i, ok = step
                t.observe(Observation(KEYS[int(i)], "a", bool(ok), now, 0.001, "x"))  # type: ignore[call-overload]
            elif kind == "remote":
                _, i, region, ok = step
                state = State.UP if ok else State.DOWN
                t.set_remote(KEYS[int(i)], str(region), state, now, "r", now)  # type: ignore[call-overload]
            elif kind == "seen":
                _, region, lag = step
                t.seen(str(region), now - float(lag))  # type: ignore[arg-type]
            else:
                if t is full:
                    t._left_out = True  # the reference: a full re-count every time
                t.revote(now)
        assert fast.states() == full.states()


def test_a_revote_re_counts_a_region_back_from_stale_and_drops_one_gone_stale() -> None:
    rules = {T: Hysteresis(rise=1, fall=1, interval=0.1)}  # stale after 0.3 s unseen
    t = HealthTracker(rules)
    for region, ok in (("a", True), ("b", True), ("c", True)):
        t.seen(region, 0.0)
        t.set_remote(T, region, State.UP if ok else State.DOWN, 0.0, "", 0.0)
    t.revote(0.1)
    assert t.state(T) is State.UP
    # b and c fall silent; a sees the target fail: a alone is fresh, and votes it DOWN
    t.seen("a", 0.5)
    t.set_remote(T, "a", State.DOWN, 0.5, "refused", 0.5)
    assert t.state(T) is State.DOWN
    # b and c are back, every region fresh: the re-count must count them again (UP 2 of 3)
    t.seen("b", 0.55)
    t.seen("c", 0.55)
    t.revote(0.6)
    assert t.state(T) is State.UP
    # nothing is observed; b and c go quiet again while a keeps probing: a revote drops them
    t.seen("a", 1.0)
    t.revote(1.0)
    assert t.state(T) is State.DOWN
