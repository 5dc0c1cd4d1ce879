"""One bad record set must not block a zone: refusal per key against a real moto server,
through the sync worker the service runs (issue 15, items 8 and 9)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from route53_support import Moto, rs, simple

from dnsfailover.model import RecordSet
from dnsfailover.provider.plan import Safety
from dnsfailover.provider.sync import SyncEvent, ZoneSync

N = 40
BAD = "n0.example.test."


def weighted(name: str, ident: str, value: str, weight: int) -> Any:
    return {**simple(name, "A", value), "SetIdentifier": ident, "Weight": weight}


def answers(moto: Moto, zone_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every A record set, by name (a weighted name has several)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in moto.record_sets(zone_id):
        if r["Type"] == "A":
            out.setdefault(r["Name"], []).append(r)
    return out


def values(sets: list[dict[str, Any]]) -> list[str]:
    return sorted(v["Value"] for r in sets for v in r.get("ResourceRecords", ()))


async def scene(moto: Moto, **options: Any) -> tuple[str, ZoneSync, list[SyncEvent], Any]:
    """N managed names on a dead endpoint; then someone puts a weighted set at one of them."""
    zone_id = moto.create_zone()
    p = await moto.provider(**options)
    events: list[SyncEvent] = []
    first = ZoneSync(p, Safety())
    dead = tuple(rs(f"n{i}", "A", "192.0.2.1") for i in range(N))
    await first.converge(dead)
    plain: Any = simple(BAD, "A", "192.0.2.1")
    moto.admin.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {"Action": "DELETE", "ResourceRecordSet": plain},
                {"Action": "CREATE", "ResourceRecordSet": weighted(BAD, "a", "203.0.113.1", 1)},
                {"Action": "CREATE", "ResourceRecordSet": weighted(BAD, "b", "203.0.113.2", 1)},
            ]
        },
    )
    return zone_id, first, events, p


def failover() -> tuple[RecordSet, ...]:
    return tuple(rs(f"n{i}", "A", "198.51.100.7") for i in range(N))


async def test_a_weighted_set_at_one_name_holds_that_name_only(moto: Moto) -> None:
    zone_id, _, _, _ = await scene(moto)
    p = await moto.provider()
    events: list[SyncEvent] = []
    sync = ZoneSync(p, Safety(), on_event=events.append, backoff_first=0.05, backoff_max=0.2)
    sync.start()
    sync.submit(failover())
    await asyncio.wait_for(sync.wait_idle(), 10)
    listed = answers(moto, zone_id)
    moved = [n for n, sets in listed.items() if values(sets) == ["198.51.100.7"]]
    assert len(moved) == N - 1, "every other name failed over"
    assert values(listed[BAD]) == ["203.0.113.1", "203.0.113.2"], "the weighted set is intact"
    assert list(sync.status.held) == [f"{BAD} A"]
    assert "routing-policy" in sync.status.held[f"{BAD} A"]
    assert "adopt: true" in sync.status.held[f"{BAD} A"]
    assert not sync.status.in_sync
    assert [e.kind for e in events] == ["applied", "refused"]
    assert f"1 record set(s) held back, {N - 1} other change(s) applied" in events[1].message

    # someone removes the weighted sets by hand: the held name follows on the re-check
    # timer, with no health change and no new decision
    moto.admin.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {"Action": "DELETE", "ResourceRecordSet": weighted(BAD, "a", "203.0.113.1", 1)},
                {"Action": "DELETE", "ResourceRecordSet": weighted(BAD, "b", "203.0.113.2", 1)},
            ]
        },
    )
    for _ in range(200):
        if sync.status.in_sync:
            break
        await asyncio.sleep(0.05)
    assert values(answers(moto, zone_id)[BAD]) == ["198.51.100.7"]
    assert sync.status.held == {}
    assert [e.kind for e in events] == ["applied", "refused", "applied"]
    await sync.stop()


@pytest.mark.parametrize(("adopt", "force"), [(True, False), (False, True)])
async def test_adopt_and_force_replace_the_weighted_set(
    moto: Moto, adopt: bool, force: bool
) -> None:
    """The remedy the message names works: adopt (or --force) replaces what is in the way."""
    zone_id, _, _, _ = await scene(moto)
    p = await moto.provider()
    sync = ZoneSync(p, Safety(adopt=adopt), force=force)
    await sync.converge(failover())
    listed = answers(moto, zone_id)
    assert listed[BAD] == [simple(BAD, "A", "198.51.100.7")], "one plain set"
    assert sync.status.held == {}
    assert sync.status.in_sync
    populated = await p.populate([(BAD, "A")])
    assert (BAD, "A") in populated.owned, "ours now: the marker was written"
