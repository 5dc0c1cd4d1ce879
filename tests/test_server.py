"""The embedded authoritative server, queried with dnspython over real UDP and TCP sockets."""

from __future__ import annotations

import asyncio
import random
import struct
import threading
import time
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.update
import pytest
from conftest_server import (
    BIG_COUNT,
    HUGE_COUNT,
    ORIGIN,
    SUB,
    example_snapshot,
    frame,
    raw_query,
    raw_tcp,
    raw_udp,
    zone,
)

from dnsfailover.server import DnsServer, ZoneSnapshot

HOST = "127.0.0.1"


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    srv = DnsServer(example_snapshot(), port=0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def port_of(srv: DnsServer) -> int:
    assert srv.address is not None
    return srv.address[1]


async def send(
    srv: DnsServer, query: dns.message.Message, *, tcp: bool = False
) -> dns.message.Message:
    if tcp:
        return await dns.asyncquery.tcp(query, HOST, port=port_of(srv), timeout=2)
    return await dns.asyncquery.udp(query, HOST, port=port_of(srv), timeout=2)


async def ask(
    srv: DnsServer,
    name: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    edns: int = 0,
    payload: int = 1232,
    rdclass: str = "IN",
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, rdclass, use_edns=edns, payload=payload)
    return await send(srv, query, tcp=tcp)


def texts(reply: dns.message.Message, section: str = "answer") -> list[str]:
    """Each RRset of a section as 'name ttl class type rdata' lines, sorted."""
    rrsets: list[dns.rrset.RRset] = getattr(reply, section)
    return sorted(line for rrset in rrsets for line in rrset.to_text().splitlines())


def soa_serial(reply: dns.message.Message) -> int:
    (rrset,) = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]
    return int(rrset[0].serial)


# --- authority and basic answers ----------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True])
async def test_answer_is_authoritative_without_recursion(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, f"www.{ORIGIN}", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.RD  # copied from the query
    assert not reply.flags & dns.flags.RA
    assert texts(reply) == [f"www.{ORIGIN} 300 IN A 192.0.2.1"]


async def test_rd_clear_is_copied(server: DnsServer) -> None:
    query = dns.message.make_query(f"www.{ORIGIN}", "A")
    query.flags &= ~dns.flags.RD
    reply = await send(server, query)
    assert not reply.flags & (dns.flags.RD | dns.flags.RA)


@pytest.mark.parametrize("name", ["www.elsewhere.invalid.", "test.", "."])
async def test_names_outside_our_zones_are_refused(server: DnsServer, name: str) -> None:
    reply = await ask(server, name)
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA
    assert reply.answer == []
    assert reply.authority == []


async def test_most_specific_zone_wins(server: DnsServer) -> None:
    reply = await ask(server, f"host.{SUB}")
    assert texts(reply) == [f"host.{SUB} 300 IN A 198.51.100.1"]
    missing = await ask(server, f"nothing.{SUB}")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert soa_serial(missing) == 50  # the child's SOA, not the parent's


async def test_soa_and_ns_at_apex(server: DnsServer) -> None:
    reply = await ask(server, ORIGIN, "SOA")
    assert texts(reply) == [
        f"{ORIGIN} 3600 IN SOA ns1.{ORIGIN} hostmaster.{ORIGIN} 1 7200 900 1209600 300"
    ]
    ns = await ask(server, ORIGIN, "NS")
    assert texts(ns) == [f"{ORIGIN} 300 IN NS ns1.{ORIGIN}", f"{ORIGIN} 300 IN NS ns2.{ORIGIN}"]


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        (f"www.{ORIGIN}", "AAAA", "2001:db8::1"),
        (ORIGIN, "MX", f"10 mail.{ORIGIN}"),
        (ORIGIN, "TXT", '"v=spf1 -all"'),
        (f"a.b.{ORIGIN}", "TXT", '"hello world"'),
        (ORIGIN, "CAA", '0 issue "letsencrypt.org"'),
        (f"_sip._udp.{ORIGIN}", "SRV", f"0 5 5060 sip.{ORIGIN}"),
        ("1.2.0.192.in-addr.arpa.", "PTR", f"www.{ORIGIN}"),
    ],
)
async def test_static_record_types(
    server: DnsServer, name: str, rdtype: str, expected: str
) -> None:
    reply = await ask(server, name, rdtype)
    assert texts(reply) == [f"{name} 300 IN {rdtype} {expected}"]


# --- negative answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode"),
    [
        (f"nope.{ORIGIN}", "A", dns.rcode.NXDOMAIN),
        (f"deep.nope.{ORIGIN}", "AAAA", dns.rcode.NXDOMAIN),
        (f"www.{ORIGIN}", "MX", dns.rcode.NOERROR),  # NODATA
        (f"b.{ORIGIN}", "A", dns.rcode.NOERROR),  # empty non-terminal
        (f"drained.{ORIGIN}", "A", dns.rcode.NOERROR),  # a record set with no values
        (f"drained.{ORIGIN}", "ANY", dns.rcode.NOERROR),
        (f"b.{ORIGIN}", "TXT", dns.rcode.NOERROR),
        (f"www.{ORIGIN}", "SOA", dns.rcode.NOERROR),  # SOA only at the apex
        (f"www.{ORIGIN}", "TYPE666", dns.rcode.NOERROR),  # unknown type
    ],
)
async def test_negative_answers_carry_soa(
    server: DnsServer, name: str, rdtype: str, rcode: dns.rcode.Rcode
) -> None:
    reply = await ask(server, name, rdtype)
    assert reply.rcode() == rcode
    assert reply.flags & dns.flags.AA
    assert reply.answer == []
    # TTL = min(SOA ttl 3600, SOA minimum 300)
    assert texts(reply, "authority") == [
        f"{ORIGIN} 300 IN SOA ns1.{ORIGIN} hostmaster.{ORIGIN} 1 7200 900 1209600 300"
    ]


# --- CNAME --------------------------------------------------------------------------------


async def test_cname_chain_is_followed_in_zone(server: DnsServer) -> None:
    reply = await ask(server, f"chain1.{ORIGIN}", "A")
    assert [(r.name.to_text(), r.rdtype) for r in reply.answer] == [
        (f"chain1.{ORIGIN}", dns.rdatatype.CNAME),
        (f"chain2.{ORIGIN}", dns.rdatatype.CNAME),
        (f"alias.{ORIGIN}", dns.rdatatype.CNAME),
        (f"www.{ORIGIN}", dns.rdatatype.A),
    ]


async def test_cname_query_returns_only_the_cname(server: DnsServer) -> None:
    reply = await ask(server, f"alias.{ORIGIN}", "CNAME")
    assert texts(reply) == [f"alias.{ORIGIN} 300 IN CNAME www.{ORIGIN}"]


@pytest.mark.parametrize(
    ("name", "rcode", "answers", "soa"),
    [
        (f"loop1.{ORIGIN}", dns.rcode.NOERROR, 2, False),  # loop: stop, no crash
        (f"external.{ORIGIN}", dns.rcode.NOERROR, 1, False),  # target not ours
        (f"dangling.{ORIGIN}", dns.rcode.NXDOMAIN, 1, True),  # RFC 6604: last name's rcode
        (f"alias.{ORIGIN}", dns.rcode.NOERROR, 1, True),  # target has no MX: NODATA
    ],
)
async def test_cname_edges(
    server: DnsServer, name: str, rcode: dns.rcode.Rcode, answers: int, soa: bool
) -> None:
    reply = await ask(server, name, "MX" if name.startswith("alias") else "A")
    assert reply.rcode() == rcode
    assert len(reply.answer) == answers
    assert all(r.rdtype == dns.rdatatype.CNAME for r in reply.answer)
    assert bool(reply.authority) is soa


async def test_any_gets_one_rrset(server: DnsServer) -> None:
    reply = await ask(server, f"www.{ORIGIN}", "ANY")
    assert texts(reply) == [f"www.{ORIGIN} 300 IN A 192.0.2.1"]
    assert (await ask(server, f"alias.{ORIGIN}", "ANY")).answer[0].rdtype == dns.rdatatype.CNAME
    assert (await ask(server, f"nope.{ORIGIN}", "ANY")).rcode() == dns.rcode.NXDOMAIN


# --- EDNS and truncation ------------------------------------------------------------------


async def test_edns_reply_only_when_asked(server: DnsServer) -> None:
    with_opt = await ask(server, f"www.{ORIGIN}")
    assert with_opt.edns == 0
    assert with_opt.payload == 1232
    without = await ask(server, f"www.{ORIGIN}", edns=-1)
    assert without.edns == -1


async def test_edns_version_above_zero_is_badvers(server: DnsServer) -> None:
    reply = await ask(server, f"www.{ORIGIN}", edns=1)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert reply.answer == []


@pytest.mark.parametrize(
    ("name", "edns", "payload", "count"),
    [
        (f"big.{ORIGIN}", -1, 0, BIG_COUNT),  # no OPT: 512
        (f"big.{ORIGIN}", 0, 512, BIG_COUNT),
        (f"big.{ORIGIN}", 0, 100, BIG_COUNT),  # below 512 counts as 512
        (f"huge.{ORIGIN}", 0, 4096, HUGE_COUNT),  # more than we send over UDP (1232)
    ],
)
async def test_too_big_for_udp_is_truncated_and_complete_over_tcp(
    server: DnsServer, name: str, edns: int, payload: int, count: int
) -> None:
    reply = await ask(server, name, edns=edns, payload=payload)
    assert reply.flags & dns.flags.TC
    assert reply.answer == []
    assert reply.authority == []
    assert reply.question[0].name == dns.name.from_text(name)
    assert reply.edns == edns
    full = await ask(server, name, tcp=True, edns=edns, payload=payload)
    assert not full.flags & dns.flags.TC
    assert len(full.answer[0]) == count


async def test_payload_size_is_honoured(server: DnsServer) -> None:
    reply = await ask(server, f"big.{ORIGIN}", payload=1232)
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer[0]) == BIG_COUNT


# --- odd queries --------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY])
async def test_unknown_opcode_is_notimp(server: DnsServer, opcode: dns.opcode.Opcode) -> None:
    query = dns.message.make_query(f"www.{ORIGIN}", "A")
    query.set_opcode(opcode)
    reply = await send(server, query)
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.id == query.id
    assert reply.opcode() == opcode
    assert reply.question == query.question


async def test_update_is_notimp(server: DnsServer) -> None:
    update = dns.update.UpdateMessage(ORIGIN)
    update.delete("www")  # an empty-rdata RR, which dnslib cannot parse as a query body
    reply = await send(server, update, tcp=True)
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.id == update.id


@pytest.mark.parametrize("qdcount", [0, 2])
async def test_qdcount_other_than_one_is_formerr(server: DnsServer, qdcount: int) -> None:
    (wire,) = await raw_udp(port_of(server), [raw_query(qid=4242, qdcount=qdcount)])
    reply = dns.message.from_wire(wire)
    assert reply.id == 4242
    assert reply.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("rdclass", ["CH", "HS", "ANY"])
async def test_classes_other_than_in_are_refused(server: DnsServer, rdclass: str) -> None:
    reply = await ask(server, f"www.{ORIGIN}", rdclass=rdclass)
    assert reply.rcode() == dns.rcode.REFUSED
    assert reply.answer == []


async def test_responses_are_ignored(server: DnsServer) -> None:
    assert await raw_udp(port_of(server), [raw_query(flags=0x8100)], wait=0.2) == []


async def test_question_case_is_preserved(server: DnsServer) -> None:
    mixed = "wWw.ExAmPlE.tEsT."
    reply = await ask(server, mixed)
    assert reply.question[0].name.to_text() == mixed
    # Names are compressed caselessly (as BIND does), so the owner points at the question
    # and reads in its spelling: the same name, compared without case.
    assert texts(reply) == [f"{mixed} 300 IN A 192.0.2.1"]


async def test_header_then_garbage_is_formerr_with_id(server: DnsServer) -> None:
    packet = struct.pack("!6H", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x07exa"
    (wire,) = await raw_udp(port_of(server), [packet])
    reply = dns.message.from_wire(wire)
    assert reply.id == 0xBEEF
    assert reply.rcode() == dns.rcode.FORMERR


def pointer_chain(n: int) -> bytes:
    """A name behind ``n`` backward pointers: legal hops, but dnslib recurses once per hop."""
    head = struct.pack("!6H", 9, 0x0100, 1, 0, 0, 2) + b"\x01a\x00\x00\x01\x00\x01"
    rr1 = b"\x00" + struct.pack("!HHIH", 65280, 1, 0, 2 * n)  # opaque rdata holds the chain
    base = len(head) + len(rr1)
    hops = [0xC000 | 12] + [0xC000 | (base + 2 * (k - 1)) for k in range(1, n)]
    rr2 = struct.pack("!HHHIH", 0xC000 | (base + 2 * (n - 1)), 1, 1, 0, 4) + b"\x01\x02\x03\x04"
    return head + rr1 + struct.pack(f"!{n}H", *hops) + rr2


def garbage() -> list[bytes]:
    rng = random.Random(1234)
    valid = raw_query()
    header = struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0)
    caa = b"\x00\x05issue\xff\xfe"
    packets = [rng.randbytes(rng.randrange(0, 600)) for _ in range(200)]
    packets += [valid[:n] for n in range(len(valid))]  # every truncation
    packets += [
        header + b"\x01a" * 5000 + b"\x00\x00\x01\x00\x01",  # huge label count
        header + b"\xc0\x0c\x00\x01\x00\x01",  # pointer to itself
        header + b"\x01a\xc0\x0e\x00\x01\x00\x01",  # pointer forwards
        pointer_chain(3000),
        header + b"\x3fa" + b"\x00\x01\x00\x01",  # label shorter than its length
        header + b"\x80" + b"a" * 128 + b"\x00\x00\x01\x00\x01",  # reserved label type
        header + b"\x02\xff\xfe\x00\x00\x01\x00\x01",  # non-UTF-8 label
        # dnslib raises UnicodeDecodeError, not DNSError, on a non-UTF-8 CAA value
        struct.pack("!6H", 8, 0x0100, 1, 0, 0, 1)
        + valid[12:]
        + b"\x00"
        + struct.pack("!HHIH", 257, 1, 0, len(caa))
        + caa,
    ]
    return packets


async def test_garbage_never_stops_the_server(server: DnsServer) -> None:
    port = port_of(server)
    await raw_udp(port, garbage(), wait=0.2)
    # TCP: garbage frames, then a length prefix longer than what follows, then close.
    for packet in garbage()[:50]:
        _, writer = await asyncio.open_connection(HOST, port)
        writer.write(frame(packet) + b"\xff\xff" + packet[:10])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    (wire,) = await raw_tcp(port, frame(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff"), 1)
    assert dns.message.from_wire(wire).rcode() == dns.rcode.FORMERR
    for tcp in (False, True):
        reply = await ask(server, f"www.{ORIGIN}", tcp=tcp)
        assert texts(reply) == [f"www.{ORIGIN} 300 IN A 192.0.2.1"]


# --- TCP connections ----------------------------------------------------------------------


async def test_several_queries_per_tcp_connection(server: DnsServer) -> None:
    queries = [dns.message.make_query(f"{n}.{ORIGIN}", "A") for n in ("www", "mail", "ns1")]
    wires = await raw_tcp(port_of(server), b"".join(frame(q.to_wire()) for q in queries), 3)
    replies = [dns.message.from_wire(w) for w in wires]
    assert [r.id for r in replies] == [q.id for q in queries]
    assert [r.answer[0][0].to_text() for r in replies] == ["192.0.2.1", "192.0.2.25", "192.0.2.53"]


async def test_tcp_idle_timeout_and_connection_limit() -> None:
    srv = DnsServer(example_snapshot(), port=0, tcp_idle_timeout=0.2, max_tcp_connections=1)
    _, port = await srv.start()
    try:
        first_reader, first_writer = await asyncio.open_connection(HOST, port)
        await asyncio.sleep(0.05)  # let the server accept it
        second_reader, second_writer = await asyncio.open_connection(HOST, port)
        assert await asyncio.wait_for(second_reader.read(), 1) == b""  # over the limit
        assert await asyncio.wait_for(first_reader.read(), 1) == b""  # idled out
        for writer in (first_writer, second_writer):
            writer.close()
            await writer.wait_closed()
    finally:
        await srv.stop()


async def test_stop_closes_open_tcp_connections() -> None:
    srv = DnsServer(example_snapshot(), port=0)
    _, port = await srv.start()
    reader, writer = await asyncio.open_connection(HOST, port)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(srv.stop(), 2)
    assert await asyncio.wait_for(reader.read(), 1) == b""
    writer.close()
    await writer.wait_closed()
    assert srv.address is None


async def test_port_zero_binds_udp_and_tcp_on_one_port() -> None:
    async with DnsServer(example_snapshot(), port=0) as srv:
        assert srv.address is not None
        host, port = srv.address
        assert host == HOST
        assert port > 0
        assert (await ask(srv, f"www.{ORIGIN}")).answer
        assert (await ask(srv, f"www.{ORIGIN}", tcp=True)).answer


# --- publish ------------------------------------------------------------------------------


async def test_publish_serves_new_answer_and_serial(server: DnsServer) -> None:
    server.publish(example_snapshot(serial=2, www="192.0.2.99"))
    assert server.snapshot.serial(ORIGIN) == 2
    reply = await ask(server, f"www.{ORIGIN}")
    assert texts(reply) == [f"www.{ORIGIN} 300 IN A 192.0.2.99"]
    soa = await ask(server, ORIGIN, "SOA")
    assert soa.answer[0][0].serial == 2


def _swap_snapshot(serial: int) -> ZoneSnapshot:
    # The answer names the serial: a reply mixing snapshots would show two different ones.
    return ZoneSnapshot.build(
        [
            zone(
                ORIGIN,
                serial,
                [("@", "NS", [f"ns1.{ORIGIN}"]), ("probe", "CNAME", [f"gone-{serial}.{ORIGIN}"])],
            )
        ]
    )


async def test_queries_during_swaps_never_see_a_mix() -> None:
    snapshots = [_swap_snapshot(10), _swap_snapshot(11)]
    stop = threading.Event()

    def publisher(srv: DnsServer) -> None:
        i = 0
        while not stop.is_set():
            srv.publish(snapshots[i % 2])
            i += 1
            time.sleep(0)

    async with DnsServer(snapshots[0], port=0) as srv:
        thread = threading.Thread(target=publisher, args=(srv,))
        thread.start()
        seen: set[int] = set()
        try:
            deadline = time.monotonic() + 0.8
            while time.monotonic() < deadline:
                replies = await asyncio.gather(
                    *(ask(srv, f"probe.{ORIGIN}", tcp=i % 4 == 0) for i in range(16))
                )
                for reply in replies:
                    serial = soa_serial(reply)
                    assert reply.answer[0][0].target.to_text() == f"gone-{serial}.{ORIGIN}"
                    seen.add(serial)
        finally:
            stop.set()
            thread.join()
    assert seen == {10, 11}


async def test_a_port_in_use_fails_start(server: DnsServer) -> None:
    other = DnsServer(example_snapshot(), port=port_of(server))
    with pytest.raises(OSError, match="in use"):
        await other.start()
    assert other.address is None
