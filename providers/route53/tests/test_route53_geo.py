"""Steered names as Route 53 geolocation record sets, against a real moto server, through
the core's sync worker (populate → diff → per-key safety → apply → confirm).

A Stubber test shows the exact request and its retries, which moto cannot.  Moto deletes a
record set given with a SetIdentifier from *every* name that has one with
that identifier (real Route 53 deletes it at the one name and type), so the tests that
delete geolocation sets keep a single steered name in the zone.
"""

from __future__ import annotations

from typing import Any

import pytest
from dnsfailover_route53.provider import Route53Provider
from route53_support import MARKER, ZONE, Moto, Stubbed, rs, simple

from dnsfailover.model import RecordSet, SteeredSet
from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.plan import Change, Key, Plan, Safety
from dnsfailover.provider.sync import ZoneSync

WWW = f"www.{ZONE}"
API = f"api.{ZONE}"
EU, US = "192.0.2.10", "192.0.2.20"
#: the places of each location group of the steered names: the EU group answers Germany
#: and the rest of Europe, the US group North America and every client no rule places
PLACES = {"eu,us": ("country:DE", "continent:EU"), "us,eu": ("continent:NA", "*")}


def steered(
    name: str = WWW, *, eu: tuple[str, ...] = (EU,), us: tuple[str, ...] = (US,), ttl: int = 60
) -> SteeredSet:
    answers = {
        "eu,us": RecordSet(name, "A", ttl, eu),
        "us,eu": RecordSet(name, "A", ttl, us),
    }
    return SteeredSet(name, "A", "us,eu", answers, PLACES)


def desired(*sets: SteeredSet, plain: tuple[RecordSet, ...] = ()) -> tuple[RecordSet, ...]:
    """What the runtime hands a sync worker: the plain sets, each steered name's default
    group's answer among them."""
    return plain + tuple(s.answers[s.default] for s in sets)


def keyed(sets: tuple[SteeredSet, ...]) -> dict[Key, SteeredSet]:
    return {(s.name, s.rtype): s for s in sets}


def geo(name: str, ident: str, location: dict[str, str], *values: str, ttl: int = 60) -> Any:
    return {**simple(name, "A", *values, ttl=ttl), "SetIdentifier": ident, "GeoLocation": location}


def listed(moto: Moto, zone_id: str, name: str = WWW) -> dict[str | None, dict[str, Any]]:
    """The record sets at `name` of type A as moto lists them, by SetIdentifier."""
    return {
        r.get("SetIdentifier"): r
        for r in moto.record_sets(zone_id)
        if r["Name"] == name and r["Type"] == "A"
    }


def marker(moto: Moto, zone_id: str, name: str = WWW) -> list[dict[str, Any]]:
    return [r for r in moto.record_sets(zone_id) if r["Name"] == f"_dnsfailover-a.{name}"]


async def sync_for(moto: Moto, safety: Safety | None = None, **options: Any) -> ZoneSync:
    p = await moto.provider(**options)
    return ZoneSync(p, safety or Safety())


async def test_steered_name_becomes_one_geolocation_set_per_place(moto: Moto) -> None:
    zone_id = moto.create_zone()
    sync = await sync_for(moto)
    sets = (steered(),)

    plan = await sync.converge(desired(*sets), keyed(sets))

    assert sorted((c.kind, c.place) for c in plan.changes) == [
        ("create", "*"),
        ("create", "continent:EU"),
        ("create", "continent:NA"),
        ("create", "country:DE"),
    ]
    assert listed(moto, zone_id) == {
        "dnsfailover:country:DE": geo(WWW, "dnsfailover:country:DE", {"CountryCode": "DE"}, EU),
        "dnsfailover:continent:EU": geo(
            WWW, "dnsfailover:continent:EU", {"ContinentCode": "EU"}, EU
        ),
        "dnsfailover:continent:NA": geo(
            WWW, "dnsfailover:continent:NA", {"ContinentCode": "NA"}, US
        ),
        "dnsfailover:*": geo(WWW, "dnsfailover:*", {"CountryCode": "*"}, US),
    }, "no plain set beside them: Route 53 refuses the mix"
    assert marker(moto, zone_id) == [simple(f"_dnsfailover-a.{WWW}", "TXT", MARKER, ttl=300)]
    assert sync.status.in_sync
    assert not await sync.plan(desired(*sets), keyed(sets)), "the second plan is empty"

    # read back from scratch by another worker: all ours, nothing to do
    fresh = await sync_for(moto)
    again = await fresh.plan(desired(*sets), keyed(sets))
    assert not again, [c.describe() for c in again.changes]
    assert fresh.reads == 1
    populated = await fresh.provider.populate([(WWW, "A")])
    assert populated.owned == {(WWW, "A")}
    assert populated.records == ()
    assert populated.placed[(WWW, "A", "country:DE")] == RecordSet(WWW, "A", 60, (EU,))
    assert not populated.foreign
    assert not populated.conflicts


async def test_failover_of_one_group_rewrites_only_its_places(moto: Moto) -> None:
    zone_id = moto.create_zone()
    sync = await sync_for(moto)
    before = (steered(), steered(API))
    await sync.converge(desired(*before), keyed(before))
    api_before = listed(moto, zone_id, API)
    www_before = listed(moto, zone_id)
    provider = sync.provider
    assert isinstance(provider, Route53Provider)
    sent = provider.calls["ChangeResourceRecordSets"]

    # the EU region of www goes down: its group now answers from the US
    after = (steered(eu=(US,)), steered(API))
    plan = await sync.converge(desired(*after), keyed(after))

    assert [(c.kind, c.key, c.place) for c in plan.changes] == [
        ("update", (WWW, "A"), "continent:EU"),
        ("update", (WWW, "A"), "country:DE"),
    ]
    assert provider.calls["ChangeResourceRecordSets"] == sent + 1
    assert sync.reads == 1, "re-read only the name that changed, not the whole zone"
    now = listed(moto, zone_id)
    assert now["dnsfailover:country:DE"]["ResourceRecords"] == [{"Value": US}]
    assert now["dnsfailover:continent:EU"]["ResourceRecords"] == [{"Value": US}]
    others = {"dnsfailover:continent:NA", "dnsfailover:*"}
    assert {k: now[k] for k in others} == {k: www_before[k] for k in others}
    assert listed(moto, zone_id, API) == api_before
    assert not await sync.plan(desired(*after), keyed(after))

    # and back (failback): the same two sets again
    plan = await sync.converge(desired(*before), keyed(before))
    assert sorted(c.place for c in plan.changes) == ["continent:EU", "country:DE"]
    assert listed(moto, zone_id) == www_before


async def test_plain_to_steered_and_back_in_one_atomic_batch(moto: Moto) -> None:
    zone_id = moto.create_zone()
    sync = await sync_for(moto)
    provider = sync.provider
    assert isinstance(provider, Route53Provider)
    plain = (rs("www", "A", US),)
    await sync.converge(plain)
    assert set(listed(moto, zone_id)) == {None}

    sets = (steered(),)
    sent = provider.calls["ChangeResourceRecordSets"]
    plan = await sync.converge(desired(*sets), keyed(sets))
    assert provider.calls["ChangeResourceRecordSets"] == sent + 1, "one ChangeBatch"
    assert sorted((c.kind, c.place) for c in plan.changes) == [
        ("create", "*"),
        ("create", "continent:EU"),
        ("create", "continent:NA"),
        ("create", "country:DE"),
        ("delete", ""),
    ]
    assert set(listed(moto, zone_id)) == {
        "dnsfailover:country:DE",
        "dnsfailover:continent:EU",
        "dnsfailover:continent:NA",
        "dnsfailover:*",
    }
    assert len(marker(moto, zone_id)) == 1, "the marker stays: the name is still ours"
    assert not await sync.plan(desired(*sets), keyed(sets))

    sent = provider.calls["ChangeResourceRecordSets"]
    plan = await sync.converge(plain)
    assert provider.calls["ChangeResourceRecordSets"] == sent + 1, "one ChangeBatch"
    assert sorted((c.kind, c.place) for c in plan.changes) == [
        ("create", ""),
        ("delete", "*"),
        ("delete", "continent:EU"),
        ("delete", "continent:NA"),
        ("delete", "country:DE"),
    ]
    assert listed(moto, zone_id) == {None: simple(WWW, "A", US)}
    assert len(marker(moto, zone_id)) == 1
    assert not await sync.plan(plain)
    assert not await (await sync_for(moto)).plan(plain), "read back from scratch: in sync"


async def test_places_dropped_from_the_rule_are_deleted_and_the_name_stays_ours(
    moto: Moto,
) -> None:
    zone_id = moto.create_zone()
    sync = await sync_for(moto)
    sets = (steered(),)
    await sync.converge(desired(*sets), keyed(sets))

    fewer = SteeredSet(WWW, "A", "us,eu", sets[0].answers, {"eu,us": ("country:DE",)})
    plan = await sync.converge(desired(fewer), keyed((fewer,)))
    assert sorted((c.kind, c.place) for c in plan.changes) == [
        ("delete", "continent:EU"),
        ("delete", "continent:NA"),
    ]
    assert set(listed(moto, zone_id)) == {"dnsfailover:country:DE", "dnsfailover:*"}
    assert len(marker(moto, zone_id)) == 1
    assert not await sync.plan(desired(fewer), keyed((fewer,)))

    # no longer desired at all (as for a plain name, that removes every answer: allowed
    # here): every set and the marker go
    sync.safety = Safety(empty_ok=frozenset({WWW}))
    plan = await sync.converge(())
    assert sorted((c.kind, c.place) for c in plan.changes) == [
        ("delete", "*"),
        ("delete", "country:DE"),
    ]
    assert listed(moto, zone_id) == {}
    assert marker(moto, zone_id) == []


async def test_an_emptied_group_is_deleted_but_emptying_every_group_is_refused(
    moto: Moto,
) -> None:
    zone_id = moto.create_zone()
    sync = await sync_for(moto)
    sets = (steered(),)
    await sync.converge(desired(*sets), keyed(sets))

    # one group has no healthy answer left (all_down: serve_none): its places go, and their
    # clients get the default place's answer; the name still answers, so this is no drain
    one = (steered(eu=()),)
    plan = await sync.converge(desired(*one), keyed(one))
    assert sorted((c.kind, c.place) for c in plan.changes) == [
        ("delete", "continent:EU"),
        ("delete", "country:DE"),
    ]
    assert set(listed(moto, zone_id)) == {"dnsfailover:continent:NA", "dnsfailover:*"}

    # every group empty: that removes every answer of the name, and is held back
    none = (steered(eu=(), us=()),)
    plan = await sync.converge(desired(*none), keyed(none))
    assert not plan
    assert "removes every A answer of www.example.test." in sync.status.held[f"{WWW} A"]
    assert set(listed(moto, zone_id)) == {"dnsfailover:continent:NA", "dnsfailover:*"}

    allowed = await sync_for(moto, Safety(empty_ok=frozenset({WWW})))
    plan = await allowed.converge(desired(*none), keyed(none))
    assert sorted(c.place for c in plan.changes) == ["*", "continent:NA"]
    assert listed(moto, zone_id) == {}


async def test_foreign_geolocation_sets_are_held_unless_adopted(moto: Moto) -> None:
    zone_id = moto.create_zone()
    theirs = geo(WWW, "frankfurt", {"CountryCode": "DE"}, "203.0.113.1", ttl=300)
    moto.upsert(zone_id, theirs)
    sets = (steered(),)

    sync = await sync_for(moto)
    plan = await sync.converge(desired(*sets), keyed(sets))
    assert not plan
    assert "routing-policy or alias record sets" in sync.status.held[f"{WWW} A"]
    assert listed(moto, zone_id) == {"frankfurt": theirs}

    adopting = await sync_for(moto, Safety(adopt=True))
    plan = await adopting.converge(desired(*sets), keyed(sets))
    assert len(plan.changes) == 4
    assert set(listed(moto, zone_id)) == {
        "dnsfailover:country:DE",
        "dnsfailover:continent:EU",
        "dnsfailover:continent:NA",
        "dnsfailover:*",
    }
    assert not await (await sync_for(moto)).plan(desired(*sets), keyed(sets))


async def test_our_identifiers_without_our_marker_are_not_ours(moto: Moto) -> None:
    zone_id = moto.create_zone()
    moto.upsert(zone_id, geo(WWW, "dnsfailover:*", {"CountryCode": "*"}, US))
    sync = await sync_for(moto)
    populated = await sync.provider.populate([(WWW, "A")])
    assert populated.owned == frozenset()
    assert populated.placed == {}
    assert "not marked as ours" in populated.conflicts[(WWW, "A")]


async def test_places_route53_cannot_publish_are_refused(moto: Moto) -> None:
    moto.create_zone()
    sync = await sync_for(moto)
    provider = sync.provider
    assert isinstance(provider, Route53Provider)
    kinds = provider.GEO_PLACES
    assert kinds == {"country", "continent"}

    office = SteeredSet(
        WWW,
        "A",
        "us,eu",
        {"eu,us": RecordSet(WWW, "A", 60, (EU,)), "us,eu": RecordSet(WWW, "A", 60, (US,))},
        {"eu,us": ("net:office",), "us,eu": ("*",)},
    )
    with pytest.raises(ProviderError, match=r"\[net:office\]: steering by net has no record"):
        await sync.plan(desired(office), keyed((office,)))

    await provider.populate([(WWW, "A")])
    near = Plan(ZONE, (Change("create", None, RecordSet(WWW, "A", 60, (EU,)), "proximity"),), 0)
    with pytest.raises(ProviderError, match=r"refused, nothing sent.*\[proximity\]"):
        await provider.apply(near)
    assert provider.calls["ChangeResourceRecordSets"] == 0


async def test_conversion_batch_is_exact_and_resent_whole_when_throttled(
    stubbed: Stubbed,
) -> None:
    """What moto cannot show: the exact request (the plain set's DELETE first, one
    geolocation UPSERT per place, the marker left alone), resent whole after Throttling and
    PriorRequestNotComplete, and confirmed only once INSYNC."""
    p = await stubbed.make()
    stubbed.listing(simple(WWW, "A", US), simple(f"_dnsfailover-a.{WWW}", "TXT", MARKER, ttl=300))
    sync = ZoneSync(p, Safety())
    sets = (steered(),)
    plan = await sync.plan(desired(*sets), keyed(sets))
    request = {
        "HostedZoneId": "Z1",
        "ChangeBatch": {
            "Comment": "dnsfailover owner=dnsfailover batch 1/1",
            "Changes": [
                {"Action": "DELETE", "ResourceRecordSet": simple(WWW, "A", US)},
                *(
                    {"Action": "UPSERT", "ResourceRecordSet": geo(WWW, ident, where, value)}
                    for ident, where, value in (
                        ("dnsfailover:*", {"CountryCode": "*"}, US),
                        ("dnsfailover:continent:EU", {"ContinentCode": "EU"}, EU),
                        ("dnsfailover:continent:NA", {"ContinentCode": "NA"}, US),
                        ("dnsfailover:country:DE", {"CountryCode": "DE"}, EU),
                    )
                ),
            ],
        },
    }
    for code in ("Throttling", "PriorRequestNotComplete"):
        stubbed.stubber.add_client_error(
            "change_resource_record_sets", code, code, 400, expected_params=request
        )
    stubbed.change_ok("C1", request)
    stubbed.status("PENDING")
    stubbed.status("INSYNC")
    result = await p.apply(plan)
    assert (result.applied, result.calls, result.confirmed) == (5, 3, True)
    stubbed.stubber.assert_no_pending_responses()
