"""The C hit path (`_mmsg.HitTable`, `_mmsg.UdpLoop`): byte for byte the full path's replies.

Every reply the UDP thread sends is either the C hit path's or, for a miss, the Python
path's; the property below runs random zones and queries through exactly that choice and
checks each reply against the full path (`wire.respond`) on a twin snapshot, weighted
rotations included (both must take the same turns).  The socket tests run the real UDP
thread: hits answered in C, a publish swapping the table, RRL sending everything to Python.
"""

from __future__ import annotations

import asyncio
import struct

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest
from conftest_server import ORIGIN, soa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_fast import ecs_option, wire_name

from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.server import DnsServer, ZoneSnapshot
from dnsfailover.server.fast import FastTable
from dnsfailover.server.rrl import RrlSettings
from dnsfailover.server.weighted import smooth_order
from dnsfailover.server.wire import respond

_mmsg = pytest.importorskip("dnsfailover.server._mmsg")

LABELS = ["www", "api", "mail", "a.b", "deep.a.b", "*.wild", "alias", "x"]
QNAMES = [ORIGIN, *(f"{n}.{ORIGIN}" for n in LABELS), f"any.wild.{ORIGIN}", f"nope.{ORIGIN}"]
QNAMES += ["elsewhere.invalid."]
QTYPES = [1, 28, 16, 15, 5, 6, 2, 255, 33]


@st.composite
def zones(draw: st.DrawFn) -> ZoneContent:
    """A zone of random sets over `LABELS`: addresses (some weighted), TXT, MX, a CNAME."""
    sets = [RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",))]
    sets.append(RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)))
    taken: set[tuple[str, str]] = set()
    for label in draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=6, unique=True)):
        name = f"{label}.{ORIGIN}"
        if label == "alias":
            target = draw(st.sampled_from([f"www.{ORIGIN}", f"nope.{ORIGIN}", "out.invalid."]))
            sets.append(RecordSet(name, "CNAME", 60, (target,)))
            continue
        for rtype in draw(st.lists(st.sampled_from(["A", "AAAA", "TXT", "MX"]), unique=True)):
            if (name, rtype) in taken:
                continue
            taken.add((name, rtype))
            count = draw(st.integers(1, 12 if rtype == "TXT" else 4))
            if rtype == "A":
                values = tuple(sorted({f"198.51.100.{i + 1}" for i in range(count)}))
            elif rtype == "AAAA":
                values = tuple(sorted({f"2001:db8::{i + 1:x}" for i in range(count)}))
            elif rtype == "TXT":
                size = draw(st.integers(1, 200))
                values = tuple(sorted({f'"{i}{"t" * size}"' for i in range(count)}))
            else:
                values = tuple(sorted({f"{10 * (i + 1)} mail.{ORIGIN}" for i in range(count)}))
            weights: tuple[int, ...] = ()
            if rtype in ("A", "AAAA") and len(values) > 1 and draw(st.booleans()):
                weights = tuple(draw(st.integers(1, 5)) for _ in values)
            sets.append(RecordSet(name, rtype, draw(st.sampled_from([30, 300])), values, weights))
    sets.sort(key=lambda r: (r.name, r.rtype))
    return ZoneContent(ORIGIN, soa(ORIGIN, 7), tuple(sets))


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    """A query of a random name, case, type, flags and EDNS (none, plain, DO, big or small
    payload, an ECS option)."""
    name = draw(st.sampled_from(QNAMES))
    case = draw(st.lists(st.booleans(), min_size=1, max_size=5))
    flags = draw(st.sampled_from([0, 0x0100, 0x0120, 0x0110, 0x0030, 0x0400]))
    edns = draw(st.sampled_from(["none", "plain", "do", "ecs"]))
    header = struct.pack("!6H", draw(st.integers(0, 0xFFFF)), flags, 1, 0, 0, edns != "none")
    body = wire_name(name, case) + struct.pack("!HH", draw(st.sampled_from(QTYPES)), 1)
    if edns == "none":
        return header + body
    payload = draw(st.sampled_from([512, 1000, 1232, 1400, 4096]))
    option = ecs_option(1, 24, 0, bytes([192, 0, 2])) if edns == "ecs" else b""
    z = 0x8000 if edns == "do" or (edns == "ecs" and draw(st.booleans())) else 0
    return header + body + struct.pack("!BHHBBHH", 0, 41, payload, 0, 0, z, len(option)) + option


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone=zones(),
    asked=st.lists(st.tuples(queries(), st.booleans()), min_size=1, max_size=8),
    repeat=st.integers(2, 5),
)
def test_the_c_hit_path_replies_exactly_as_the_full_path(
    zone: ZoneContent, asked: list[tuple[bytes, bool]], repeat: int
) -> None:
    served = ZoneSnapshot.build([zone])
    reference = ZoneSnapshot.build([zone])  # its own rotors: the same turns, if all is right
    table = FastTable(served, c_hits=True)
    hits = table.hits
    assert hits is not None
    for _ in range(repeat):
        for q, tcp in asked:
            # UDP as the UDP thread does: C first, Python for a miss; a TCP frame's `answer`
            # tries the TCP C table first itself
            reply = None if tcp else hits.reply(q)
            if reply is None:
                reply = table.answer(q, tcp=tcp)
            assert reply == respond(reference, q, tcp=tcp)


def test_common_queries_are_c_hits_once_learnt() -> None:
    """Plain, DO, large payload, ECS and 0x20-cased queries are answered by the C table;
    queries it must not answer (TC-sized, EDNS options other than ECS) are not."""
    zone = ZoneContent(
        ORIGIN,
        soa(ORIGIN, 3),
        (
            RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
            RecordSet(f"big.{ORIGIN}", "TXT", 300, tuple(f'"{i}{"x" * 200}"' for i in range(4))),
            RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)),
            RecordSet(f"www.{ORIGIN}", "A", 300, ("192.0.2.1", "192.0.2.2")),
        ),
    )
    snapshot = ZoneSnapshot.build([zone])
    table = FastTable(snapshot, c_hits=True)
    hits = table.hits
    assert hits is not None

    def make(name: str, qtype: int, opt: bytes = b"", upper: bool = False) -> bytes:
        header = struct.pack("!6H", 0x4242, 0x0100, 1, 0, 0, 1 if opt else 0)
        return header + wire_name(name, [upper]) + struct.pack("!HH", qtype, 1) + opt

    def opt(payload: int, do: bool, option: bytes = b"") -> bytes:
        return struct.pack("!BHHBBHH", 0, 41, payload, 0, 0, 0x8000 if do else 0, len(option))

    ecs = ecs_option(1, 24, 0, bytes([192, 0, 2]))
    cookie = b"\x00\x0a\x00\x08" + bytes(8)
    www, big = f"www.{ORIGIN}", f"big.{ORIGIN}"
    expected_hits = [
        make(www, 1),
        make(www, 1, opt(1232, False)),
        make(www, 1, opt(4096, True)),
        make(www, 28, opt(512, True)),  # NODATA: the SOA in authority
        make(f"nope.{ORIGIN}", 1, opt(1232, False)),  # NXDOMAIN
        make(www, 1, opt(1232, False, ecs) + ecs),
        make(big, 16, opt(4096, False)),  # > 512 bytes: the client takes the server's size
    ]
    for q in expected_hits:
        for _ in range(2):
            table.answer(q, tcp=False)
        assert hits.reply(q) == respond(snapshot, q, tcp=False), q
        upper = make(www, 1) if q == make(www, 1) else None
        if upper is not None:
            assert hits.reply(make(www, 1, upper=True)) == respond(
                snapshot, make(www, 1, upper=True), tcp=False
            )
    declined = [
        make(big, 16),  # over 512 bytes without EDNS: TC
        make(big, 16, opt(1000, False)),  # a payload the reply depends on
        make(www, 1, opt(1232, False, cookie) + cookie),
    ]
    for q in declined:
        for _ in range(2):
            table.answer(q, tcp=False)
        assert hits.reply(q) is None
    assert len(hits) == len(expected_hits) - 1  # the ECS query has the plain EDNS one's key


def test_weighted_answers_share_one_rotation_between_c_and_python() -> None:
    """A weighted set answers by smooth weighted round-robin whether C or Python answers:
    C hits and Python misses interleaved give exactly the rotation's order."""
    values, weights = ("192.0.2.1", "192.0.2.2", "192.0.2.3"), (5, 1, 2)
    zone = ZoneContent(
        ORIGIN,
        soa(ORIGIN, 1),
        (
            RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
            RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)),
            RecordSet(f"w.{ORIGIN}", "A", 30, values, weights),
        ),
    )
    table = FastTable(ZoneSnapshot.build([zone]), c_hits=True)
    hits = table.hits
    assert hits is not None
    plain = struct.pack("!6H", 1, 0, 1, 0, 0, 0) + wire_name(f"w.{ORIGIN}", [False])
    plain += struct.pack("!HH", 1, 1)
    seen: list[str] = []
    by_c = 0
    for turn in range(3 * sum(weights)):
        q = plain if turn % 3 else plain[:12] + plain[12:].upper()  # a new spelling: same key
        reply = hits.reply(q)
        by_c += reply is not None
        if reply is None:
            reply = table.answer(q, tcp=False)
        assert reply is not None
        seen.append(dns.message.from_wire(reply).answer[0][0].to_text())
    order = smooth_order(weights)
    assert seen == [values[order[i % len(order)]] for i in range(len(seen))]
    assert by_c >= len(seen) - 3  # all but the learning


async def _ask(server: DnsServer, name: str, qtype: str = "A") -> dns.message.Message:
    assert server.address is not None
    host, port = server.address
    query = dns.message.make_query(name, qtype)
    return await dns.asyncquery.udp(query, host, port=port, timeout=2)


def _zone(serial: int, www: str) -> ZoneContent:
    return ZoneContent(
        ORIGIN,
        soa(ORIGIN, serial),
        (
            RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
            RecordSet(f"mail.{ORIGIN}", "A", 300, ("192.0.2.25",)),
            RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)),
            RecordSet(f"www.{ORIGIN}", "A", 300, (www,)),
        ),
    )


def _c_answered(server: DnsServer) -> int:
    return sum(server.response_counts()[:16]) - sum(server.rcodes[:16])


async def test_the_udp_thread_answers_hits_in_c_and_a_publish_swaps_them() -> None:
    async with DnsServer(ZoneSnapshot.build([_zone(1, "192.0.2.1")]), port=0, udp_thread=True) as s:
        www = f"www.{ORIGIN}"
        for _ in range(5):
            assert (await _ask(s, www)).answer[0][0].to_text() == "192.0.2.1"
        assert _c_answered(s) >= 4  # the first taught the table
        await _ask(s, f"mail.{ORIGIN}")  # (learnt from its first query: a name the zone has)
        counted, c_before = s.response_counts()[0], _c_answered(s)
        for serial in range(2, 12):  # each publish changes www: never the old answer again
            address = f"192.0.2.{serial}"
            changed = frozenset({(b"www", b"example", b"test")})
            s.publish(
                s.snapshot.update([(_zone(serial - 1, "x"), _zone(serial, address))]), changed
            )
            for _ in range(4):
                assert (await _ask(s, www)).answer[0][0].to_text() == address
            assert (await _ask(s, f"mail.{ORIGIN}")).answer[0][0].to_text() == "192.0.2.25"
        assert s.response_counts()[0] == counted + 10 * 5  # every reply counted once
        # a changed name the zone has is learnt from its first query after the publish, and
        # the unchanged one stays a C hit across publishes: 4 of every 5 queries in C
        assert _c_answered(s) - c_before >= 10 * 4


async def test_with_rrl_every_datagram_is_answered_and_limited_by_python() -> None:
    rrl = RrlSettings(responses_per_second=5, slip=0)
    snapshot = ZoneSnapshot.build([_zone(1, "192.0.2.1")])
    async with DnsServer(snapshot, port=0, udp_thread=True, rrl=rrl) as s:
        answered = 0
        for _ in range(40):
            try:
                await _ask(s, f"www.{ORIGIN}")
                answered += 1
            except dns.exception.Timeout:
                pass
        assert _c_answered(s) == 0
        assert answered < 40  # limited: the C path would have answered every one
        assert s.rcodes[16] > 0


async def test_garbage_and_misses_are_answered_by_python_while_hits_go_on() -> None:
    snapshot = ZoneSnapshot.build([_zone(1, "192.0.2.1")])
    async with DnsServer(snapshot, port=0, udp_thread=True) as s:
        assert s.address is not None
        for _ in range(3):
            await _ask(s, f"www.{ORIGIN}")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=s.address
        )
        try:
            for junk in (b"", b"\x00", b"\xff" * 12, b"\x12\x34" + b"\x01\x00" + bytes(300)):
                transport.sendto(junk)
        finally:
            transport.close()
        reply = await _ask(s, f"nope.{ORIGIN}")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert (await _ask(s, f"www.{ORIGIN}")).answer[0][0].to_text() == "192.0.2.1"


def test_tables_are_freed_and_rebuilt_without_leaking_entries() -> None:
    """carried() shares entries; clear() and garbage collection of old tables free them (a
    table dropped while another holds its entries leaves them intact)."""
    zone = _zone(1, "192.0.2.1")
    snapshot = ZoneSnapshot.build([zone])
    table = FastTable(snapshot, c_hits=True)
    q = struct.pack("!6H", 9, 0, 1, 0, 0, 0) + wire_name(f"mail.{ORIGIN}", [False])
    q += struct.pack("!HH", 1, 1)
    for _ in range(2):
        table.answer(q, tcp=False)
    first = table.hits
    assert first is not None
    assert first.reply(q) is not None
    later = table.carried(snapshot, frozenset({(b"www", b"example", b"test")}))
    dropped = table.carried(snapshot, frozenset({(b"mail", b"example", b"test")}))
    del table, first  # the first table is freed; its entry lives on in `later`
    assert later.hits is not None
    assert dropped.hits is not None
    assert later.hits.reply(q) == respond(snapshot, q, tcp=False)
    assert dropped.hits.reply(q) is None  # mail changed there: its reply is not carried
    later.hits.clear()
    assert later.hits.reply(q) is None
    assert len(later.hits) == 0


def test_tcp_frames_are_answered_from_the_c_table_once_learnt() -> None:
    """Over TCP the reply has no 512-byte rule and no payload-size variant: a big answer and
    an ECS echo past 512 bytes are C hits too, equal to the full path's."""
    zone = ZoneContent(
        ORIGIN,
        soa(ORIGIN, 3),
        (
            RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
            RecordSet(f"big.{ORIGIN}", "TXT", 300, tuple(f'"{i}{"x" * 200}"' for i in range(9))),
            RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)),
        ),
    )
    snapshot = ZoneSnapshot.build([zone])
    table = FastTable(snapshot, c_hits=True)
    header = struct.pack("!6H", 0x4242, 0x0100, 1, 0, 0, 1)
    ecs = ecs_option(1, 24, 0, bytes([192, 0, 2]))
    for payload, option in ((512, b""), (4096, b""), (1232, ecs)):
        opt = struct.pack("!BHHBBHH", 0, 41, payload, 0, 0, 0, len(option)) + option
        q = header + wire_name(f"big.{ORIGIN}", [True]) + struct.pack("!HH", 16, 1) + opt
        full = respond(snapshot, q, tcp=True)
        assert full is not None
        assert len(full) > 1232
        for _ in range(2):
            assert table.answer(q, tcp=True) == full
        tcp_hits = table._hits[1] if table._hits is not None else None
        assert tcp_hits is not None
        assert tcp_hits.reply(q) == full


async def test_without_c_hits_every_datagram_is_answered_by_python() -> None:
    """`c_hits=False` (serve's DNSFAILOVER_UDP=python): the same batched UDP thread, every
    reply from the Python paths."""
    snapshot = ZoneSnapshot.build([_zone(1, "192.0.2.1")])
    async with DnsServer(snapshot, port=0, udp_thread=True, c_hits=False) as s:
        for _ in range(5):
            assert (await _ask(s, f"www.{ORIGIN}")).answer[0][0].to_text() == "192.0.2.1"
        assert _c_answered(s) == 0
        assert s.rcodes[0] == 5
