"""EDNS Client Subnet (RFC 7871) in the embedded server, for names that are not steered.

Every answer to a query with a well-formed ECS option echoes it (FAMILY, SOURCE
PREFIX-LENGTH and ADDRESS as sent) with SCOPE PREFIX-LENGTH 0: the answer is the same for
every client.  A malformed ECS option gets FORMERR with an OPT and no answer.  A query
without ECS gets no ECS back.  Zone transfers ignore ECS (they are the whole zone, for a
server, and never cached per client network).  Real clients: dnspython, `dig +subnet=`;
and real BIND 9.18, which checks and echoes ECS the same way (two differences, listed in
:data:`ECS_ALLOWED`).
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections import Counter
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from conftest_server import HUGE_COUNT, ORIGIN, WILD, frame, raw_tcp
from dns_exchange import exchange, summary
from test_differential_bind import KEY as DIFF_KEY
from test_differential_bind import ORIGIN as DIFF
from test_differential_bind import named, ours
from test_server_conformance import ask, port_of, raw, send, server, texts
from test_server_tsig import KEY
from test_xfr import Served, served

from dnsfailover.server import DnsServer

__all__ = ["named", "ours", "served", "server"]  # the fixtures

both = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])

V4 = dns.edns.ECSOption("192.0.2.0", 24)
V6 = dns.edns.ECSOption("2001:db8::", 56)
UNKNOWN = dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"\x01\x02")


def echo(reply: dns.message.Message) -> list[tuple[str, int, int]]:
    """The ECS options of a reply, as (address, source, scope)."""
    return [
        (o.address, o.srclen, o.scopelen)
        for o in reply.options
        if isinstance(o, dns.edns.ECSOption)
    ]


# name, type, rcode, AA, what the answer is (every kind of answer the server gives)
KINDS = [
    (f"www.{ORIGIN}", "A", dns.rcode.NOERROR, True, "positive"),
    (f"alias.{ORIGIN}", "AAAA", dns.rcode.NOERROR, True, "cname"),
    (f"nope.{ORIGIN}", "A", dns.rcode.NXDOMAIN, True, "nxdomain"),
    (f"www.{ORIGIN}", "TXT", dns.rcode.NOERROR, True, "nodata"),
    (f"www.sub.{WILD}", "A", dns.rcode.NOERROR, False, "referral"),
    (f"anything.{WILD}", "A", dns.rcode.NOERROR, True, "wildcard"),
    (ORIGIN, "SOA", dns.rcode.NOERROR, True, "soa"),
    (ORIGIN, "NS", dns.rcode.NOERROR, True, "ns"),
    ("www.example.invalid.", "A", dns.rcode.REFUSED, False, "refused"),
]


@both
@pytest.mark.parametrize("option", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "aa"), [k[:4] for k in KINDS], ids=[k[4] for k in KINDS]
)
async def test_every_answer_echoes_ecs_with_scope_zero(
    server: DnsServer,
    tcp: bool,
    option: dns.edns.ECSOption,
    name: str,
    rdtype: str,
    rcode: dns.rcode.Rcode,
    aa: bool,
) -> None:
    reply = await ask(server, name, rdtype, tcp, use_edns=0, options=[option])
    plain = await ask(server, name, rdtype, tcp, use_edns=0)
    assert echo(reply) == [(option.address, option.srclen, 0)]
    assert echo(plain) == []  # no ECS asked, none given
    assert reply.rcode() == rcode
    assert bool(reply.flags & dns.flags.AA) == aa
    for section in ("answer", "authority", "additional"):
        assert texts(reply, section) == texts(plain, section)


@both
@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (dns.edns.ECSOption("0.0.0.0", 0), ("0.0.0.0", 0, 0)),  # "do not locate me"
        (dns.edns.ECSOption("::", 0), ("::", 0, 0)),
        (dns.edns.ECSOption("198.51.100.7", 32), ("198.51.100.7", 32, 0)),  # past our /24
        (dns.edns.ECSOption("2001:db8:1:2::", 64), ("2001:db8:1:2::", 64, 0)),  # past /56
        (dns.edns.ECSOption("203.0.113.128", 25), ("203.0.113.128", 25, 0)),  # not on octets
    ],
    ids=["v4-0", "v6-0", "v4-32", "v6-64", "v4-25"],
)
async def test_source_prefix_and_address_are_echoed_as_sent(
    server: DnsServer, tcp: bool, option: dns.edns.ECSOption, expected: tuple[str, int, int]
) -> None:
    reply = await ask(server, f"www.{ORIGIN}", "A", tcp, use_edns=0, options=[option])
    assert reply.rcode() == dns.rcode.NOERROR
    assert echo(reply) == [expected]
    assert texts(reply) == [f"www.{ORIGIN} 300 IN A 192.0.2.1"]


@both
async def test_other_options_are_ignored_and_ecs_is_the_only_one_echoed(
    server: DnsServer, tcp: bool
) -> None:
    reply = await ask(
        server, f"www.{ORIGIN}", "A", tcp, use_edns=0, want_dnssec=True, options=[UNKNOWN, V4]
    )
    assert reply.rcode() == dns.rcode.NOERROR
    assert [o.otype for o in reply.options] == [dns.edns.OptionType.ECS]
    assert echo(reply) == [("192.0.2.0", 24, 0)]
    assert reply.ednsflags & dns.flags.DO  # still copied


@both
async def test_two_ecs_options_the_first_is_echoed(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, f"www.{ORIGIN}", "A", tcp, use_edns=0, options=[V4, V6])
    assert reply.rcode() == dns.rcode.NOERROR
    assert echo(reply) == [("192.0.2.0", 24, 0)]


@both
async def test_plain_and_ecs_queries_interleaved_never_mix(server: DnsServer, tcp: bool) -> None:
    # The fast path learns plain queries' replies on their second miss: ECS queries must
    # keep their echo, and plain ones never get one, however many times each is asked.
    for _ in range(4):
        with_ecs = await ask(server, f"www.{ORIGIN}", "A", tcp, use_edns=0, options=[V6])
        plain = await ask(server, f"www.{ORIGIN}", "A", tcp, use_edns=0)
        assert echo(with_ecs) == [("2001:db8::", 56, 0)]
        assert not plain.options
        assert texts(with_ecs) == texts(plain) == [f"www.{ORIGIN} 300 IN A 192.0.2.1"]


@both
async def test_truncated_answer_keeps_the_echo(server: DnsServer, tcp: bool) -> None:
    query = dns.message.make_query(f"huge.{ORIGIN}", "A", use_edns=0, options=[V4])
    reply = await send(server, query, tcp)  # dnspython raises nothing on TC
    assert echo(reply) == [("192.0.2.0", 24, 0)]
    if tcp:
        assert len(reply.answer[0]) == HUGE_COUNT
    else:
        assert reply.flags & dns.flags.TC
        assert not reply.answer


@both
async def test_identity_answer_echoes_ecs(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, "id.server.", "TXT", tcp, rdclass="CH", use_edns=0, options=[V4])
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer
    assert echo(reply) == [("192.0.2.0", 24, 0)]


# --- malformed ECS: FORMERR with an OPT, no answer (RFC 7871 §7.2.1, RFC 6891 §7) -----------


def with_option(code: int, data: bytes, *, do: bool = False, name: str = f"www.{ORIGIN}") -> bytes:
    """A query whose OPT carries one option built by hand (dnspython refuses to build these)."""
    query = dns.message.make_query(name, "A", use_edns=0, want_dnssec=do, id=4242)
    wire = query.to_wire()
    assert wire.endswith(b"\x00\x00")  # an OPT without options comes last: RDLENGTH 0
    rdata = struct.pack("!HH", code, len(data)) + data
    return wire[:-2] + struct.pack("!H", len(rdata)) + rdata


MALFORMED = [
    ("bad-family", b"\x00\x03\x18\x00\xc0\x00\x02"),
    ("family-0", b"\x00\x00\x00\x00"),
    ("v4-prefix-33", b"\x00\x01\x21\x00\xc0\x00\x02\x00\x00"),
    ("v6-prefix-129", b"\x00\x02\x81\x00" + b"\x20\x01\x0d\xb8" + b"\x00" * 13),
    ("address-too-long", b"\x00\x01\x18\x00\xc0\x00\x02\x00"),
    ("address-too-short", b"\x00\x01\x18\x00\xc0\x00"),
    ("bits-past-prefix", b"\x00\x01\x17\x00\xc0\x00\x03"),
    ("scope-in-query", b"\x00\x01\x18\x18\xc0\x00\x02"),
    ("shorter-than-4", b"\x00\x01\x18"),
    ("empty", b""),
]


@both
@pytest.mark.parametrize("data", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_ecs_is_formerr_with_opt(server: DnsServer, tcp: bool, data: bytes) -> None:
    reply = await raw(server, with_option(8, data, do=True), tcp)
    assert (reply.id, reply.rcode()) == (4242, dns.rcode.FORMERR)
    assert reply.edns == 0
    assert reply.ednsflags & dns.flags.DO
    assert [q.name.to_text() for q in reply.question] == [f"www.{ORIGIN}"]
    assert reply.answer == reply.authority == []
    assert echo(reply) == []


@both
async def test_a_malformed_second_ecs_option_is_formerr_too(server: DnsServer, tcp: bool) -> None:
    good = V4.to_wire()
    assert good is not None
    bad = b"\x00\x01\x17\x00\xc0\x00\x03"  # bits set past /23
    # one OPT option whose data is the well-formed ECS option, then the bad one's header
    packet = with_option(8, good + struct.pack("!HH", 8, len(bad)) + bad)
    at = len(packet) - len(good) - len(bad) - 10  # the OPT's RDLENGTH, then the first option
    packet = packet[: at + 4] + struct.pack("!H", len(good)) + packet[at + 6 :]
    reply = await raw(server, packet, tcp)
    assert reply.rcode() == dns.rcode.FORMERR  # as BIND 9.18 answers it
    assert reply.edns == 0
    assert not reply.answer


@both
async def test_malformed_ecs_formerr_for_identity_query_too(server: DnsServer, tcp: bool) -> None:
    packet = with_option(8, b"\x00\x05\x00\x00", name="id.server.")
    packet = (
        packet[: packet.index(b"\x00\x00\x01\x00\x01")]
        + b"\x00\x00\x10\x00\x03"
        + (packet[packet.index(b"\x00\x00\x01\x00\x01") + 5 :])
    )  # qtype TXT, class CH
    reply = await raw(server, packet, tcp)
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0
    assert not reply.answer


@both
async def test_a_server_that_answered_formerr_answers_the_next_query(
    server: DnsServer, tcp: bool
) -> None:
    bad = with_option(8, b"\x00\x01\x21\x00")
    if tcp:  # both frames on one connection: the FORMERR does not end it
        good = dns.message.make_query(f"www.{ORIGIN}", "A", id=7, use_edns=0, options=[V4])
        wires = await raw_tcp(port_of(server), frame(bad) + frame(good.to_wire()), 2)
        replies = [dns.message.from_wire(w) for w in wires]
        assert [r.rcode() for r in replies] == [dns.rcode.FORMERR, dns.rcode.NOERROR]
        assert echo(replies[1]) == [("192.0.2.0", 24, 0)]
    else:
        assert (await raw(server, bad, tcp)).rcode() == dns.rcode.FORMERR
        reply = await ask(server, f"www.{ORIGIN}", "A", tcp, use_edns=0, options=[V4])
        assert echo(reply) == [("192.0.2.0", 24, 0)]


# --- with TSIG and DO -----------------------------------------------------------------------


@both
async def test_ecs_do_and_tsig_together(server: DnsServer, tcp: bool) -> None:
    server.keyring = {KEY.name: KEY}
    query = dns.message.make_query(f"www.{ORIGIN}", "A", use_edns=0, want_dnssec=True, options=[V6])
    query.use_tsig(KEY)
    reply = await send(server, query, tcp)  # dnspython verifies the reply's TSIG
    assert reply.had_tsig
    assert reply.keyname == KEY.name
    assert reply.ednsflags & dns.flags.DO
    assert echo(reply) == [("2001:db8::", 56, 0)]
    assert texts(reply) == [f"www.{ORIGIN} 300 IN A 192.0.2.1"]


@both
async def test_signed_query_with_scope_in_ecs_gets_signed_formerr(
    server: DnsServer, tcp: bool
) -> None:
    server.keyring = {KEY.name: KEY}
    query = dns.message.from_wire(with_option(8, b"\x00\x01\x18\x18\xc0\x00\x02", do=True))
    query.use_tsig(KEY)
    reply = await send(server, query, tcp)  # dnspython verifies the reply's TSIG
    assert reply.had_tsig
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0
    assert reply.ednsflags & dns.flags.DO
    assert not reply.answer


@both
async def test_signed_query_with_unreadable_ecs_is_formerr_with_opt(
    server: DnsServer, tcp: bool
) -> None:
    # dnspython (which checks TSIG) cannot read an ECS of family 3: the unsigned FORMERR
    # still carries the OPT, as for an unsigned query.
    server.keyring = {KEY.name: KEY}
    query = dns.message.make_query(f"www.{ORIGIN}", "A", use_edns=0, options=[V4])
    query.use_tsig(KEY)
    wire = query.to_wire()
    good = V4.to_wire()
    assert good is not None
    assert wire.count(good) == 1
    packet = wire.replace(good, b"\x00\x03" + good[2:])
    reply = await raw(server, packet, tcp)
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0
    assert not reply.answer
    assert not reply.had_tsig


# --- zone transfers ignore ECS --------------------------------------------------------------


async def test_axfr_with_ecs_transfers_the_zone_without_echo(served: Served) -> None:
    query = dns.message.make_query(ORIGIN, "AXFR", use_edns=0, options=[V4])
    (wire,) = await raw_tcp(served.port, frame(query.to_wire()), 1)
    reply = dns.message.from_wire(wire, xfr=True)  # the whole (small) zone in one message
    assert reply.rcode() == dns.rcode.NOERROR
    types = [rrset.rdtype for rrset in reply.answer]
    assert types[0] == types[-1] == dns.rdatatype.SOA
    assert len(types) > 2
    assert echo(reply) == []


# --- dig +subnet ----------------------------------------------------------------------------


async def dig(server: DnsServer, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "dig", "@127.0.0.1", "-p", str(port_of(server)), "+tries=1", "+time=2", *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    return out.decode()


@both
@pytest.mark.parametrize(
    ("subnet", "shown"),
    [("192.0.2.0/24", "192.0.2.0/24/0"), ("2001:db8::/56", "2001:db8::/56/0")],
)
async def test_dig_subnet_sees_its_subnet_with_scope_zero(
    server: DnsServer, tcp: bool, subnet: str, shown: str
) -> None:
    args = [f"+subnet={subnet}", *(["+tcp"] if tcp else [])]
    out = await dig(server, f"www.{ORIGIN}", "A", *args)
    assert "status: NOERROR" in out
    assert re.search(rf"^; CLIENT-SUBNET: {re.escape(shown)}$", out, re.M), out
    assert re.search(rf"^www\.{re.escape(ORIGIN)}\s+300\s+IN\s+A\s+192\.0\.2\.1$", out, re.M)
    negative = await dig(server, f"nope.{ORIGIN}", "A", *args)
    assert "status: NXDOMAIN" in negative
    assert f"; CLIENT-SUBNET: {shown}" in negative
    plain = await dig(server, f"www.{ORIGIN}", "A", *(["+tcp"] if tcp else []))
    assert "CLIENT-SUBNET" not in plain


async def test_axfr_with_malformed_ecs_is_formerr_with_opt(served: Served) -> None:
    packet = with_option(8, b"\x00\x01\x21\x00\xc0\x00\x02\x00\x00", name=ORIGIN)
    packet = packet.replace(b"\x00\x00\x01\x00\x01", b"\x00\x00\xfc\x00\x01", 1)  # qtype AXFR
    (wire,) = await raw_tcp(served.port, frame(packet), 1)
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0
    assert not reply.answer


# --- against BIND 9.18 --------------------------------------------------------------------

ECS_ALLOWED = {
    "formerr-opt": "BIND's FORMERR to an ECS with a non-zero SCOPE (RFC 7871 §7.1.2: FORMERR) "
    "has no OPT; we keep it (RFC 6891 §7: an OPT in every reply to an EDNS query)",
    "family-0": "BIND takes FAMILY 0 with SOURCE 0 (its 'no address', from an early draft) "
    "and echoes it; RFC 7871 §6 defines FAMILY 1 and 2 only, so we answer FORMERR",
}
"""How BIND 9.18 (an authoritative server without ECS configured, which still checks and
echoes ECS with SCOPE 0) and we differ on ECS queries, and why."""

DIFF_NAMES = [
    "@", "www", "nope", "x.wild", "alias", "sub", "www.sub", "fo", "drained", "big", "x.nope",
]  # fmt: skip
DIFF_TYPES = ["A", "AAAA", "SOA", "NS", "TXT", "MX"]
DIFF_OPTIONS = [V4, V6, dns.edns.ECSOption("0.0.0.0", 0), dns.edns.ECSOption("10.1.2.3", 32)]
DIFF_OPTIONS += [dns.edns.ECSOption("2001:db8:1:2::", 64), dns.edns.ECSOption("10.1.2.128", 25)]


@dataclass(frozen=True)
class DiffQuery:
    wire: bytes
    tcp: bool
    what: str
    allowed: str = ""  # the ECS_ALLOWED tag that explains a difference, if any


def diff_queries() -> list[DiffQuery]:
    """Each name and type, with an ECS option, DO and transport in turn; malformed ECS."""
    out: list[DiffQuery] = []
    qid = 0
    for index, name in enumerate(DIFF_NAMES):
        for turn, rdtype in enumerate(DIFF_TYPES):
            qid += 1
            option = DIFF_OPTIONS[(index + turn) % len(DIFF_OPTIONS)]
            owner = DIFF if name == "@" else f"{name}.{DIFF}"
            query = dns.message.make_query(
                owner, rdtype, use_edns=0, want_dnssec=bool(turn % 2), options=[option], id=qid
            )
            if turn == 5:
                query.use_tsig(DIFF_KEY)  # ECS, DO and TSIG together
            what = f"{owner} {rdtype} {option.to_text()} do={turn % 2} tsig={turn == 5}"
            out.append(DiffQuery(query.to_wire(), bool(index % 2), what))
    allowed = {"scope-in-query": "formerr-opt", "family-0": "family-0"}
    for tag, data in MALFORMED:
        for tcp in (False, True):
            qid += 1
            wire = struct.pack("!H", qid) + with_option(8, data, name=f"www.{DIFF}")[2:]
            out.append(DiffQuery(wire, tcp, f"malformed ECS {tag}", allowed.get(tag, "")))
    return out


def ecs_of(wire: bytes | None) -> object:
    try:
        return echo(dns.message.from_wire(wire, keyring=False)) if wire else None
    except Exception as e:  # BIND's echo of FAMILY 0 is not readable by dnspython
        return type(e).__name__


async def test_bind_and_we_answer_ecs_alike(named: int, ours: int) -> None:
    batch = diff_queries()
    wires = [(q.wire, q.tcp) for q in batch]
    theirs, mine = await exchange(named, wires), await exchange(ours, wires)
    seen: Counter[str] = Counter()
    unexplained = []
    for query, a, b in zip(batch, theirs, mine, strict=True):
        left, right = {**summary(a), "ecs": ecs_of(a)}, {**summary(b), "ecs": ecs_of(b)}
        if left == right:
            continue
        if query.allowed:
            seen[query.allowed] += 1
            continue
        fields = sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
        diff = {k: (left.get(k), right.get(k)) for k in fields}
        unexplained.append(f"{'tcp' if query.tcp else 'udp'} {query.what}: bind, ours {diff}")
    assert not unexplained, f"{len(unexplained)} differences:\n" + "\n".join(unexplained[:5])
    assert seen == {"formerr-opt": 2, "family-0": 2}  # every allowed difference shows up
    assert len(batch) == len(DIFF_NAMES) * len(DIFF_TYPES) + 2 * len(MALFORMED)
