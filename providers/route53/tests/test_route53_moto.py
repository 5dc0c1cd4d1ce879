"""Round trips against a real moto server: Route 53 over HTTP, through the core's diff."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from blockbuster import blockbuster_ctx
from dnsfailover_route53.provider import Route53Provider
from route53_support import FAST, MARKER, SECRET, ZONE, Moto, rs, simple

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import ProviderError, create_provider
from dnsfailover.provider.plan import Plan, Safety, diff


async def converge(p: Route53Provider, desired: list[RecordSet]) -> Plan:
    """One round as the core runs it: populate → diff → apply; the plan it applied."""
    populated = await p.populate([(r.name, r.rtype) for r in desired])
    plan = diff(p.zone, populated, desired)
    if plan:
        result = await p.apply(plan)
        assert result.confirmed
        assert result.applied == len(plan.changes)
    return plan


def by_key(rrsets: list[dict[str, object]]) -> dict[tuple[str, str], object]:
    return {(str(r["Name"]), str(r["Type"])): r for r in rrsets}


async def test_create_failover_and_idempotence(moto: Moto) -> None:
    zone_id = moto.create_zone()
    p = await moto.provider()
    desired = [rs("www", "A", "192.0.2.1", "192.0.2.2"), rs("v6", "AAAA", "2001:db8::1")]

    plan = await converge(p, desired)
    assert plan.counts() == {"create": 2, "update": 0, "delete": 0}
    listed = by_key(moto.record_sets(zone_id))
    assert listed[("www.example.test.", "A")] == simple(
        "www.example.test.", "A", "192.0.2.1", "192.0.2.2"
    )
    assert listed[("_dnsfailover-a.www.example.test.", "TXT")] == simple(
        "_dnsfailover-a.www.example.test.", "TXT", MARKER, ttl=300
    )
    assert ("_dnsfailover-aaaa.v6.example.test.", "TXT") in listed

    populated = await p.populate([("www.example.test.", "A")])
    assert populated.owned == {("www.example.test.", "A"), ("v6.example.test.", "AAAA")}
    assert populated.foreign == frozenset()

    # a failover: the answers change
    desired = [rs("www", "A", "198.51.100.7"), rs("v6", "AAAA", "2001:db8::1")]
    plan = await converge(p, desired)
    assert plan.counts() == {"create": 0, "update": 1, "delete": 0}
    assert by_key(moto.record_sets(zone_id))[("www.example.test.", "A")] == simple(
        "www.example.test.", "A", "198.51.100.7"
    )

    # nothing left to do
    assert not await converge(p, desired)


async def test_foreign_record_is_reported_and_refused(moto: Moto) -> None:
    zone_id = moto.create_zone()
    moto.upsert(zone_id, simple("www.example.test.", "A", "203.0.113.9", ttl=300))
    p = await moto.provider()
    desired = [rs("www", "A", "192.0.2.1")]

    populated = await p.populate([("www.example.test.", "A")])
    assert populated.foreign == {("www.example.test.", "A")}
    assert populated.owned == frozenset()
    assert populated.records == (RecordSet("www.example.test.", "A", 300, ("203.0.113.9",)),)
    plan = diff(ZONE, populated, desired)
    assert plan.unsafe_reasons(Safety()) == [
        "www.example.test. A exists and is not owned by dnsfailover "
        "(set adopt: true on the zone, or use --force, to take it over)"
    ]

    # adopted (the core's Safety.adopt): it becomes ours, marker and all
    assert plan.unsafe_reasons(Safety(adopt=True)) == []
    await p.apply(plan)
    populated = await p.populate([("www.example.test.", "A")])
    assert populated.owned == {("www.example.test.", "A")}
    assert populated.foreign == frozenset()


async def test_other_owner_is_foreign(moto: Moto) -> None:
    moto.create_zone()
    blue = await moto.provider(owner_id="blue")
    green = await moto.provider(owner_id="green")
    await converge(blue, [rs("www", "A", "192.0.2.1")])
    populated = await green.populate([("www.example.test.", "A")])
    assert populated.foreign == {("www.example.test.", "A")}
    assert populated.owned == frozenset()


async def test_routing_policy_records_are_left_alone(moto: Moto) -> None:
    zone_id = moto.create_zone()
    weighted = {**simple("w.example.test.", "A", "192.0.2.3"), "SetIdentifier": "a", "Weight": 5}
    moto.upsert(zone_id, weighted, simple("c.example.test.", "CNAME", "elsewhere.test."))
    p = await moto.provider()
    keys = [("w.example.test.", "A"), ("c.example.test.", "A"), ("free.example.test.", "A")]
    populated = await p.populate(keys)
    assert populated.foreign == {("w.example.test.", "A"), ("c.example.test.", "A")}
    assert populated.records == ()
    plan = diff(ZONE, populated, [rs("w", "A", "192.0.2.1"), rs("c", "A", "192.0.2.1")])
    with pytest.raises(ProviderError, match=re.escape("w.example.test. A has routing-policy")) as e:
        await p.apply(plan)  # even when the core was told to adopt
    assert "c.example.test. is a CNAME" in str(e.value)
    assert p.calls["ChangeResourceRecordSets"] == 0


async def test_owned_name_no_longer_desired_is_deleted(moto: Moto) -> None:
    zone_id = moto.create_zone()
    p = await moto.provider()
    await converge(p, [rs("a", "A", "192.0.2.1"), rs("b", "A", "192.0.2.2")])
    plan = await converge(p, [rs("a", "A", "192.0.2.1")])
    assert [c.describe() for c in plan.changes] == ["- b.example.test. A 192.0.2.2"]
    names = {r["Name"] for r in moto.record_sets(zone_id)}
    assert "b.example.test." not in names
    assert "_dnsfailover-a.b.example.test." not in names
    assert "_dnsfailover-a.a.example.test." in names
    assert not await converge(p, [rs("a", "A", "192.0.2.1")])


async def test_find_hosted_zone_by_name(moto: Moto) -> None:
    moto.create_zone("other.test.")
    zone_id = moto.create_zone()
    p = await moto.provider()
    assert p.hosted_zone_id == zone_id


async def test_hosted_zone_id_must_match_the_zone(moto: Moto) -> None:
    other = moto.create_zone("other.test.")
    with pytest.raises(
        ProviderError, match=re.escape(f"hosted zone {other} is other.test., not example")
    ):
        await moto.provider(hosted_zone_id=f"/hostedzone/{other}")


async def test_missing_hosted_zone(moto: Moto) -> None:
    moto.create_zone("other.test.")
    with pytest.raises(
        ProviderError, match=re.escape("no Route 53 hosted zone is named example.test.")
    ):
        await moto.provider()


async def test_ambiguous_hosted_zone_names_the_candidates(moto: Moto) -> None:
    public = moto.create_zone()
    private = moto.create_zone(private=True)
    with pytest.raises(
        ProviderError, match=re.escape("2 hosted zones are named example.test.")
    ) as e:
        await moto.provider()
    assert f"{public} (public)" in str(e.value)
    assert f"{private} (private)" in str(e.value)
    p = await moto.provider(hosted_zone_id=private)
    assert p.hosted_zone_id == private


async def test_populate_follows_pages(moto: Moto) -> None:
    zone_id = moto.create_zone()
    p = await moto.provider(page_size=300)
    desired = [rs(f"h{i:03}", "A", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(700)]
    await converge(p, desired)
    before = p.calls["ListResourceRecordSets"]
    populated = await p.populate([(r.name, r.rtype) for r in desired])
    # 700 records + 700 markers + apex NS and SOA, 300 a page
    assert p.calls["ListResourceRecordSets"] - before == math.ceil(1402 / 300)
    assert len(populated.records) == 700
    assert len(populated.owned) == 700
    assert len(moto.record_sets(zone_id)) == 1402
    assert not await converge(p, desired)


async def test_large_plan_is_split_into_the_fewest_batches(moto: Moto) -> None:
    zone_id = moto.create_zone()
    p = await moto.provider()
    desired = [rs(f"n{i:04}", "A", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(1000)]
    populated = await p.populate([(r.name, r.rtype) for r in desired])
    plan = diff(ZONE, populated, desired)
    result = await p.apply(plan)
    # each name: UPSERT of 1 record + UPSERT of its marker = 4 of Route 53's 1,000 records
    assert result.calls == 4
    assert result.applied == 1000
    assert len(moto.record_sets(zone_id)) == 2002

    # the failover flip rewrites only the records (markers stay): 2 per name, 2 batches
    flipped = [RecordSet(r.name, "A", 60, ("192.0.2.99",)) for r in desired]
    populated = await p.populate([(r.name, r.rtype) for r in flipped])
    result = await p.apply(diff(ZONE, populated, flipped))
    assert result.calls == 2
    assert not await converge(p, flipped)


async def test_wildcard_and_static_types_round_trip(moto: Moto) -> None:
    moto.create_zone()
    p = await moto.provider()
    desired = [
        rs("*", "A", "192.0.2.1"),
        rs("@", "MX", "10 mail.example.test.", "20 backup.example.test."),
        rs("@", "TXT", '"v=spf1 -all"'),
        rs("_sip._tcp", "SRV", "10 5 5060 sip.example.test."),
        rs("@", "CAA", '0 issue "letsencrypt.org"'),
        rs("alias", "CNAME", "www.example.test."),
        rs("v6", "AAAA", "2001:db8::1", "2001:db8::10"),
    ]
    await converge(p, desired)
    populated = await p.populate([(r.name, r.rtype) for r in desired])
    assert populated.records == tuple(sorted(desired, key=lambda r: (r.name, r.rtype)))
    assert not await converge(p, desired)


async def test_error_messages_never_carry_the_secret(
    moto: Moto, caplog: pytest.LogCaptureFixture
) -> None:
    moto.create_zone()
    with pytest.raises(ProviderError) as e:
        await moto.provider(hosted_zone_id="ZNOSUCHZONE")
    assert "NoSuchHostedZone" in str(e.value)

    assert SECRET not in str(e.value)
    assert SECRET not in repr(e.value.__cause__)
    assert SECRET not in caplog.text


async def test_never_blocks_the_event_loop(moto: Moto) -> None:
    moto.create_zone()
    with blockbuster_ctx(["dnsfailover_route53"]):
        p = await moto.provider()
        await converge(p, [rs("www", "A", "192.0.2.1")])
        await converge(p, [rs("www", "A", "192.0.2.2")])
        await p.close()


async def test_the_client_leaves_retries_to_the_provider(moto: Moto) -> None:
    moto.create_zone()
    p = await moto.provider(connect_timeout=3, read_timeout=7)
    assert p._client is not None
    config: Any = p._client.meta.config  # what start() built (its stubs lack these fields)
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (3, 7)


async def test_unreachable_endpoint_is_retried_until_the_deadline() -> None:
    p = create_provider(
        "route53", ZONE, {"endpoint_url": "http://127.0.0.1:9", **FAST, "deadline": 0.2}
    )
    try:
        with pytest.raises(
            ProviderError, match=r"gave up after \d+ attempts within 0\.2s: Endpoint"
        ):
            await p.start()
        assert isinstance(p, Route53Provider)
        assert p.calls["ListHostedZonesByName"] >= 2
    finally:
        await p.close()
