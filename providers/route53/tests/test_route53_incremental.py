"""Between full reads, a flip re-reads only the names it touches: one Change and a few reads,
not a listing of a hosted zone of thousands of record sets (against moto's real HTTP API)."""

from __future__ import annotations

import math

from route53_support import Moto, rs, simple

from dnsfailover.provider.plan import Safety
from dnsfailover.provider.sync import ZoneSync

FOREIGN = 3_000  # record sets someone else keeps in the zone


async def test_a_flip_costs_one_change_and_reads_of_its_name(moto: Moto) -> None:
    zone_id = moto.create_zone()
    for start in range(0, FOREIGN, 500):  # moto takes at most 1,000 records a batch
        batch = [simple(f"other{i}.example.test.", "A", f"10.9.{i // 250}.{i % 250 + 1}")
                 for i in range(start, start + 500)]  # fmt: skip
        moto.upsert(zone_id, *batch)
    p = await moto.provider(page_size=300)
    sync = ZoneSync(p, Safety())
    names = [rs(f"svc{i}", "A", "192.0.2.1", "192.0.2.2") for i in range(20)]
    await sync.converge(tuple(names))  # the first plan reads the whole zone
    assert sync.reads == 1
    listed = p.calls["ListResourceRecordSets"]
    assert listed >= math.ceil(FOREIGN / 300)

    flipped = [*names[:7], rs("svc7", "A", "192.0.2.2"), *names[8:]]
    before = dict(p.calls)
    plan = await sync.converge(tuple(flipped))
    assert [c.describe() for c in plan.changes] == [
        "~ svc7.example.test. A 192.0.2.1 192.0.2.2 -> 192.0.2.2"
    ]
    assert sync.reads == 1  # no new full read
    assert p.calls["ChangeResourceRecordSets"] - before["ChangeResourceRecordSets"] == 1
    # the name and its marker: a call each, not the 10+ pages of the zone
    assert p.calls["ListResourceRecordSets"] - before["ListResourceRecordSets"] == 2
    values = {(r["Name"], tuple(v["Value"] for v in r["ResourceRecords"]))
              for r in moto.record_sets(zone_id) if r["Type"] == "A"}  # fmt: skip
    assert ("svc7.example.test.", ("192.0.2.2",)) in values


async def test_a_touched_name_is_checked_for_conflicts_afresh(moto: Moto) -> None:
    """Someone puts a CNAME where a managed name is about to go: the re-read of that name
    sees it, and that key is held as after a full read (nothing is written there)."""
    zone_id = moto.create_zone()
    p = await moto.provider()
    sync = ZoneSync(p, Safety())
    await sync.converge((rs("a", "A", "192.0.2.1"), rs("b", "A", "192.0.2.1")))
    moto.upsert(zone_id, simple("c.example.test.", "CNAME", "elsewhere.test."))
    wanted = (rs("a", "A", "192.0.2.1"), rs("b", "A", "192.0.2.1"), rs("c", "A", "192.0.2.3"))
    assert not await sync.converge(wanted)
    assert list(sync.status.held) == ["c.example.test. A"]
    assert "c.example.test. is a CNAME" in sync.status.held["c.example.test. A"]
    assert sync.reads == 1  # found by the re-read of c alone
    names = {r["Name"] for r in moto.record_sets(zone_id)}
    assert "_dnsfailover-a.c.example.test." not in names


async def test_a_hand_edit_of_an_untouched_name_is_seen_after_a_reload(moto: Moto) -> None:
    """Between full reads a plan trusts what it wrote for names it does not touch; a reload
    (an operator who just edited the zone by hand, or changed `adopt`) reads it all again."""
    zone_id = moto.create_zone()
    p = await moto.provider()
    sync = ZoneSync(p, Safety())
    wanted = (rs("a", "A", "192.0.2.1"), rs("b", "A", "192.0.2.1"))
    await sync.converge(wanted)
    moto.upsert(zone_id, simple("a.example.test.", "A", "203.0.113.66"))  # by hand
    assert not await sync.converge(wanted)  # `a` is not touched: not read, not seen
    sync.read_all()  # what a reload does
    plan = await sync.converge(wanted)
    assert sync.reads == 2
    assert [c.describe() for c in plan.changes] == ["~ a.example.test. A 203.0.113.66 -> 192.0.2.1"]
