"""Replies made for the names a publish changed (`server.relearn`): the full path's, exactly.

A random zone is asked random questions (the table learns them), then a publish changes
some names' address sets (values, count, TTL, weights, a set emptied or turned into a
CNAME); every template `relearn` files must equal the full path's reply on the new
snapshot, in Python and in the C table, and the names it could not remake are asked anew.
"""

from __future__ import annotations

import asyncio

import dns.asyncquery
import dns.message
from conftest_server import ORIGIN, soa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hits import queries, zones

from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.server import DnsServer, ZoneSnapshot
from dnsfailover.server.fast import FastTable
from dnsfailover.server.relearn import relearn
from dnsfailover.server.rrsets import labels_of
from dnsfailover.server.wire import respond


@st.composite
def changed(draw: st.DrawFn, zone: ZoneContent) -> ZoneContent:
    """`zone` with some address sets changed the ways a decision changes them."""
    sets = []
    for rs in zone.records:
        if rs.rtype in ("A", "AAAA") and draw(st.booleans()):
            how = draw(st.sampled_from(["values", "ttl", "drop", "weights", "cname"]))
            if how == "drop":
                continue
            if how == "cname":
                if not any(r.name == rs.name and r.rtype != rs.rtype for r in zone.records):
                    sets.append(RecordSet(rs.name, "CNAME", 60, (f"mail.{ORIGIN}",)))
                continue
            if how == "ttl":
                sets.append(RecordSet(rs.name, rs.rtype, rs.ttl + 7, rs.values, rs.weights))
                continue
            count = draw(st.integers(1, 5))
            if rs.rtype == "A":
                values = tuple(sorted({f"203.0.113.{i + 1}" for i in range(count)}))
            else:
                values = tuple(sorted({f"2001:db8:1::{i + 1:x}" for i in range(count)}))
            weights = tuple(1 + i for i in range(count)) if how == "weights" and count > 1 else ()
            sets.append(RecordSet(rs.name, rs.rtype, rs.ttl, values, weights))
            continue
        sets.append(rs)
    return ZoneContent(ORIGIN, soa(ORIGIN, zone.soa.serial + 1), tuple(sets))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    zone=zones(),
    asked=st.lists(queries(), min_size=1, max_size=10),
    asked_first=st.booleans(),
)
def test_relearnt_templates_are_the_full_paths_replies(
    data: st.DataObject, zone: ZoneContent, asked: list[bytes], asked_first: bool
) -> None:
    """Made by the relearn pass, or (`asked_first`) by the query that asks for a changed
    name before the pass got to it, once a pass has checked one against the full path."""
    new = data.draw(changed(zone))
    before = ZoneSnapshot.build([zone])
    twin = ZoneSnapshot.build([zone])  # the reference: its weighted sets turn in step
    table = FastTable(before, c_hits=True)
    for q in asked:
        for _ in range(2):
            assert table.answer(q, tcp=False) == respond(twin, q, tcp=False)
    after = before.update([(zone, new)])
    names = {rs.name for rs in (*zone.records, *new.records)}
    moved = frozenset(labels_of(n) for n in names if _sets(zone, n) != _sets(new, n))
    later = table.carried(after, moved)
    if asked_first:
        later.trusted = True  # (as a relearn pass sets it)
    else:
        relearn(later, lambda: True)
    reference = twin.update([(zone, new)])
    hits = later.hits
    assert hits is not None
    for q in asked:  # C first, then Python, as the UDP thread does; each must be the full path's
        reply = hits.reply(q)
        if reply is None:
            reply = later.answer(q, tcp=False)
        assert reply == respond(reference, q, tcp=False)


def _sets(zone: ZoneContent, name: str) -> set[RecordSet]:
    return {rs for rs in zone.records if rs.name == name}


def _zone(serial: int, www: tuple[str, ...]) -> ZoneContent:
    return ZoneContent(
        ORIGIN,
        soa(ORIGIN, serial),
        (
            RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
            RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)),
            *(RecordSet(f"n{i}.{ORIGIN}", "A", 30, www) for i in range(50)),
        ),
    )


async def test_after_a_failover_the_changed_names_are_c_hits_from_their_first_query() -> None:
    """50 names fail over together: once the publish's relearning is done, every one of
    them is answered by the C hit path with its new address, none by Python."""
    old, new = ("192.0.2.1", "192.0.2.2"), ("198.51.100.9",)
    async with DnsServer(ZoneSnapshot.build([_zone(1, old)]), port=0, udp_thread=True) as s:
        assert s.address is not None
        host, port = s.address

        async def ask(i: int, spelling: str = ORIGIN) -> list[str]:
            query = dns.message.make_query(f"n{i}.{spelling}", "A")
            reply = await dns.asyncquery.udp(query, host, port=port, timeout=2)
            return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)

        for i in range(50):  # learnt from 0x20-style spellings: relearnt all the same
            assert await ask(i, ORIGIN.upper()) == list(old)
        names = frozenset(labels_of(f"n{i}.{ORIGIN}") for i in range(50))
        s.publish(s.snapshot.update([(_zone(1, old), _zone(2, new))]), names)
        for _ in range(200):  # the relearn thread files them (no query needed)
            table = s._table
            if not table.stale and all(_learnt(table, i) for i in range(50)):
                break
            await asyncio.sleep(0.01)
        python_before = sum(s.rcodes[:16])
        for i in range(50):
            assert await ask(i) == list(new)
        assert sum(s.rcodes[:16]) == python_before  # all 50 from the C table


def _learnt(table: FastTable, i: int) -> bool:
    hits = table.hits
    assert hits is not None
    return hits.reply(dns.message.make_query(f"n{i}.{ORIGIN}", "A").to_wire()) is not None
