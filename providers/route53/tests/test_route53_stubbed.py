"""What moto cannot show, on a real boto3 client under botocore's Stubber: the exact requests,
throttling, busy zones, server errors, timeouts, PENDING changes, rejections."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from dnsfailover_route53.provider import Route53Provider
from route53_support import MARKER, SECRET, ZONE, Stubbed, rs, simple

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.plan import Plan, diff

MARKER_B = '"heritage=dnsfailover,owner=blue"'


def marker_of(name: str, rtype: str, *values: str) -> dict[str, Any]:
    return simple(f"_dnsfailover-{rtype.lower()}.{name}", "TXT", *(values or (MARKER,)), ttl=300)


def upsert(rrset: dict[str, Any]) -> dict[str, Any]:
    return {"Action": "UPSERT", "ResourceRecordSet": rrset}


def delete(rrset: dict[str, Any]) -> dict[str, Any]:
    return {"Action": "DELETE", "ResourceRecordSet": rrset}


def batch(*changes: dict[str, Any], i: int = 1, n: int = 1) -> dict[str, Any]:
    return {
        "HostedZoneId": "Z1",
        "ChangeBatch": {
            "Comment": f"dnsfailover owner=dnsfailover batch {i}/{n}",
            "Changes": list(changes),
        },
    }


async def planned(
    s: Stubbed, p: Route53Provider, existing: list[dict[str, Any]], desired: list[RecordSet]
) -> Plan:
    s.listing(*existing)
    populated = await p.populate([(r.name, r.rtype) for r in desired])
    return diff(ZONE, populated, desired)


async def one_update(s: Stubbed, p: Route53Provider) -> Plan:
    """A plan that flips www A on an owned record: one UPSERT."""
    www = simple("www.example.test.", "A", "192.0.2.1")
    return await planned(
        s, p, [www, marker_of("www.example.test.", "A")], [rs("www", "A", "198.51.100.1")]
    )


async def test_exact_change_batch(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    existing = [
        simple("www.example.test.", "A", "192.0.2.1"),
        marker_of("www.example.test.", "A"),
        simple("old.example.test.", "A", "192.0.2.5", ttl=30),
        marker_of("old.example.test.", "A"),
        simple("adopt.example.test.", "A", "203.0.113.1"),
        marker_of("adopt.example.test.", "A", MARKER_B),
    ]
    desired = [
        rs("www", "A", "198.51.100.1"),
        rs("new", "AAAA", "2001:db8::1"),
        rs("adopt", "A", "203.0.113.2"),
    ]
    plan = await planned(stubbed, p, existing, desired)
    assert plan.foreign == {("adopt.example.test.", "A")}  # blue's
    stubbed.change_ok(
        "C1",
        batch(
            upsert(simple("adopt.example.test.", "A", "203.0.113.2")),
            upsert(marker_of("adopt.example.test.", "A")),  # taken over: ours alone
            upsert(simple("new.example.test.", "AAAA", "2001:db8::1")),
            upsert(marker_of("new.example.test.", "AAAA")),
            delete(simple("old.example.test.", "A", "192.0.2.5", ttl=30)),
            delete(marker_of("old.example.test.", "A")),
            upsert(simple("www.example.test.", "A", "198.51.100.1")),  # owned: marker untouched
        ),
    )
    stubbed.status("INSYNC")
    result = await p.apply(plan)
    assert (result.applied, result.calls, result.confirmed) == (4, 1, True)
    stubbed.stubber.assert_no_pending_responses()


async def test_delete_keeps_another_owners_claim_on_a_shared_marker(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    shared = marker_of("gone.example.test.", "A", MARKER, MARKER_B)
    existing = [simple("gone.example.test.", "A", "192.0.2.5"), shared]
    plan = await planned(stubbed, p, existing, [])
    stubbed.change_ok(
        "C1",
        batch(
            delete(simple("gone.example.test.", "A", "192.0.2.5")),
            upsert(marker_of("gone.example.test.", "A", MARKER_B)),
        ),
    )
    stubbed.status("INSYNC")
    await p.apply(plan)
    stubbed.stubber.assert_no_pending_responses()


async def test_split_keeps_each_name_whole(stubbed: Stubbed) -> None:
    # each new name counts 4 (two UPSERTs of one record): 8 per batch holds two names
    p = await stubbed.make(max_batch_records=8)
    desired = [rs("a", "A", "192.0.2.1"), rs("b", "A", "192.0.2.2"), rs("c", "A", "192.0.2.3")]
    plan = await planned(stubbed, p, [], desired)

    def created(name: str, value: str) -> list[dict[str, Any]]:
        fqdn = f"{name}.{ZONE}"
        return [upsert(simple(fqdn, "A", value)), upsert(marker_of(fqdn, "A"))]

    stubbed.change_ok("C1", batch(*created("a", "192.0.2.1"), *created("b", "192.0.2.2"), n=2))
    stubbed.change_ok("C2", batch(*created("c", "192.0.2.3"), i=2, n=2))
    stubbed.status("INSYNC", "C1")
    stubbed.status("INSYNC", "C2")
    result = await p.apply(plan)
    assert result.calls == 2
    assert "C1, C2" in result.detail
    stubbed.stubber.assert_no_pending_responses()


async def test_a_name_too_big_for_any_batch_is_refused_before_sending(stubbed: Stubbed) -> None:
    p = await stubbed.make(max_batch_records=4)
    plan = await planned(stubbed, p, [], [rs("a", "A", "192.0.2.1", "192.0.2.2")])
    with pytest.raises(
        ProviderError, match=re.escape("a.example.test.: its changes count 6 records")
    ):
        await p.apply(plan)
    assert p.calls["ChangeResourceRecordSets"] == 0


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttling", 400),
        ("ThrottlingException", 400),
        ("PriorRequestNotComplete", 400),
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
    ],
)
async def test_transient_errors_are_retried_and_counted(
    stubbed: Stubbed, caplog: pytest.LogCaptureFixture, code: str, status: int
) -> None:
    p = await stubbed.make()
    plan = await one_update(stubbed, p)
    stubbed.change_error(code, status)
    stubbed.change_error(code, status)
    stubbed.change_ok()
    stubbed.status("INSYNC")
    with caplog.at_level(logging.INFO, logger="dnsfailover.provider.route53"):
        result = await p.apply(plan)
    assert (result.calls, result.confirmed) == (3, True)
    retries = [r for r in caplog.records if r.getMessage().startswith("retry: ")]
    assert len(retries) == 2
    assert f"error={code}" in retries[0].getMessage()
    stubbed.stubber.assert_no_pending_responses()


async def test_read_timeout_is_retried(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    plan = await one_update(stubbed, p)
    stubbed.read_timeout_once()
    stubbed.change_ok()
    stubbed.status("INSYNC")
    result = await p.apply(plan)
    assert result.calls == 2


async def test_rejected_after_a_timeout_says_it_may_have_been_applied(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    plan = await one_update(stubbed, p)
    stubbed.read_timeout_once()
    stubbed.change_error("InvalidChangeBatch", 400, "[Tried to delete ... but it was not found]")
    with pytest.raises(ProviderError, match="batch 1/1 rejected") as e:
        await p.apply(plan)
    assert "may have been applied" in str(e.value)


async def test_pending_then_insync(stubbed: Stubbed, caplog: pytest.LogCaptureFixture) -> None:
    p = await stubbed.make()
    plan = await one_update(stubbed, p)
    stubbed.change_ok()
    for status in ("PENDING", "PENDING", "INSYNC"):
        stubbed.status(status)
    with caplog.at_level(logging.INFO, logger="dnsfailover.provider.route53"):
        result = await p.apply(plan)
    assert result.confirmed
    assert p.calls["GetChange"] == 3
    assert any(
        r.getMessage().startswith("confirm: zone=example.test. change=C1 INSYNC after")
        for r in caplog.records
    )
    stubbed.stubber.assert_no_pending_responses()


async def test_confirm_timeout(stubbed: Stubbed) -> None:
    p = await stubbed.make(confirm_timeout=0.05, poll_interval=0.01, poll_max=0.01)
    plan = await one_update(stubbed, p)
    stubbed.change_ok("C9")
    for _ in range(50):
        stubbed.status("PENDING", "C9")
    with pytest.raises(
        ProviderError, match=re.escape("not confirmed INSYNC after 0.05s; change C9")
    ):
        await p.apply(plan)
    assert 2 <= p.calls["GetChange"] < 50  # the first poll, ..., one at the deadline


async def test_rejected_batch_is_not_retried(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    plan = await one_update(stubbed, p)
    message = "[RRSet with DNS name www.example.test. is not permitted in zone example.test.]"
    stubbed.change_error("InvalidChangeBatch", 400, message)
    with pytest.raises(ProviderError) as e:
        await p.apply(plan)
    assert str(e.value) == (
        f"example.test.: batch 1/1 rejected: InvalidChangeBatch: {message}; nothing was applied"
    )
    assert p.calls["ChangeResourceRecordSets"] == 1
    stubbed.stubber.assert_no_pending_responses()


async def test_rejected_second_batch_names_what_stayed_applied(stubbed: Stubbed) -> None:
    p = await stubbed.make(max_batch_records=4)
    desired = [rs("a", "A", "192.0.2.1"), rs("b", "A", "192.0.2.2"), rs("c", "A", "192.0.2.3")]
    plan = await planned(stubbed, p, [], desired)
    stubbed.change_ok("C1")
    stubbed.change_error("InvalidInput", 400, "bad input")
    with pytest.raises(ProviderError) as e:
        await p.apply(plan)
    assert str(e.value) == (
        "example.test.: batch 2/3 rejected: InvalidInput: bad input; "
        "batch 1 stayed applied, each one whole (C1); batches 2-3 not applied"
    )


async def test_throttled_past_the_deadline(stubbed: Stubbed) -> None:
    p = await stubbed.make(deadline=0.2, backoff_base=0.01, backoff_max=0.01)
    plan = await one_update(stubbed, p)
    for _ in range(100):
        stubbed.change_error("Throttling", 400, "Rate exceeded")
    with pytest.raises(ProviderError, match=r"batch 1/1 failed: gave up after \d+ attempts within"):
        await p.apply(plan)
    assert 2 <= p.calls["ChangeResourceRecordSets"] < 100


async def test_access_denied_is_not_retried_and_carries_no_secret(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    plan = await one_update(stubbed, p)
    stubbed.change_error("AccessDenied", 403, "User is not authorized to perform this action")
    with pytest.raises(ProviderError, match="batch 1/1 failed: AccessDenied") as e:
        await p.apply(plan)
    assert p.calls["ChangeResourceRecordSets"] == 1
    assert SECRET not in str(e.value)


async def test_listing_follows_record_identifiers(stubbed: Stubbed) -> None:
    p = await stubbed.make(page_size=2)
    w1 = {**simple("w.example.test.", "A", "192.0.2.1"), "SetIdentifier": "1", "Weight": 1}
    w2 = {**simple("w.example.test.", "A", "192.0.2.2"), "SetIdentifier": "2", "Weight": 1}
    www = simple("www.example.test.", "A", "192.0.2.3")
    stubbed.stubber.add_response(
        "list_resource_record_sets",
        {
            "ResourceRecordSets": [w1],
            "IsTruncated": True,
            "MaxItems": "2",
            "NextRecordName": "w.example.test.",
            "NextRecordType": "A",
            "NextRecordIdentifier": "2",
        },
        {"HostedZoneId": "Z1", "MaxItems": "2"},
    )
    stubbed.stubber.add_response(
        "list_resource_record_sets",
        {"ResourceRecordSets": [w2, www], "IsTruncated": False, "MaxItems": "2"},
        {
            "HostedZoneId": "Z1",
            "MaxItems": "2",
            "StartRecordName": "w.example.test.",
            "StartRecordType": "A",
            "StartRecordIdentifier": "2",
        },
    )
    populated = await p.populate([("w.example.test.", "A"), ("www.example.test.", "A")])
    assert populated.foreign == {("w.example.test.", "A"), ("www.example.test.", "A")}
    assert [r.name for r in populated.records] == ["www.example.test."]


async def test_listing_that_makes_no_progress_stops(stubbed: Stubbed) -> None:
    p = await stubbed.make(page_size=1)
    w1 = {**simple("w.example.test.", "A", "192.0.2.1"), "SetIdentifier": "1", "Weight": 1}
    page = {
        "ResourceRecordSets": [w1],
        "IsTruncated": True,
        "MaxItems": "1",
        "NextRecordName": "w.example.test.",
        "NextRecordType": "A",
    }  # no identifier: moto
    stubbed.stubber.add_response("list_resource_record_sets", page)
    stubbed.stubber.add_response("list_resource_record_sets", page)
    with pytest.raises(ProviderError, match=re.escape("brought nothing new at w.example.test. A")):
        await p.populate([])


async def test_escaped_names_are_normalised(stubbed: Stubbed) -> None:
    p = await stubbed.make()
    stubbed.listing(
        simple("\\052.Example.Test.", "A", "192.0.2.1"),
        marker_of("\\052.example.test.", "A"),
    )
    populated = await p.populate([("*.example.test.", "A")])
    assert populated.owned == {("*.example.test.", "A")}
    assert populated.records == (RecordSet("*.example.test.", "A", 60, ("192.0.2.1",)),)
