"""Publishing a change costs the change: a snapshot made from the previous one answers exactly
as one built from scratch, the fast path keeps only the replies a change cannot touch and
still answers byte for byte as the full path, and the history keeps differences."""

from __future__ import annotations

import struct

from conftest_server import raw_query, soa
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.fast import FastTable
from dnsfailover.server.versions import Delta, diff
from dnsfailover.server.wire import respond
from dnsfailover.server.zone import ZoneSnapshot

ORIGIN = "example.test."
STATIC = tuple(
    sorted(
        [
            RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
            RecordSet(f"ns1.{ORIGIN}", "A", 300, ("127.0.0.1",)),
            RecordSet(f"alias.{ORIGIN}", "CNAME", 300, (f"m1.{ORIGIN}",)),
            RecordSet(f"m2.{ORIGIN}", "TXT", 300, ('"beside a managed set"',)),
            RecordSet(f"sub.{ORIGIN}", "NS", 300, (f"ns.sub.{ORIGIN}",)),
            RecordSet(f"ns.sub.{ORIGIN}", "A", 300, ("192.0.2.53",)),
            RecordSet(f"s{0}.{ORIGIN}", "A", 300, ("198.51.100.1",)),
        ],
        key=lambda r: (r.name, r.rtype),
    )
)
MANAGED = [f"m{i}.{ORIGIN}" for i in range(4)] + [f"x.sub.{ORIGIN}"]  # the last is occluded
ADDRESSES = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
QUERIES = [(n, t) for n in [*MANAGED, f"alias.{ORIGIN}", f"s0.{ORIGIN}", ORIGIN, f"no.{ORIGIN}"]
           for t in ("A", "TXT", "ANY", "SOA")]  # fmt: skip

answer = st.tuples(st.lists(st.sampled_from(ADDRESSES), unique=True), st.booleans())


def content(serial: int, answers: dict[str, tuple[list[str], bool]]) -> ZoneContent:
    managed = {}
    for name, (values, weighted) in answers.items():
        values = sorted(values)
        weights = tuple(range(1, len(values) + 1)) if weighted and len(values) > 1 else ()
        managed[(name, "A")] = RecordSet(name, "A", 60, tuple(values), weights)
    return ZoneContent(ORIGIN, soa(ORIGIN, serial), managed=managed, static=STATIC)


def query(name: str, rtype: str, qid: int = 7) -> bytes:
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    qtype = {"A": 1, "TXT": 16, "ANY": 255, "SOA": 6}[rtype]
    return raw_query(wire + b"\0", qid=qid, qtype=qtype, flags=0)


def pinned(snapshot: ZoneSnapshot) -> ZoneSnapshot:
    return snapshot.pinned(lambda _rotor: 0)  # the same record of each weighted set


@settings(max_examples=150, deadline=None)
@given(
    first=st.fixed_dictionaries({n: answer for n in MANAGED}),
    later=st.lists(st.dictionaries(st.sampled_from(MANAGED), answer, max_size=3), max_size=6),
    with_deltas=st.booleans(),  # the changed sets as a publish knows them, or found anew
)
def test_an_updated_snapshot_answers_as_a_rebuilt_one(
    first: dict[str, tuple[list[str], bool]],
    later: list[dict[str, tuple[list[str], bool]]],
    with_deltas: bool,
) -> None:
    current = content(1, first)
    snapshot = ZoneSnapshot.build([current])
    for serial, change in enumerate(later, start=2):
        answers = {**first, **change}
        new = content(serial, answers)
        new = ZoneContent(ORIGIN, new.soa, managed=new.managed, static=current.static)
        snapshot = snapshot.update([(current, new)], [diff(current, new)] if with_deltas else ())
        rebuilt = ZoneSnapshot.build([new])
        for name, rtype in QUERIES:
            wire = query(name, rtype)
            assert respond(pinned(snapshot), wire, tcp=False) == respond(
                pinned(rebuilt), wire, tcp=False
            ), (name, rtype)
        current, first = new, answers


plain = st.lists(st.sampled_from(ADDRESSES), unique=True).map(lambda v: (v, False))


@settings(max_examples=100, deadline=None)
@given(
    changes=st.lists(
        st.dictionaries(st.sampled_from(MANAGED[:4]), plain, max_size=2), min_size=1, max_size=5
    )
)
def test_the_fast_path_after_a_publish_answers_as_the_full_path(
    changes: list[dict[str, tuple[list[str], bool]]],
) -> None:
    zones = EmbeddedZones()
    answers: dict[str, tuple[list[str], bool]] = {n: (["192.0.2.1"], False) for n in MANAGED}
    zones.put([content(1, answers)])
    table = FastTable(zones.snapshot)
    for serial, change in enumerate(changes, start=2):
        for name, rtype in QUERIES * 2:  # twice: the second miss learns a template
            table.answer(query(name, rtype), tcp=False)
        answers = {**answers, **change}
        managed = content(serial, answers).managed
        static = zones.contents[ORIGIN].static
        zones.put([ZoneContent(ORIGIN, soa(ORIGIN, serial), managed=managed, static=static)])
        delta = zones.history[ORIGIN][-1]
        changed = frozenset(tuple(n.rstrip(".").encode().split(b".")) for n in delta.names)
        table = table.carried(zones.snapshot, changed)
        for name, rtype in QUERIES:
            wire = query(name, rtype, qid=serial)
            assert table.answer(wire, tcp=False) == respond(zones.snapshot, wire, tcp=False), (
                name,
                rtype,
            )


def test_a_publish_keeps_the_unchanged_names_replies_and_drops_the_rest() -> None:
    zones = EmbeddedZones()
    answers = {n: (["192.0.2.1"], False) for n in MANAGED}
    zones.put([content(1, answers)])
    table = FastTable(zones.snapshot)
    learned = [(f"m1.{ORIGIN}", "A"), (f"m2.{ORIGIN}", "A"), (f"s0.{ORIGIN}", "A"),
               (f"no.{ORIGIN}", "A"), (ORIGIN, "SOA"), (f"alias.{ORIGIN}", "A")]  # fmt: skip
    for name, rtype in learned * 2:
        table.answer(query(name, rtype), tcp=False)
    assert len(table) == len(learned)
    old = zones.contents[ORIGIN]
    changed = {**answers, f"m1.{ORIGIN}": (["192.0.2.2"], False)}
    zones.put([ZoneContent(ORIGIN, soa(ORIGIN, 2), managed=content(2, changed).managed,
                           static=old.static)])  # fmt: skip
    delta = zones.history[ORIGIN][-1]
    assert isinstance(delta, Delta)
    assert delta.names == {f"m1.{ORIGIN}"}  # the difference, not a copy of the zone
    assert [rs.values for rs in delta.added] == [("192.0.2.2",)]
    carried = table.carried(zones.snapshot, frozenset({(b"m1", b"example", b"test")}))
    # m2 and s0 answer from their own records: kept; m1 changed; NXDOMAIN and SOA carry the
    # serial, and alias's answer is m1's: dropped
    assert len(carried) == 2
    reply = carried.answer(query(f"m1.{ORIGIN}", "A"), tcp=False)
    assert reply is not None
    assert b"\xc0\x00\x02\x02" in reply  # 192.0.2.2
    soa_reply = carried.answer(query(ORIGIN, "SOA"), tcp=False)
    assert soa_reply is not None
    assert struct.pack("!I", 2) in soa_reply  # the new serial


def test_a_set_that_loses_a_value_keeps_the_records_of_the_others() -> None:
    """A failover drops one address of thousands of sets: the others' records are reused,
    not made again (the work of a publish is what changed)."""
    answers = {n: (["192.0.2.1", "192.0.2.2"], False) for n in MANAGED}
    zones = EmbeddedZones()
    zones.put([content(1, answers)])
    name = (b"m1", b"example", b"test")
    before = {tuple(rr.rdata.data): rr for rr in zones.snapshot.lookup(name, 1).answer}
    old = zones.contents[ORIGIN]
    answers[f"m1.{ORIGIN}"] = (["192.0.2.2", "192.0.2.3"], False)
    new = content(2, answers)
    zones.put([ZoneContent(ORIGIN, new.soa, managed=new.managed, static=old.static)])
    after = {tuple(rr.rdata.data): rr for rr in zones.snapshot.lookup(name, 1).answer}
    kept, came = (192, 0, 2, 2), (192, 0, 2, 3)
    assert set(after) == {kept, came}
    assert after[kept] is before[kept]  # the same record, not a new one
    assert came not in before
