"""The pure parts: names, values, markers, options, loading, translating and splitting plans."""

from __future__ import annotations

import re
from typing import Any

import pytest
from dnsfailover_route53.batching import Group, Translator, split, weight
from dnsfailover_route53.options import Route53Options
from dnsfailover_route53.provider import Route53Provider
from dnsfailover_route53.records import normalise_name
from pydantic import ValidationError
from route53_support import MARKER, ZONE, Stubbed, rs

from dnsfailover.provider.contract import ProviderError, create_provider, load_provider
from dnsfailover.provider.ownership import canonical_values, managed_key, marker_name, marker_owners
from dnsfailover.provider.plan import Change, Plan


@pytest.mark.parametrize(
    ("listed", "name"),
    [
        ("www.Example.TEST.", "www.example.test."),
        ("www.example.test", "www.example.test."),
        ("\\052.example.test.", "*.example.test."),
        ("a\\.b.example.test.", "a.b.example.test."),
        ("\\137sip.example.test.", "_sip.example.test."),
    ],
)
def test_normalise_name(listed: str, name: str) -> None:
    assert normalise_name(listed) == name


def test_canonical_values() -> None:
    assert canonical_values("A", ["10.0.0.10", "10.0.0.2", "10.0.0.2"]) == ("10.0.0.2", "10.0.0.10")
    assert canonical_values("AAAA", ["2001:DB8:0::1"]) == ("2001:db8::1",)
    assert canonical_values("A", ["not-an-address"]) == ("not-an-address",)
    assert canonical_values("MX", ["20 b.test.", "10 a.test."]) == ("10 a.test.", "20 b.test.")


def test_markers() -> None:
    assert marker_name(("www.example.test.", "AAAA")) == "_dnsfailover-aaaa.www.example.test."
    assert managed_key("_dnsfailover-aaaa.www.example.test.") == ("www.example.test.", "AAAA")
    assert managed_key("_dnsfailover-a.example.test.") == ("example.test.", "A")
    assert managed_key("www.example.test.") is None
    assert managed_key("_dnsfailover-.example.test.") is None
    assert marker_owners([MARKER, '"heritage=dnsfailover,owner=blue"', '"v=spf1 -all"']) == {
        "dnsfailover",
        "blue",
    }
    assert marker_owners(['"heritage=external-dns,owner=dnsfailover"']) == set()


def test_options() -> None:
    o = Route53Options.model_validate(
        {"hosted_zone_id": "/hostedzone/Z123", "deadline": "2m", "poll_interval": "250ms"}
    )
    assert (o.hosted_zone_id, o.deadline, o.poll_interval) == ("Z123", 120.0, 0.25)
    assert (o.region, o.owner_id, o.max_batch_records, o.max_batch_chars) == (
        "us-east-1",
        "dnsfailover",
        1000,
        32000,
    )
    for bad in (
        {"aws_secret_access_key": "x"},  # credentials are never options
        {"adopt": True},  # the core's Safety decides that
        {"max_batch_records": 1001},
        {"max_batch_chars": 40000},
        {"owner_id": "has space"},
        {"deadline": 0},
        {"hosted_zone_id": "/hostedzone/"},
    ):
        with pytest.raises(ValidationError):
            Route53Options.model_validate(bad)


def test_loaded_through_the_entry_point() -> None:
    assert load_provider("route53") is Route53Provider
    p = create_provider("route53", "Example.Test", {"region": "eu-west-1"})
    assert isinstance(p, Route53Provider)
    assert p.zone == ZONE
    assert p.log.name == "dnsfailover.provider.route53"
    with pytest.raises(ValidationError):
        create_provider("route53", ZONE, {"regoin": "eu-west-1"})


async def test_used_before_start() -> None:
    p = create_provider("route53", ZONE, {})
    with pytest.raises(ProviderError, match="before start"):
        await p.populate([])


async def test_unknown_profile_fails_start() -> None:
    p = create_provider("route53", ZONE, {"profile": "no-such-profile"})
    with pytest.raises(ProviderError, match="cannot build a Route 53 client: ProfileNotFound"):
        await p.start()


async def test_marker_names_are_reserved(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    with pytest.raises(ProviderError, match="reserved for dnsfailover's ownership markers"):
        await p.populate([("_dnsfailover-a.www.example.test.", "TXT")])


async def test_apply_refuses_what_it_cannot_publish(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    with pytest.raises(ProviderError, match=re.escape("the plan is for other.test.")):
        await p.apply(Plan("other.test.", (Change("create", None, rs("a", "A", "192.0.2.1")),), 0))
    plan = Plan(ZONE, (Change("create", None, rs("a", "SSHFP", "1 1 abcd")),), 0)
    with pytest.raises(ProviderError, match="route53 does not publish SSHFP records"):
        await p.apply(plan)
    result = await p.apply(Plan(ZONE, (), 0))
    assert (result.applied, result.calls, result.confirmed) == (0, 0, True)
    assert p.calls["ChangeResourceRecordSets"] == 0


def names_and_actions(groups: list[Group]) -> list[tuple[str, str, str]]:
    return [
        (c["Action"], c["ResourceRecordSet"]["Name"], c["ResourceRecordSet"]["Type"])
        for g in groups
        for c in g.changes
    ]


def test_translate_without_a_snapshot_trusts_the_plan() -> None:
    old, new = rs("www", "A", "192.0.2.1"), rs("www", "A", "192.0.2.2")
    theirs = rs("theirs", "A", "192.0.2.3")
    plan = Plan(
        ZONE,
        (
            Change("delete", rs("gone", "A", "192.0.2.9"), None),
            Change("delete", theirs, None),
            Change("update", old, new),
        ),
        3,
        frozenset({("theirs.example.test.", "A")}),
    )
    groups = Translator(None, "dnsfailover").groups(plan)
    assert names_and_actions(groups) == [
        ("DELETE", "gone.example.test.", "A"),
        ("DELETE", "_dnsfailover-a.gone.example.test.", "TXT"),
        ("DELETE", "theirs.example.test.", "A"),
        ("UPSERT", "www.example.test.", "A"),
    ]
    assert [(g.name, g.records, g.chars) for g in groups] == [
        ("gone.example.test.", 2, len("192.0.2.9") + len(MARKER)),
        ("theirs.example.test.", 1, len("192.0.2.3")),
        ("www.example.test.", 2, 2 * len("192.0.2.2")),
    ]


def test_a_name_moves_as_one_group_deletes_first() -> None:
    plan = Plan(
        ZONE,
        (
            Change("create", None, rs("x", "CNAME", "www.example.test.")),
            Change("delete", rs("x", "A", "192.0.2.1"), None),
        ),
        1,
    )
    (group,) = Translator(None, "dnsfailover").groups(plan)
    assert [c["Action"] for c in group.changes] == ["DELETE", "DELETE", "UPSERT", "UPSERT"]


def test_weight_counts_upserts_twice() -> None:
    rrset: Any = {"Name": "a.", "Type": "A", "TTL": 1, "ResourceRecords": [{"Value": "1.2.3.4"}]}
    assert weight({"Action": "UPSERT", "ResourceRecordSet": rrset}) == (2, 14)
    assert weight({"Action": "DELETE", "ResourceRecordSet": rrset}) == (1, 7)


def test_split_packs_whole_groups_in_order() -> None:
    def g(name: str, records: int, chars: int) -> Group:
        change: Any = {"Action": "UPSERT", "ResourceRecordSet": {"Name": name}}
        return Group(name, (change,), records, chars)

    groups = [g("a", 400, 10), g("b", 600, 10), g("c", 1, 10), g("d", 10, 31991)]
    batches = split(groups, 1000, 32000)
    assert [[c["ResourceRecordSet"]["Name"] for c in b] for b in batches] == [
        ["a", "b"],
        ["c"],
        ["d"],
    ]
    assert split([], 1000, 32000) == []
    with pytest.raises(ProviderError, match=re.escape("b: its changes count 600 records")):
        split(groups, 500, 32000)
