"""The provider contract's pure parts: diff, safety, loading by entry point."""

from __future__ import annotations

import pytest

from dnsfailover.model import DEFAULT_PLACE, RecordSet, SteeredSet
from dnsfailover.provider.contract import (
    ProviderOptions,
    UnknownProvider,
    create_provider,
    load_provider,
    unpublishable,
)
from dnsfailover.provider.plan import (
    PlaceError,
    Populated,
    Safety,
    UnsafePlan,
    diff,
    placed_sets,
    summarize,
)
from dnsfailover.server.embedded import EmbeddedProvider

Z = "example.test."


def rs(name: str, *values: str, ttl: int = 30, rtype: str = "A") -> RecordSet:
    return RecordSet(f"{name}.{Z}", rtype, ttl, tuple(values))


def test_diff_creates_updates_deletes_and_ignores_equal() -> None:
    current = Populated(
        (rs("a", "192.0.2.1"), rs("b", "192.0.2.2"), rs("c", "192.0.2.3"), rs("d", "192.0.2.4")),
        owned=frozenset({(f"c.{Z}", "A"), (f"d.{Z}", "A"), (f"gone.{Z}", "A")}),
    )
    desired = [
        rs("a", "192.0.2.1"),
        rs("b", "192.0.2.9"),
        rs("c", "192.0.2.3", ttl=60),
        rs("e", "192.0.2.5"),
    ]
    plan = diff(Z, current, desired)
    got = [(c.kind, c.key[0]) for c in plan.changes]
    assert got == [
        ("update", f"b.{Z}"),
        ("update", f"c.{Z}"),
        ("delete", f"d.{Z}"),
        ("create", f"e.{Z}"),
    ]
    assert plan.counts() == {"create": 1, "update": 2, "delete": 1}
    assert [c.describe() for c in plan.changes][:2] == [
        f"~ b.{Z} A 192.0.2.2 -> 192.0.2.9",
        f"~ c.{Z} A 192.0.2.3 -> 192.0.2.3 (ttl 30 -> 60)",
    ]
    assert not diff(Z, Populated(tuple(desired)), desired), "in sync: an empty plan"


def test_empty_desired_set_deletes_unless_the_provider_keeps_empty_sets() -> None:
    current = Populated((rs("a", "192.0.2.1"),))
    assert [c.kind for c in diff(Z, current, [rs("a")]).changes] == ["delete"]
    kept = diff(Z, current, [rs("a")], keep_empty=True)
    assert [(c.kind, c.new) for c in kept.changes] == [("update", rs("a"))]


@pytest.mark.parametrize(
    ("safety", "unsafe"),
    [
        (
            Safety(),
            [
                "removes every A answer of a.example.test. "
                "(--force, or all_down: serve_none on the record, allows it)"
            ],
        ),
        (Safety(empty_ok=frozenset({f"a.{Z}"})), []),
    ],
)
def test_removing_every_answer_is_unsafe_unless_configured(
    safety: Safety, unsafe: list[str]
) -> None:
    plan = diff(Z, Populated((rs("a", "192.0.2.1"),)), [rs("a")])
    assert plan.unsafe_reasons(safety) == unsafe
    if unsafe:
        with pytest.raises(UnsafePlan, match="plan refused"):
            plan.raise_if_unsafe(safety)
        plan.raise_if_unsafe(safety, force=True)


def test_foreign_records_are_refused_unless_adopted() -> None:
    current = Populated((rs("a", "192.0.2.1"),), foreign=frozenset({(f"a.{Z}", "A")}))
    plan = diff(Z, current, [rs("a", "192.0.2.7")])
    assert "not owned by dnsfailover" in plan.unsafe_reasons(Safety())[0]
    assert plan.unsafe_reasons(Safety(adopt=True)) == []


def test_change_share_threshold() -> None:
    current = Populated(tuple(rs(f"n{i}", "192.0.2.1") for i in range(20)))
    desired = [rs(f"n{i}", "192.0.2.2" if i < 8 else "192.0.2.1") for i in range(20)]
    plan = diff(Z, current, desired)
    assert plan.unsafe_reasons(Safety(max_change_pct=50)) == []
    assert plan.unsafe_reasons(Safety(max_change_pct=30)) == [
        "changes 40% of 20 record sets (max_change_pct 30)"
    ]


def test_providers_load_by_entry_point_and_unknown_names_list_the_installed() -> None:
    assert load_provider("embedded") is EmbeddedProvider
    with pytest.raises(UnknownProvider, match=r"installed: .*embedded"):
        load_provider("nosuch")
    assert isinstance(create_provider("embedded", Z, {}), EmbeddedProvider)


def test_value_order_is_not_a_change() -> None:
    current = Populated((rs("a", "10.0.0.2", "10.0.0.10"),))
    assert not diff(Z, current, [rs("a", "10.0.0.10", "10.0.0.2")])


def test_a_change_of_weights_alone_is_a_change_but_their_order_is_not() -> None:
    name = f"a.{Z}"
    weighted = RecordSet(name, "A", 30, ("10.0.0.1", "10.0.0.2"), (3, 1))
    current = Populated((weighted,), owned=frozenset({(name, "A")}))
    reweighted = RecordSet(name, "A", 30, ("10.0.0.1", "10.0.0.2"), (1, 1))
    plan = diff(Z, current, [reweighted])
    assert [c.new for c in plan.changes] == [reweighted]
    reordered = RecordSet(name, "A", 30, ("10.0.0.2", "10.0.0.1"), (1, 3))
    assert not diff(Z, current, [reordered])
    unweighted = RecordSet(name, "A", 30, ("10.0.0.1", "10.0.0.2"))
    assert diff(Z, current, [unweighted])  # dropping the weights is a change too


def test_one_conflicting_key_is_held_and_every_other_change_goes() -> None:
    """Refusal is per key: a weighted set someone put at one managed name holds that name
    back, not the 998 others (the whole plan used to be refused)."""
    names = [f"n{i}" for i in range(999)]
    current = Populated(tuple(rs(n, "192.0.2.1") for n in names[1:]))
    bad = (f"{names[0]}.{Z}", "A")
    current = Populated(
        current.records,
        foreign=frozenset({bad}),
        owned=frozenset((f"{n}.{Z}", "A") for n in names[1:]),
        conflicts={bad: f"{bad[0]} A has routing-policy or alias record sets"},
    )
    plan = diff(Z, current, [rs(n, "192.0.2.2") for n in names])
    cleared, held = plan.partition(Safety())
    assert len(cleared.changes) == 998
    assert bad not in {c.key for c in cleared.changes}
    assert list(held) == [bad]
    assert "routing-policy" in held[bad]
    assert "adopt: true" in held[bad]
    assert cleared.replace == frozenset()
    for safety, force in ((Safety(adopt=True), False), (Safety(), True)):
        everything, none = plan.partition(safety, force=force)
        assert len(everything.changes) == 999
        assert none == {}
        assert everything.replace == {bad}, "cleared to replace what is in the way"


def test_the_size_brake_still_refuses_the_plan_as_a_whole() -> None:
    current = Populated(tuple(rs(f"n{i}", "192.0.2.1") for i in range(20)))
    plan = diff(Z, current, [rs(f"n{i}", "192.0.2.2") for i in range(20)])
    with pytest.raises(UnsafePlan, match="changes 100% of 20"):
        plan.partition(Safety(max_change_pct=30))
    assert len(plan.partition(Safety(max_change_pct=30), force=True)[0].changes) == 20


def test_a_refusal_of_500_names_is_one_short_line() -> None:
    current = Populated(
        tuple(rs(f"n{i}", "192.0.2.1") for i in range(500)),
        foreign=frozenset((f"n{i}.{Z}", "A") for i in range(500)),
    )
    plan = diff(Z, current, [rs(f"n{i}", "192.0.2.2") for i in range(500)])
    with pytest.raises(UnsafePlan) as e:
        plan.raise_if_unsafe(Safety())
    assert len(str(e.value)) < 1000
    assert "and 495 more" in str(e.value)
    assert summarize(["a", "b"]) == "a; b"


def steered(name: str, eu: tuple[str, ...], us: tuple[str, ...]) -> SteeredSet:
    """A steered name: the EU group answers 30 countries, the US group (the default) the
    rest of the world."""
    answers = {"eu,us": rs(name, *eu), "us,eu": rs(name, *us)}
    countries = tuple(f"country:{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(30))
    return SteeredSet(f"{name}.{Z}", "A", "us,eu", answers, {"eu,us": countries})


def test_placed_sets_one_per_place_the_default_group_at_star_without_weights() -> None:
    weighted = RecordSet(f"w.{Z}", "A", 30, ("192.0.2.1", "192.0.2.2"), (3, 1))
    s = SteeredSet(
        f"w.{Z}",
        "A",
        "b",
        {"a": rs("w", "192.0.2.9"), "b": weighted},
        {"a": ("country:DE", "continent:EU")},
    )
    assert placed_sets([s]) == {
        (f"w.{Z}", "A", "country:DE"): rs("w", "192.0.2.9"),
        (f"w.{Z}", "A", "continent:EU"): rs("w", "192.0.2.9"),
        (f"w.{Z}", "A", DEFAULT_PLACE): rs("w", "192.0.2.1", "192.0.2.2"),
    }
    twice = SteeredSet(s.name, "A", "b", s.answers, {"a": ("country:DE",), "b": ("country:DE",)})
    with pytest.raises(PlaceError, match=r"country:DE is in two location groups \(a and b\)"):
        placed_sets([twice])


def test_a_plain_name_turning_steered_deletes_the_plain_set_in_the_same_plan() -> None:
    name = f"s.{Z}"
    current = Populated((rs("s", "192.0.2.1"),), owned=frozenset({(name, "A")}))
    placed = placed_sets([steered("s", ("192.0.2.10",), ("192.0.2.1",))])
    plan = diff(Z, current, [rs("s", "192.0.2.1")], placed=placed)
    assert plan.counts() == {"create": 31, "update": 0, "delete": 1}
    assert plan.changes[0].describe() == f"- {name} A 192.0.2.1"
    assert plan.changes[1].describe() == f"+ {name} A [*] 192.0.2.1"
    assert plan.unsafe_reasons(Safety()) == [], "the plain set's delete drains nothing"
    done = Populated((), owned=frozenset({(name, "A")}), placed=placed)
    assert not diff(Z, done, [rs("s", "192.0.2.1")], placed=placed)
    back = diff(Z, done, [rs("s", "192.0.2.1")])
    assert back.counts() == {"create": 1, "update": 0, "delete": 31}
    assert back.unsafe_reasons(Safety()) == []


def test_a_failover_of_one_group_changes_its_places_and_counts_once() -> None:
    """The size brake counts a steered name as one record set, however many of its
    countries change."""
    names = [f"n{i}" for i in range(9)]
    plain = tuple(rs(n, "192.0.2.1") for n in names)
    before = placed_sets([steered("s", ("192.0.2.10",), ("192.0.2.20",))])
    current = Populated(
        plain, owned=frozenset({(f"s.{Z}", "A"), *((r.name, "A") for r in plain)}), placed=before
    )
    after = placed_sets([steered("s", ("192.0.2.20",), ("192.0.2.20",))])
    plan = diff(Z, current, [*plain, rs("s", "192.0.2.20")], placed=after)
    assert plan.existing == 10
    assert plan.counts() == {"create": 0, "update": 30, "delete": 0}
    assert {c.place for c in plan.changes} == set(steered("s", (), ()).places["eu,us"])
    assert plan.unsafe_reasons(Safety(max_change_pct=10)) == []
    assert plan.unsafe_reasons(Safety(max_change_pct=5)) == [
        "changes 10% of 10 record sets (max_change_pct 5)"
    ]


def test_emptying_one_group_is_no_drain_but_emptying_every_group_is() -> None:
    name = f"s.{Z}"
    placed = placed_sets([steered("s", ("192.0.2.10",), ("192.0.2.20",))])
    current = Populated((), owned=frozenset({(name, "A")}), placed=placed)
    one = diff(
        Z, current, [rs("s", "192.0.2.20")], placed=placed_sets([steered("s", (), ("192.0.2.20",))])
    )
    assert one.counts()["delete"] == 30
    assert one.unsafe_reasons(Safety()) == []
    every = diff(Z, current, [rs("s")], placed=placed_sets([steered("s", (), ())]))
    assert every.counts()["delete"] == 31
    reasons = every.unsafe_reasons(Safety())
    assert len(reasons) == 1, "once for the name, not once per place"
    assert reasons[0].startswith(f"removes every A answer of {name}")
    assert every.unsafe_reasons(Safety(empty_ok=frozenset({name}))) == []
    cleared, held = every.partition(Safety())
    assert not cleared
    assert list(held) == [(name, "A")], "held per name and type, all its places together"


def test_providers_without_location_support_publish_no_places() -> None:
    s = steered("s", ("192.0.2.10",), ("192.0.2.20",))
    assert EmbeddedProvider(Z, ProviderOptions()).location_sets([s]) == {}
    assert unpublishable({"country"}, [(s.name, "A", "net:office"), (s.name, "A", "*")]) == [
        f"{s.name} A [net:office]: steering by net has no record set here (only country: "
        "keep such names on the embedded server)"
    ]
