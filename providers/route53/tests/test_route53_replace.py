"""Replacing what is in the way of a managed key (adopt or --force), as exact requests on a
real boto3 client under botocore's Stubber: moto accepts a DELETE that does not match, Route 53
does not."""

from __future__ import annotations

from typing import Any

from route53_support import MARKER, ZONE, Stubbed, rs, simple

from dnsfailover.provider.plan import Safety, diff

W = "w.example.test."
C = "c.example.test."


def batch(*changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "HostedZoneId": "Z1",
        "ChangeBatch": {
            "Comment": "dnsfailover owner=dnsfailover batch 1/1",
            "Changes": list(changes),
        },
    }


async def test_weighted_alias_and_cname_in_the_way_are_deleted_exactly_as_listed(
    stubbed: Stubbed,
) -> None:
    p = await stubbed.make()
    weighted = [
        {**simple(W, "A", "192.0.2.3"), "SetIdentifier": "a", "Weight": 5},
        {**simple(W, "A", "192.0.2.4"), "SetIdentifier": "b", "Weight": 0},
    ]
    cname = simple(C, "CNAME", "elsewhere.test.", ttl=300)
    stubbed.listing(*weighted, cname)
    desired = [rs("w", "A", "198.51.100.1"), rs("c", "A", "198.51.100.2")]
    populated = await p.populate([(r.name, r.rtype) for r in desired])
    plan = diff(ZONE, populated, desired)
    cleared, held = plan.partition(Safety())
    assert sorted(held) == [(C, "A"), (W, "A")]
    assert not cleared, "not cleared: nothing is written"
    cleared, held = plan.partition(Safety(adopt=True))
    assert held == {}
    assert cleared.replace == {(C, "A"), (W, "A")}
    marker: dict[str, Any] = simple(f"_dnsfailover-a.{W}", "TXT", MARKER, ttl=300)
    stubbed.change_ok(
        "C1",
        batch(
            {"Action": "DELETE", "ResourceRecordSet": cname},
            {"Action": "UPSERT", "ResourceRecordSet": simple(C, "A", "198.51.100.2")},
            {
                "Action": "UPSERT",
                "ResourceRecordSet": simple(f"_dnsfailover-a.{C}", "TXT", MARKER, ttl=300),
            },
            {"Action": "DELETE", "ResourceRecordSet": weighted[0]},
            {"Action": "DELETE", "ResourceRecordSet": weighted[1]},
            {"Action": "UPSERT", "ResourceRecordSet": simple(W, "A", "198.51.100.1")},
            {"Action": "UPSERT", "ResourceRecordSet": marker},
        ),
    )
    stubbed.status("INSYNC")
    result = await p.apply(cleared)
    assert result.applied == 2
    stubbed.stubber.assert_no_pending_responses()
