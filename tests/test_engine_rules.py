"""The two rules that moved from the node into the engine, as tables: which overrides a
decision ends (`engine.endings`) and which interlock / capacity edges it tells
(`engine.edges`); and the one `touches` rule the engine and `explain` share."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_engine import AA, NAME, U, config, health

from dnsfailover.engine.decide import decide
from dnsfailover.engine.edges import edges
from dnsfailover.engine.endings import ENDED_BY_FAILBACK, EXPIRED, TAKEN, ended
from dnsfailover.engine.overrides import Action, Override, touches, touches_endpoint
from dnsfailover.engine.values import Decision, EngineState, NameDecision

NOW = 100.0


def o(oid: str, action: str, name: str | None = "a.test.", **kw: Any) -> Override:
    return Override(
        oid,
        Action(action),
        name,
        kw.get("endpoint"),
        kw.get("tier"),
        "test",
        "tester",
        0.0,
        kw.get("expires_at"),
    )


FB_A = o("fb-a", "failback", "a.test.")
FO_A = o("fo-a", "failover", "a.test.")
FO_B = o("fo-b", "failover", "b.test.")
DRAIN = o("drain", "drain", None, endpoint="127.0.0.11")
OLD = o("old", "drain", None, endpoint="127.0.0.12", expires_at=NOW)  # expired at NOW
LIVE = o("live", "drain", None, endpoint="127.0.0.13", expires_at=NOW + 1)


@pytest.mark.parametrize(
    ("in_force", "held", "want"),
    [
        ([], [], []),
        ([DRAIN, LIVE], [DRAIN, LIVE], []),  # nothing ends by itself before its time
        ([FB_A], [FB_A], [("fb-a", TAKEN)]),  # a failback is taken once
        ([FO_A], [FO_A], []),  # a failover stays until a failback or its expiry
        ([FO_A, FB_A], [FO_A, FB_A], [("fb-a", TAKEN), ("fo-a", ENDED_BY_FAILBACK)]),
        ([FO_B, FB_A], [FO_B, FB_A], [("fb-a", TAKEN)]),  # another name's failover stays
        ([DRAIN], [DRAIN, OLD], [("old", EXPIRED)]),  # expired: held, not in force
        (
            [FO_A, FB_A, LIVE],
            [FO_A, FB_A, LIVE, OLD],
            [("fb-a", TAKEN), ("fo-a", ENDED_BY_FAILBACK), ("old", EXPIRED)],
        ),
    ],
)
def test_which_overrides_a_decision_ends(
    in_force: list[Override], held: list[Override], want: list[tuple[str, str]]
) -> None:
    assert [(e.override.id, e.why) for e in ended(in_force, held, NOW)] == want


def decision(
    *,
    frozen: str | None = None,
    refused: dict[str, str] | None = None,
    over: tuple[str, ...] = (),
) -> Decision:
    names = {
        n: NameDecision(
            n, "t.", "active-active", (), None, "healthy", f"{n} reason", over_capacity=True
        )
        for n in over
    }
    return Decision((), names, (), EngineState(), None, frozen, refused or {})


@pytest.mark.parametrize(
    ("previous", "new", "want"),
    [
        (None, decision(), []),
        (decision(), decision(), []),
        (
            None,
            decision(frozen="5 of 6 endpoints DOWN at once"),
            [
                (
                    "interlock",
                    "circuit-breaker",
                    "circuit breaker tripped: 5 of 6 endpoints DOWN at once",
                    "critical",
                    logging.ERROR,
                )
            ],
        ),
        (decision(frozen="x"), decision(frozen="x"), []),  # told once, not at every decision
        (
            decision(frozen="x"),
            decision(),
            [
                (
                    "interlock",
                    "circuit-breaker",
                    "circuit breaker released",
                    "warning",
                    logging.WARNING,
                )
            ],
        ),
        (
            decision(refused={"o1": "it would leave a. without a healthy endpoint"}),
            decision(refused={"o1": "still", "o2": "no tier left"}),
            [
                (
                    "interlock",
                    "o2",
                    "override o2 set aside: no tier left",
                    "warning",
                    logging.WARNING,
                )
            ],
        ),
        (
            decision(over=("a.",)),
            decision(over=("b.", "a.")),
            [("capacity", "b.", "b. OVER CAPACITY: b. reason", "critical", logging.ERROR)],
        ),
        (
            decision(over=("a.",)),
            decision(),
            [("capacity", "a.", "a. back within capacity", "info", logging.WARNING)],
        ),
    ],
)
def test_edges_are_told_once(
    previous: Decision | None, new: Decision, want: list[tuple[str, str, str, str, int]]
) -> None:
    got = [(e.kind, e.subject, e.message, e.severity, e.level) for e in edges(previous, new)]
    assert got == want


def test_an_endpoint_wide_drain_touches_only_names_that_have_that_endpoint() -> None:
    """The engine applies it only there, and explain / status list it only there."""
    cfg = config(AA)
    ((_, name, record),) = cfg.managed()
    drain = o("d1", "drain", None, endpoint="127.0.0.11")
    elsewhere = o("d2", "drain", None, endpoint="192.0.2.99")  # an endpoint of no name here
    assert touches(drain, name, record)
    assert not touches(elsewhere, name, record)
    assert touches_endpoint(drain, name, record, "all", "127.0.0.11")
    assert not touches_endpoint(drain, name, record, "all", "127.0.0.12")
    d = decide(cfg, health(a11=U, a12=U, a13=U), EngineState(), 0.0, overrides=[elsewhere])
    assert d.names[NAME].answer == ("127.0.0.11", "127.0.0.12", "127.0.0.13")
    assert "override" not in d.names[NAME].reason
