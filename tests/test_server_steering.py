"""Steered names in the embedded server: each client gets its location group's answer.

A real `DnsServer` on 127.0.0.1 port 0, real clients (dnspython, `dig +subnet=`), a real
MMDB file (tests/geo_mmdb.py) with networks inside networks (IPv4 and IPv6) and a CIDR map,
and zones with steered sets built by hand.  The client is the query's ECS network
(truncated to /24 and /56) when it carries one, else its source address (client sockets
bound to 127.0.0.2 and 127.0.0.3, which the CIDR map labels); the ECS echo carries the SCOPE
the placement depends on, and 0 for every answer that is not steered.  Publishes, steering
swaps, zone transfers and worker processes: tests/test_server_steering_updates.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from conftest_server import raw_udp, soa
from geo_mmdb import country, write_mmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_ecs import echo, with_option
from test_server_tsig import KEY

from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.locate import Locator
from dnsfailover.geo.nets import NetMap
from dnsfailover.geo.steer import rule
from dnsfailover.geo.steering import Steering
from dnsfailover.model import RecordSet, SteeredSet, ZoneContent
from dnsfailover.server import DnsServer
from dnsfailover.server.fast import FastTable
from dnsfailover.server.rrl import RrlSettings
from dnsfailover.server.steered import Where
from dnsfailover.server.wire import respond
from dnsfailover.server.zone import ZoneSnapshot

both = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])

ORIGIN = "steer.test."
WWW = f"www.{ORIGIN}"
EDGE = f"edge.{ORIGIN}"
US, EU, AP = "us,eu", "eu,us", "ap,us"  # the location groups (ordered regions)
ADDRESS = {US: "192.0.2.1", EU: "192.0.2.2", AP: "192.0.2.3"}
TARGET = {US: f"us.{ORIGIN}", EU: f"eu.{ORIGIN}", AP: f"ap.{ORIGIN}"}

# Networks inside networks: a DE /24 in a GB /16, a JP /48 in a US /32.
DATABASE = {
    "81.2.0.0/16": country("GB", "EU"),
    "81.2.69.0/24": country("DE", "EU"),
    "2001:db8::/32": country("US", "NA"),
    "2001:db8:1::/48": country("JP", "AS"),
}
NETS = {"127.0.0.2/32": "lab", "127.0.0.3/32": "office"}


def steering(path: Path, **mapping: tuple[str, ...]) -> Steering:
    by_country = mapping or {"DE": ("eu", "us"), "JP": ("ap", "us"), "US": ("us", "eu")}
    www = rule(
        "country",
        map=by_country,
        default=("us", "eu"),
        nets={"lab": ("ap", "us"), "office": ("eu", "us")},
    )
    locator = Locator(path, NetMap(NETS))
    return Steering({WWW: www, EDGE: www}, locator)


def steered_zone(
    serial: int = 1, eu: str = ADDRESS[EU], ap: str = ADDRESS[AP], ap_ttl: int = 300
) -> ZoneContent:
    """www A and edge CNAME steered per group; alias → www; plain names around them."""
    answers = {
        US: RecordSet(WWW, "A", 300, (ADDRESS[US],)),
        EU: RecordSet(WWW, "A", 300, (eu,)),
        AP: RecordSet(WWW, "A", ap_ttl, (ap,)),
    }
    edges = {g: RecordSet(EDGE, "CNAME", 60, (TARGET[g],)) for g in (US, EU, AP)}
    static = [
        RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
        RecordSet(f"alias.{ORIGIN}", "CNAME", 300, (WWW,)),
        RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)),
        RecordSet(f"plain.{ORIGIN}", "A", 300, ("192.0.2.99",)),
        RecordSet(WWW, "TXT", 300, ('"hello"',)),
        *(RecordSet(TARGET[g], "A", 300, (f"198.51.100.{i}",)) for i, g in enumerate(TARGET, 1)),
    ]
    return ZoneContent(
        ORIGIN,
        soa(ORIGIN, serial),
        managed={(WWW, "A"): answers[US], (EDGE, "CNAME"): edges[US]},
        static=tuple(sorted(static, key=lambda r: (r.name, r.rtype))),
        steered={
            (WWW, "A"): SteeredSet(WWW, "A", US, answers),
            (EDGE, "CNAME"): SteeredSet(EDGE, "CNAME", US, edges),
        },
    )


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmdb(
        tmp_path_factory.mktemp("geo") / "country.mmdb", DATABASE, database_type="GeoLite2-Country"
    )


@pytest.fixture
def steer(database: Path) -> Iterator[Steering]:
    s = steering(database)
    yield s
    assert s.locator is not None
    s.locator.close()


@pytest.fixture
async def server(steer: Steering) -> AsyncIterator[DnsServer]:
    srv = DnsServer(ZoneSnapshot.build([steered_zone()]), port=0, steering=steer)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def port_of(srv: DnsServer) -> int:
    assert srv.address is not None
    return srv.address[1]


async def ask(
    srv: DnsServer,
    name: str,
    rdtype: str,
    tcp: bool,
    subnet: tuple[str, int] | None = None,
    source: str = "127.0.0.1",
) -> dns.message.Message:
    options: list[dns.edns.Option] = [dns.edns.ECSOption(*subnet)] if subnet else []
    query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    if tcp:
        return await dns.asyncquery.tcp(
            query, "127.0.0.1", port=port_of(srv), source=source, timeout=2
        )
    return await dns.asyncquery.udp(query, "127.0.0.1", port=port_of(srv), source=source, timeout=2)


def addresses(reply: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in reply.answer for rd in rrset if rrset.rdtype == 1]


# --- ECS: the client's network decides, and the echo says how much of it ----------------------

ECS_CASES = [
    # (ECS address, source prefix) → group, scope (the database network, capped at /24, /56)
    (("81.2.69.0", 24), EU, 24),  # DE /24 inside the GB /16
    (("81.2.69.77", 32), EU, 24),  # longer than /24: located by its /24
    (("81.2.70.0", 24), US, 23),  # GB (not mapped): the default, 81.2.70.0/23 around it
    (("81.2.0.0", 16), US, 18),  # scope longer than the source: 81.2.0.0/18 decides
    (("192.0.2.0", 24), US, 1),  # nowhere in the database: default
    (("2001:db8:1::", 48), AP, 48),  # JP /48 inside the US /32
    (("2001:db8:1:2::", 64), AP, 48),  # longer than /56: located by its /56
    (("2001:db8:2::", 48), US, 47),  # US: mapped to the default group's list
    (("0.0.0.0", 0), US, 0),  # "do not locate me": the source address decides, SCOPE 0
]


@both
@pytest.mark.parametrize(("subnet", "group", "scope"), ECS_CASES, ids=[c[0][0] for c in ECS_CASES])
async def test_ecs_network_picks_the_group_and_scope(
    server: DnsServer, tcp: bool, subnet: tuple[str, int], group: str, scope: int
) -> None:
    for _ in range(3):  # learned on the second miss, then replayed: the same every time
        reply = await ask(server, WWW, "A", tcp, subnet)
        assert reply.rcode() == dns.rcode.NOERROR
        assert addresses(reply) == [ADDRESS[group]]
        assert echo(reply) == [(subnet[0], subnet[1], scope)]


@both
async def test_in_zone_cname_to_a_steered_name_is_steered_and_scoped(
    server: DnsServer, tcp: bool
) -> None:
    for _ in range(3):
        reply = await ask(server, f"alias.{ORIGIN}", "A", tcp, ("81.2.69.0", 24))
        assert addresses(reply) == [ADDRESS[EU]]
        assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
        assert echo(reply) == [("81.2.69.0", 24, 24)]


@both
async def test_a_steered_cname_answers_each_group_its_target(server: DnsServer, tcp: bool) -> None:
    for subnet, group in ((("2001:db8:1::", 48), AP), (("81.2.69.0", 24), EU)):
        for _ in range(3):
            reply = await ask(server, EDGE, "A", tcp, subnet)
            names = [rrset.name.to_text() for rrset in reply.answer]
            assert names == [EDGE, TARGET[group]]
            assert echo(reply)[0][2] == (48 if group == AP else 24)


@both
async def test_what_is_not_steered_keeps_scope_zero(server: DnsServer, tcp: bool) -> None:
    subnet = ("81.2.69.0", 24)
    nodata = await ask(server, WWW, "AAAA", tcp, subnet)  # a steered name's other type
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert echo(nodata) == [("81.2.69.0", 24, 0)]
    txt = await ask(server, WWW, "TXT", tcp, subnet)
    assert txt.answer
    assert echo(txt) == [("81.2.69.0", 24, 0)]
    plain = await ask(server, f"plain.{ORIGIN}", "A", tcp, subnet)
    assert addresses(plain) == ["192.0.2.99"]
    assert echo(plain) == [("81.2.69.0", 24, 0)]
    nx = await ask(server, f"nope.{ORIGIN}", "A", tcp, subnet)
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert echo(nx) == [("81.2.69.0", 24, 0)]
    without = await ask(server, WWW, "A", tcp)  # no ECS asked: none given
    assert echo(without) == []
    assert addresses(without) == [ADDRESS[US]]


@both
async def test_malformed_ecs_on_a_steered_name_is_formerr(server: DnsServer, tcp: bool) -> None:
    packet = with_option(8, b"\x00\x01\x17\x00\x51\x02\x45", name=WWW)  # bits past /23
    if tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(len(packet).to_bytes(2, "big") + packet)
        size = int.from_bytes(await reader.readexactly(2), "big")
        wire = await reader.readexactly(size)
        writer.close()
    else:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _One, remote_addr=("127.0.0.1", port_of(server))
        )
        transport.sendto(packet)
        wire = await asyncio.wait_for(protocol.reply, 2)
        transport.close()
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.FORMERR
    assert not reply.answer
    assert echo(reply) == []


class _One(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


# --- without ECS: the source address decides -----------------------------------------------


@both
@pytest.mark.parametrize(
    ("source", "group"), [("127.0.0.2", AP), ("127.0.0.3", EU), ("127.0.0.1", US)]
)
async def test_without_ecs_the_source_address_decides(
    server: DnsServer, tcp: bool, source: str, group: str
) -> None:
    for _ in range(3):
        reply = await ask(server, WWW, "A", tcp, source=source)
        assert addresses(reply) == [ADDRESS[group]]
        assert echo(reply) == []
    # an ECS with SOURCE PREFIX-LENGTH 0 asks not to be located: the source decides, SCOPE 0
    zero = await ask(server, WWW, "A", tcp, ("0.0.0.0", 0), source=source)
    assert addresses(zero) == [ADDRESS[group]]
    assert echo(zero) == [("0.0.0.0", 0, 0)]
    # an ECS network wins over the source address
    ecs = await ask(server, WWW, "A", tcp, ("81.2.69.0", 24), source=source)
    assert addresses(ecs) == [ADDRESS[EU]]


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
    ("subnet", "shown", "group"),
    [
        ("81.2.69.0/24", "81.2.69.0/24/24", EU),
        ("81.2.70.0/24", "81.2.70.0/24/23", US),
        ("2001:db8:1::/48", "2001:db8:1::/48/48", AP),
        ("2001:db8:1:2::/64", "2001:db8:1:2::/64/48", AP),
    ],
)
async def test_dig_subnet_gets_its_group_and_scope(
    server: DnsServer, tcp: bool, subnet: str, shown: str, group: str
) -> None:
    out = await dig(server, WWW, "A", f"+subnet={subnet}", *(["+tcp"] if tcp else []))
    assert re.search(rf"^; CLIENT-SUBNET: {re.escape(shown)}$", out, re.M), out
    assert re.search(rf"^{re.escape(WWW)}\s+300\s+IN\s+A\s+{re.escape(ADDRESS[group])}$", out, re.M)


async def test_dig_from_a_mapped_source_address(server: DnsServer) -> None:
    out = await dig(server, "-b", "127.0.0.2", WWW, "A", "+short")
    assert out.split() == [ADDRESS[AP]]


# --- fast path == full path ------------------------------------------------------------------

CLIENTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"]
SUBNETS = [None, *(c[0] for c in ECS_CASES), ("2001:db8:ffff::", 56), ("81.2.69.128", 25)]
NAMES = [WWW, EDGE, f"alias.{ORIGIN}", f"plain.{ORIGIN}", f"nope.{ORIGIN}", f"WwW.{ORIGIN}"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    asked=st.lists(
        st.tuples(
            st.sampled_from(NAMES),
            st.sampled_from(["A", "AAAA", "CNAME", "TXT"]),
            st.sampled_from(SUBNETS),
            st.sampled_from(CLIENTS),
            st.booleans(),
        ),
        min_size=4,
        max_size=30,
    ),
    tcp=st.booleans(),
)
def test_fast_path_replies_equal_the_full_path(
    steer: Steering, asked: list[tuple[str, str, tuple[str, int] | None, str, bool]], tcp: bool
) -> None:
    snapshot = ZoneSnapshot.build([steered_zone()])
    limits = SourceLimits()
    table = FastTable(snapshot, steering=steer, limits=limits)
    for qid, (name, rdtype, subnet, client, edns) in enumerate(asked * 3):
        options: list[dns.edns.Option] = [dns.edns.ECSOption(*subnet)] if subnet else []
        query = dns.message.make_query(
            name, rdtype, use_edns=0 if edns or options else False, options=options, id=qid
        ).to_wire()
        full = respond(snapshot, query, tcp=tcp, where=Where(steer, client, limits))
        assert table.answer(query, tcp=tcp, client=client) == full
        fast = table.lookup(query, tcp=tcp, client=client)
        assert fast is None or fast == full


def test_steered_hits_take_the_fast_path(steer: Steering) -> None:
    snapshot = ZoneSnapshot.build([steered_zone()])
    table = FastTable(snapshot, steering=steer)
    for subnet, group, scope in ECS_CASES:
        query = dns.message.make_query(WWW, "A", use_edns=0, options=[dns.edns.ECSOption(*subnet)])
        wire = query.to_wire()
        for _ in range(2):
            table.answer(wire, tcp=False, client="127.0.0.1")
        fast = table.lookup(wire, tcp=False, client="127.0.0.1")
        assert fast is not None, subnet  # served from its group's template
        reply = dns.message.from_wire(fast)
        assert addresses(reply) == [ADDRESS[group]]
        assert echo(reply)[0][2] == scope
    plain = dns.message.make_query(WWW, "A").to_wire()
    for client, group in (("127.0.0.2", AP), ("127.0.0.3", EU), ("127.0.0.9", US)):
        table.answer(plain, tcp=False, client=client)
        table.answer(plain, tcp=False, client=client)
        fast = table.lookup(plain, tcp=False, client=client)
        assert fast is not None
        assert addresses(dns.message.from_wire(fast)) == [ADDRESS[group]]


# --- TSIG, weights, truncation, ANY, the batched UDP thread, RRL ---------------------------


@both
async def test_signed_queries_are_steered_and_signed(server: DnsServer, tcp: bool) -> None:
    server.keyring = {KEY.name: KEY}
    query = dns.message.make_query(
        WWW, "A", use_edns=0, options=[dns.edns.ECSOption("2001:db8:1::", 48)]
    )
    query.use_tsig(KEY)
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    reply = await send(query, "127.0.0.1", port=port_of(server), timeout=2)  # verifies the TSIG
    assert reply.had_tsig
    assert addresses(reply) == [ADDRESS[AP]]
    assert echo(reply) == [("2001:db8:1::", 48, 48)]


def with_www(zone: ZoneContent, group: str, answer: RecordSet) -> ZoneContent:
    """`zone` with one group of www's steered set replaced."""
    www = zone.steered[WWW, "A"]
    steered = {**zone.steered, (WWW, "A"): SteeredSet(WWW, "A", US, {**www.answers, group: answer})}
    return ZoneContent(ORIGIN, zone.soa, managed=zone.managed, static=zone.static, steered=steered)


@both
async def test_a_weighted_group_rotates_its_answers(steer: Steering, tcp: bool) -> None:
    two = RecordSet(WWW, "A", 300, ("192.0.2.3", "192.0.2.4"), weights=(1, 1))
    srv = DnsServer(ZoneSnapshot.build([with_www(steered_zone(), AP, two)]), port=0, steering=steer)
    await srv.start()
    try:
        got = [addresses(await ask(srv, WWW, "A", tcp, ("2001:db8:1::", 48))) for _ in range(6)]
        assert sorted(got) == [["192.0.2.3"]] * 3 + [["192.0.2.4"]] * 3  # one each, in turn
        assert got[0] != got[1]
        eu = [addresses(await ask(srv, WWW, "A", tcp, ("81.2.69.0", 24))) for _ in range(3)]
        assert eu == [[ADDRESS[EU]]] * 3  # other groups do not rotate
    finally:
        await srv.stop()


@both
async def test_a_big_group_answer_truncates_over_udp_with_its_scope(
    steer: Steering, tcp: bool
) -> None:
    many = tuple(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(100))
    content = with_www(steered_zone(), EU, RecordSet(WWW, "A", 300, many))
    srv = DnsServer(ZoneSnapshot.build([content]), port=0, steering=steer)
    await srv.start()
    try:
        for _ in range(3):
            reply = await ask(srv, WWW, "A", tcp, ("81.2.69.0", 24))
            assert echo(reply) == [("81.2.69.0", 24, 24)]
            if tcp:
                assert len(addresses(reply)) == 100
            else:
                assert reply.flags & dns.flags.TC
                assert not reply.answer
            small = await ask(srv, WWW, "A", tcp, ("2001:db8:1::", 48))
            assert addresses(small) == [ADDRESS[AP]]
    finally:
        await srv.stop()


@both
async def test_any_at_a_steered_name_is_not_steered(server: DnsServer, tcp: bool) -> None:
    reply = await ask(server, WWW, "ANY", tcp, ("81.2.69.0", 24))
    assert reply.rcode() == dns.rcode.NOERROR
    assert echo(reply) == [("81.2.69.0", 24, 0)]
    assert addresses(reply) == [ADDRESS[US]]  # RFC 8482: one RRset (the lowest type), the default


@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.3"])
async def test_the_batched_udp_thread_places_by_source_address(
    steer: Steering, source: str
) -> None:
    srv = DnsServer(ZoneSnapshot.build([steered_zone()]), port=0, steering=steer, udp_thread=True)
    await srv.start()
    try:
        for _ in range(3):
            reply = await ask(srv, WWW, "A", False, source=source)
            assert addresses(reply) == [ADDRESS[AP if source == "127.0.0.2" else EU]]
    finally:
        await srv.stop()


async def test_rate_limiting_covers_steered_answers(steer: Steering) -> None:
    settings = RrlSettings(responses_per_second=5, slip=2, window=15)
    snapshot = ZoneSnapshot.build([steered_zone()])
    async with DnsServer(snapshot, port=0, rrl=settings, steering=steer) as srv:
        option: list[dns.edns.Option] = [dns.edns.ECSOption("81.2.69.0", 24)]
        packets = [
            dns.message.make_query(WWW, "A", use_edns=0, options=option, id=i).to_wire()
            for i in range(40)
        ]
        replies = [dns.message.from_wire(r) for r in await raw_udp(port_of(srv), packets, 0.5)]
    full = [r for r in replies if not r.flags & dns.flags.TC]
    slipped = [r for r in replies if r.flags & dns.flags.TC]
    assert 5 <= len(full) <= 7  # the allowance (plus what trickled back while sending)
    assert 10 <= len(slipped) <= 20  # every second dropped reply, as TC=1
    assert all(addresses(r) == [ADDRESS[EU]] for r in full)
    assert all(echo(r) == [("81.2.69.0", 24, 24)] for r in full)
