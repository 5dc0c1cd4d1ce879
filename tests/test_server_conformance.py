"""Protocol conformance of the embedded server (RFC 1034/1035/2181/3225/4592/6891/8482/8906).

Each case runs against the real server over UDP and over TCP, queried with dnspython.
Choices where the RFCs leave room, as BIND/NSD make them:

- UPDATE and NOTIFY get NOTIMP: the server is a primary that accepts neither.
- Classes other than IN get REFUSED.
- DNSSEC is not served: DO=1 queries get unsigned answers, with DO copied (RFC 3225 §3).
- Messages refused before parsing (QDCOUNT > 1, records in answer/authority, more than two
  additional records) get a header-only FORMERR, without OPT.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.update
import pytest
from conftest_server import (
    HUGE_COUNT,
    ORIGIN,
    WILD,
    example_zone,
    frame,
    raw_query,
    raw_tcp,
    raw_udp,
    reverse_zone,
    sub_zone,
    wild_zone,
    zone,
)

from dnsfailover.config.load import loads
from dnsfailover.engine.decide import build_zone
from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.server import DnsServer, ZoneSnapshot

HOST = "127.0.0.1"
NEGATIVE_SOA = f"{WILD} 300 IN SOA ns1.{WILD} hostmaster.{WILD} 3 7200 900 1209600 300"
_Z = 0x0040  # the header's reserved bit

pytestmark = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    snapshot = ZoneSnapshot.build([example_zone(), sub_zone(), reverse_zone(), wild_zone()])
    srv = DnsServer(snapshot, port=0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def port_of(srv: DnsServer) -> int:
    assert srv.address is not None
    return srv.address[1]


async def send(srv: DnsServer, query: dns.message.Message, tcp: bool) -> dns.message.Message:
    if tcp:
        return await dns.asyncquery.tcp(query, HOST, port=port_of(srv), timeout=2)
    return await dns.asyncquery.udp(query, HOST, port=port_of(srv), timeout=2)


async def ask(
    srv: DnsServer, name: str, rdtype: str, tcp: bool, **kwargs: object
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    return await send(srv, query, tcp)


async def raw_wire(srv: DnsServer, packet: bytes, tcp: bool) -> bytes:
    if tcp:
        (wire,) = await raw_tcp(port_of(srv), frame(packet), 1)
    else:
        (wire,) = await raw_udp(port_of(srv), [packet])
    return wire


async def raw(srv: DnsServer, packet: bytes, tcp: bool) -> dns.message.Message:
    return dns.message.from_wire(await raw_wire(srv, packet, tcp))


def texts(reply: dns.message.Message, section: str = "answer") -> list[str]:
    rrsets: list[dns.rrset.RRset] = getattr(reply, section)
    return sorted(line for rrset in rrsets for line in rrset.to_text().splitlines())


# --- header -------------------------------------------------------------------------------


async def test_header_bits(server: DnsServer, tcp: bool) -> None:
    query = dns.message.make_query(f"host.{WILD}", "A")
    query.flags |= dns.flags.AD | dns.flags.CD | _Z
    reply = await send(server, query, tcp)
    assert reply.flags & (dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.CD)
    assert not reply.flags & (dns.flags.RA | dns.flags.AD | dns.flags.TC | _Z)
    query.flags &= ~dns.flags.RD
    assert not (await send(server, query, tcp)).flags & dns.flags.RD


# --- opcodes, question count, class -------------------------------------------------------


@pytest.mark.parametrize(
    "opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.Opcode(3)]
)
async def test_other_opcodes_are_notimp_with_opt(
    server: DnsServer, tcp: bool, opcode: dns.opcode.Opcode
) -> None:
    query = dns.message.make_query(ORIGIN, "SOA", use_edns=0)
    query.set_opcode(opcode)
    reply = await send(server, query, tcp)
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.opcode() == opcode
    assert reply.edns == 0
    assert not reply.flags & dns.flags.AA


async def test_update_is_notimp_with_opt(server: DnsServer, tcp: bool) -> None:
    update = dns.update.UpdateMessage(ORIGIN)
    update.use_edns(0)
    update.delete("www")  # an empty-rdata RR: the OPT after it is still found
    reply = await send(server, update, tcp)
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.edns == 0


@pytest.mark.parametrize("qdcount", [0, 2])
async def test_qdcount_other_than_one_is_formerr(
    server: DnsServer, tcp: bool, qdcount: int
) -> None:
    reply = await raw(server, raw_query(qid=77, qdcount=qdcount), tcp)
    assert (reply.id, reply.rcode()) == (77, dns.rcode.FORMERR)


async def test_no_question_with_opt_is_formerr_with_opt(server: DnsServer, tcp: bool) -> None:
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    packet = struct.pack("!6H", 78, 0, 0, 0, 0, 1) + opt
    reply = await raw(server, packet, tcp)
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0


@pytest.mark.parametrize("rdclass", ["CH", "HS", "NONE", "ANY", "CLASS42"])
async def test_other_classes_are_refused_with_opt(
    server: DnsServer, tcp: bool, rdclass: str
) -> None:
    reply = await ask(server, f"host.{WILD}", "A", tcp, rdclass=rdclass, use_edns=0)
    assert reply.rcode() == dns.rcode.REFUSED
    assert reply.edns == 0
    assert reply.answer == []


async def test_names_outside_the_zones_are_refused_with_opt(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, "www.example.invalid.", "A", tcp, use_edns=0)
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA
    assert reply.edns == 0


# --- EDNS ---------------------------------------------------------------------------------


async def test_do_bit_is_copied_and_answer_is_unsigned(server: DnsServer, tcp: bool) -> None:
    signed = await ask(server, f"host.{WILD}", "A", tcp, want_dnssec=True)
    assert signed.ednsflags & dns.flags.DO
    assert texts(signed) == [f"host.{WILD} 300 IN A 192.0.2.10"]
    assert not signed.flags & dns.flags.AD
    plain = await ask(server, f"host.{WILD}", "A", tcp, use_edns=0)
    assert not plain.ednsflags & dns.flags.DO


async def test_unknown_options_and_flags_are_ignored_not_echoed(
    server: DnsServer, tcp: bool
) -> None:
    options = [
        dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"\x01\x02"),
        dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"x" * 8),
    ]
    reply = await ask(
        server, f"host.{WILD}", "A", tcp, use_edns=0, ednsflags=0x4000, options=options
    )
    assert reply.rcode() == dns.rcode.NOERROR
    assert texts(reply) == [f"host.{WILD} 300 IN A 192.0.2.10"]
    assert not reply.options
    assert reply.ednsflags == 0


async def test_badvers_answers_version_zero(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, f"host.{WILD}", "A", tcp, use_edns=3, want_dnssec=True)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert reply.ednsflags & dns.flags.DO
    assert reply.answer == []


OPT_RR = struct.pack("!HHIH", 41, 1232, 0, 0)


@pytest.mark.parametrize(
    "additional",
    [b"\x00" + OPT_RR + b"\x00" + OPT_RR, b"\x01a\x00" + OPT_RR],
    ids=["two-opt", "opt-not-at-root"],
)
async def test_bad_opt_is_formerr_with_opt(server: DnsServer, tcp: bool, additional: bytes) -> None:
    arcount = additional.count(OPT_RR)
    packet = raw_query(qid=79)[:10] + struct.pack("!H", arcount) + raw_query()[12:] + additional
    reply = await raw(server, packet, tcp)
    assert (reply.id, reply.rcode()) == (79, dns.rcode.FORMERR)
    assert reply.edns == 0


async def test_truncation_then_tcp_retry(server: DnsServer, tcp: bool) -> None:
    query = dns.message.make_query(f"huge.{ORIGIN}", "A", use_edns=0, payload=4096)
    if tcp:
        reply = await send(server, query, tcp)
        assert not reply.flags & dns.flags.TC
    else:
        truncated = await send(server, query, tcp)
        assert truncated.flags & dns.flags.TC
        assert truncated.edns == 0
        reply, used_tcp = await dns.asyncquery.udp_with_fallback(
            query, HOST, port=port_of(server), timeout=2
        )
        assert used_tcp
    assert len(reply.answer[0]) == HUGE_COUNT


# --- negative answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode"),
    [
        (f"host.{WILD}", "MX", dns.rcode.NOERROR),  # exists with other types: no wildcard
        (f"host.{WILD}", "TYPE666", dns.rcode.NOERROR),
        (f"ent.{WILD}", "A", dns.rcode.NOERROR),  # empty non-terminal
        (f"alias.{WILD}", "A", dns.rcode.NOERROR),  # empty non-terminal above a wildcard
        (f"x.ent.{WILD}", "A", dns.rcode.NXDOMAIN),  # the ENT blocks *.wild.test.
        (f"x.host.{WILD}", "A", dns.rcode.NXDOMAIN),  # closest encloser host has no *
        (f"any.{WILD}", "MX", dns.rcode.NOERROR),  # wildcard matches, no MX there
        (f"x.drained.{WILD}", "A", dns.rcode.NOERROR),  # wildcard with no values
        (f"x.*.{WILD}", "A", dns.rcode.NXDOMAIN),  # *.*.wild.test. does not exist
        (f"sub.{WILD}", "DS", dns.rcode.NOERROR),  # DS at a cut is the parent's: none
    ],
)
async def test_negative_answers(
    server: DnsServer, tcp: bool, name: str, rdtype: str, rcode: dns.rcode.Rcode
) -> None:
    reply = await ask(server, name, rdtype, tcp)
    assert reply.rcode() == rcode
    assert reply.flags & dns.flags.AA
    assert reply.answer == []
    assert texts(reply, "authority") == [NEGATIVE_SOA]


# --- wildcards (RFC 4592) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        (f"nothing.{WILD}", "A", [f"nothing.{WILD} 300 IN A 192.0.2.100"]),
        (f"a.b.c.{WILD}", "A", [f"a.b.c.{WILD} 300 IN A 192.0.2.100"]),
        (f"nothing.{WILD}", "TXT", [f'nothing.{WILD} 300 IN TXT "wild"']),
        (f"nothing.{WILD}", "ANY", [f"nothing.{WILD} 300 IN A 192.0.2.100"]),
        (f"*.{WILD}", "A", [f"*.{WILD} 300 IN A 192.0.2.100"]),  # asked for directly
        (f"host.{WILD}", "A", [f"host.{WILD} 300 IN A 192.0.2.10"]),  # exists: no wildcard
        (
            f"x.alias.{WILD}",
            "A",
            [f"host.{WILD} 300 IN A 192.0.2.10", f"x.alias.{WILD} 300 IN CNAME host.{WILD}"],
        ),
        (f"x.alias.{WILD}", "CNAME", [f"x.alias.{WILD} 300 IN CNAME host.{WILD}"]),
        (
            f"y.loop.{WILD}",
            "A",
            [
                f"x.loop.{WILD} 300 IN CNAME x.loop.{WILD}",
                f"y.loop.{WILD} 300 IN CNAME x.loop.{WILD}",
            ],
        ),
    ],
)
async def test_wildcards(
    server: DnsServer, tcp: bool, name: str, rdtype: str, expected: list[str]
) -> None:
    reply = await ask(server, name, rdtype, tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert texts(reply) == expected


async def test_wildcard_answer_keeps_question_case(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, f"MiXeD.{WILD.upper()}", "A", tcp)
    assert reply.question[0].name.to_text() == f"MiXeD.{WILD.upper()}"
    assert texts(reply) == [f"MiXeD.{WILD.upper()} 300 IN A 192.0.2.100"]  # owner → question


# --- delegations --------------------------------------------------------------------------

REFERRAL_NS = [f"sub.{WILD} 300 IN NS ns.elsewhere.invalid.", f"sub.{WILD} 300 IN NS ns.sub.{WILD}"]
GLUE = [f"ns.sub.{WILD} 300 IN A 192.0.2.54", f"ns.sub.{WILD} 300 IN AAAA 2001:db8::54"]


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        (f"sub.{WILD}", "A"),
        (f"sub.{WILD}", "NS"),
        (f"sub.{WILD}", "ANY"),
        (f"www.sub.{WILD}", "A"),  # configured but occluded
        (f"ns.sub.{WILD}", "A"),  # glue is not an answer
        (f"x.deeper.sub.{WILD}", "A"),  # a cut below the cut is occluded too
        (f"not.configured.sub.{WILD}", "TXT"),  # the wildcard above does not reach below
        (f"www.sub.{WILD}", "DS"),  # below the cut, DS is the child's
    ],
)
async def test_referrals(server: DnsServer, tcp: bool, name: str, rdtype: str) -> None:
    reply = await ask(server, name, rdtype, tcp, use_edns=0)
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.flags & dns.flags.AA
    assert reply.answer == []
    assert texts(reply, "authority") == REFERRAL_NS
    assert texts(reply, "additional") == GLUE
    assert reply.edns == 0


async def test_cname_into_a_delegation_ends_in_a_referral(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, f"into-sub.{WILD}", "A", tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert texts(reply) == [f"into-sub.{WILD} 300 IN CNAME www.sub.{WILD}"]
    assert texts(reply, "authority") == REFERRAL_NS
    assert texts(reply, "additional") == GLUE


# --- compression --------------------------------------------------------------------------


async def test_names_are_compressed(server: DnsServer, tcp: bool) -> None:
    query = dns.message.make_query(f"sub.{WILD}", "A")
    if tcp:
        (wire,) = await raw_tcp(port_of(server), frame(query.to_wire()), 1)
    else:
        (wire,) = await raw_udp(port_of(server), [query.to_wire()])
    assert wire.count(b"\x04wild\x04test\x00") == 1  # every later name points at the first
    assert dns.message.from_wire(wire).id == query.id


# --- names with any octet (RFC 2181 §11) ----------------------------------------------------


@pytest.mark.parametrize("octet", [0x80, 0xE9, 0xFF])
async def test_eight_bit_query_names_are_answered_with_question_and_opt(
    server: DnsServer, tcp: bool, octet: int
) -> None:
    label = b"caf" + bytes([octet])
    missing = dns.name.Name([label, b"example", b"test", b""])
    reply = await send(server, dns.message.make_query(missing, "A", use_edns=0), tcp)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.question[0].name == missing
    assert reply.edns == 0
    assert texts(reply, "authority") == [f"{ORIGIN} 300 IN SOA {example_soa_text()}"]
    wild = dns.name.Name([label, b"wild", b"test", b""])
    reply = await send(server, dns.message.make_query(wild, "A", use_edns=0), tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.edns == 0
    assert [(r.name, r.to_text().split()[-1]) for r in reply.answer] == [(wild, "192.0.2.100")]


def example_soa_text() -> str:
    return f"ns1.{ORIGIN} hostmaster.{ORIGIN} 1 7200 900 1209600 300"


# --- CH TXT id.server / hostname.bind (as BIND 9.18 answers them) ---------------------------


@pytest.mark.parametrize("name", ["id.server.", "HOSTNAME.bind."])
async def test_identity_header_is_bind_like(server: DnsServer, tcp: bool, name: str) -> None:
    query = dns.message.make_query(name, "TXT", "CH", use_edns=0)
    query.flags |= dns.flags.AD | dns.flags.CD | _Z
    reply = await send(server, query, tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.edns == 0
    assert [rd.to_text() for rd in reply.answer[0]] == [f'"{server.identity}"']
    assert reply.flags & (dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.CD) == (
        dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.CD
    )
    assert not reply.flags & (dns.flags.RA | dns.flags.AD | dns.flags.TC | _Z)
    query.flags &= ~(dns.flags.RD | dns.flags.CD)
    assert not (await send(server, query, tcp)).flags & (dns.flags.RD | dns.flags.CD)


async def test_identity_with_another_opcode_is_notimp(server: DnsServer, tcp: bool) -> None:
    query = dns.message.make_query("id.server.", "TXT", "CH", use_edns=0)
    query.set_opcode(dns.opcode.NOTIFY)
    reply = await send(server, query, tcp)
    assert reply.rcode() == dns.rcode.NOTIMP
    assert not reply.answer


# --- an RRset never holds duplicates (RFC 2181 §5) ----------------------------------------


async def test_one_value_written_two_ways_is_served_once(tcp: bool) -> None:
    dup = zone(
        "dup.test.",
        1,
        [
            ("@", "NS", ["ns1.dup.test."]),
            ("txt", "TXT", ["dup", '"dup"', "other"]),
            ("v6", "AAAA", ["2001:db8::5", "2001:DB8:0:0::5"]),
            ("mx", "MX", ["10 mail.dup.test.", "10 MAIL.Dup.Test."]),
        ],
    )
    managed = RecordSet("fo.dup.test.", "A", 60, ("192.0.2.7", "192.0.2.7", "192.0.2.8"))
    content = ZoneContent(
        dup.origin, dup.soa, static=dup.static, managed={("fo.dup.test.", "A"): managed}
    )
    async with DnsServer(ZoneSnapshot.build([content]), port=0) as srv:
        for name, rdtype, expected in [
            ("txt.dup.test.", "TXT", ['"dup"', '"other"']),
            ("v6.dup.test.", "AAAA", ["2001:db8::5"]),
            ("mx.dup.test.", "MX", ["10 mail.dup.test."]),
            ("fo.dup.test.", "A", ["192.0.2.7", "192.0.2.8"]),
        ]:
            for _ in range(3):  # the fast path learns on the second ask: the third replays
                wire = await raw_wire(srv, dns.message.make_query(name, rdtype).to_wire(), tcp)
                # dnspython merges duplicates into one rdataset: count the RRs on the wire
                assert struct.unpack_from("!H", wire, 6)[0] == len(expected)
                reply = dns.message.from_wire(wire)
                assert sorted(rd.to_text() for rd in reply.answer[0]) == expected
        updated = ZoneContent(
            dup.origin,
            dup.soa,
            static=dup.static,
            managed={("fo.dup.test.", "A"): replace(managed, values=("192.0.2.9", "192.0.2.9"))},
        )
        srv.publish(srv.snapshot.update([(content, updated)]))
        wire = await raw_wire(srv, dns.message.make_query("fo.dup.test.", "A").to_wire(), tcp)
        assert struct.unpack_from("!H", wire, 6)[0] == 1


async def test_config_names_with_escapes_are_served(tcp: bool) -> None:
    config = loads(
        """\
zones:
  esc.test.:
    provider: embedded
    soa: {mname: ns1.esc.test., rname: hostmaster.esc.test.}
    nameservers: [ns1.esc.test.]
    records:
      ns1: {type: A, values: [192.0.2.53]}
      'a\\.b': {type: TXT, values: ['"dot inside"']}
      'z\\000': {type: A, values: [192.0.2.9]}
      'caf\\233': {type: CNAME, values: ['z\\000.esc.test.']}
"""
    )
    content = build_zone("esc.test.", config.zones["esc.test."], {}, serial=1)
    async with DnsServer(ZoneSnapshot.build([content]), port=0) as srv:
        dotted = dns.name.Name([b"a.b", b"esc", b"test", b""])
        reply = await send(srv, dns.message.make_query(dotted, "TXT"), tcp)
        assert [rd.to_text() for rd in reply.answer[0]] == ['"dot inside"']
        zero = dns.name.Name([b"z\x00", b"esc", b"test", b""])
        reply = await send(srv, dns.message.make_query(zero, "A"), tcp)
        assert [rd.to_text() for rd in reply.answer[0]] == ["192.0.2.9"]
        cafe = dns.name.Name([b"caf\xe9", b"esc", b"test", b""])
        reply = await send(srv, dns.message.make_query(cafe, "A"), tcp)
        assert [(r.name, r.rdtype) for r in reply.answer] == [
            (cafe, dns.rdatatype.CNAME),
            (zero, dns.rdatatype.A),
        ]


async def test_nxdomain_to_an_soa_query_has_a_zero_ttl_soa(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, f"nope.{ORIGIN}", "SOA", tcp)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.ttl for rrset in reply.authority] == [0]  # as BIND 9.18 (zero-no-soa-ttl)
    reply = await ask(server, f"www.{ORIGIN}", "SOA", tcp)  # NODATA keeps it
    assert [rrset.ttl for rrset in reply.authority] == [300]


async def test_ns_answer_carries_in_zone_nameserver_addresses(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, ORIGIN, "NS", tcp)
    assert texts(reply) == [f"{ORIGIN} 300 IN NS ns1.{ORIGIN}", f"{ORIGIN} 300 IN NS ns2.{ORIGIN}"]
    assert texts(reply, "additional") == [f"ns1.{ORIGIN} 300 IN A 192.0.2.53"]  # ns2 has none


async def test_ns_answer_follows_a_change_of_its_nameserver_address(tcp: bool) -> None:
    async with DnsServer(ZoneSnapshot.build([example_zone()]), port=0) as srv:
        for _ in range(3):  # learnt by the fast path
            reply = await ask(srv, ORIGIN, "NS", tcp)
        moved = replace_records(example_zone(2), "ns1", "A", "192.0.2.153")
        srv.publish(ZoneSnapshot.build([moved]), frozenset({(b"ns1", b"example", b"test")}))
        reply = await ask(srv, ORIGIN, "NS", tcp)
        assert texts(reply, "additional") == [f"ns1.{ORIGIN} 300 IN A 192.0.2.153"]


def replace_records(content: ZoneContent, name: str, rtype: str, value: str) -> ZoneContent:
    key = (f"{name}.{content.origin}", rtype)
    records = tuple(
        replace(r, values=(value,)) if (r.name, r.rtype) == key else r for r in content.records
    )
    return ZoneContent(content.origin, content.soa, records)


def test_weighted_duplicates_merge_and_add_their_weights(tcp: bool) -> None:
    values = ("192.0.2.7", "192.0.2.8", "192.0.2.7")
    rs = RecordSet("w.dup.test.", "A", 60, values, weights=(1, 1, 2))
    base = zone("dup.test.", 1, [("@", "NS", ["ns1.dup.test."])])
    snapshot = ZoneSnapshot.build([ZoneContent(base.origin, base.soa, (*base.records, rs))])
    answers = [snapshot.lookup((b"w", b"dup", b"test"), 1).answer for _ in range(8)]
    picked = Counter(str(rr.rdata) for answer in answers for rr in answer)
    assert picked == {"192.0.2.7": 6, "192.0.2.8": 2}  # the duplicate's weights add up: 3 to 1
    every = snapshot.lookup((b"w", b"dup", b"test"), 255).answer  # ANY: the whole set
    assert sorted(str(rr.rdata) for rr in every) == ["192.0.2.7", "192.0.2.8"]
