"""The fast path: replayed replies must be byte-identical to the full path's, or declined."""

from __future__ import annotations

import struct

import dns.asyncquery
import dns.message
import dns.rdataclass
import dns.rdatatype
from conftest_server import ORIGIN, example_snapshot, raw_query
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsfailover.server import DnsServer
from dnsfailover.server.fast import FastTable, split_query
from dnsfailover.server.wire import respond

SNAPSHOT = example_snapshot()
NAMES = [
    ORIGIN,
    f"www.{ORIGIN}",
    f"alias.{ORIGIN}",
    f"chain1.{ORIGIN}",
    f"loop1.{ORIGIN}",
    f"external.{ORIGIN}",
    f"drained.{ORIGIN}",
    f"big.{ORIGIN}",
    f"huge.{ORIGIN}",
    f"b.{ORIGIN}",  # an empty non-terminal
    f"a.b.{ORIGIN}",
    f"nothere.{ORIGIN}",
    f"host.sub.{ORIGIN}",
    "1.2.0.192.in-addr.arpa.",
    "elsewhere.invalid.",
]
QTYPES = [1, 28, 16, 15, 5, 6, 2, 33, 257, 255, 12, 65, 0x4141, 252, 41]
OPT_FORMATS = st.sampled_from(["none", "plain", "option", "version1"])


def wire_name(name: str, upper: list[bool]) -> bytes:
    out = b""
    i = 0
    for label in name.rstrip(".").split("."):
        chars = "".join(
            c.upper() if upper[(i + k) % len(upper)] else c for k, c in enumerate(label)
        )
        i += len(label)
        out += bytes([len(label)]) + chars.encode()
    return out + b"\x00"


def opt_record(kind: str, payload: int, do: bool) -> bytes:
    z = 0x8000 if do else 0
    if kind == "plain":
        return struct.pack("!BHHBBHH", 0, 41, payload, 0, 0, z, 0)
    if kind == "option":  # an EDNS option (a cookie): the table declines these
        return struct.pack("!BHHBBHH", 0, 41, payload, 0, 0, z, 12) + b"\x00\x0a\x00\x08" + bytes(8)
    return struct.pack("!BHHBBHH", 0, 41, payload, 0, 1, z, 0)  # EDNS version 1: BADVERS


def query(
    name: str, qtype: int, upper: list[bool], qid: int, flags: int, opt: str, payload: int, do: bool
) -> bytes:
    ar = 0 if opt == "none" else 1
    header = struct.pack("!6H", qid, flags, 1, 0, 0, ar)
    body = wire_name(name, upper) + struct.pack("!HH", qtype, 1)
    return header + body + (b"" if opt == "none" else opt_record(opt, payload, do))


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    qtype=st.sampled_from(QTYPES),
    cases=st.lists(st.lists(st.booleans(), min_size=1, max_size=8), min_size=2, max_size=2),
    qids=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    rds=st.lists(st.booleans(), min_size=4, max_size=4),
    extra_flags=st.sampled_from([0, 0x0020, 0x0010, 0x0030, 0x0400, 0x8000, 0x0001]),
    opt=OPT_FORMATS,
    payload=st.integers(0, 0xFFFF),
    do=st.booleans(),
    tcp=st.booleans(),
)
def test_fast_path_replies_equal_the_full_path(
    name: str,
    qtype: int,
    cases: list[list[bool]],
    qids: list[int],
    rds: list[bool],
    extra_flags: int,
    opt: str,
    payload: int,
    do: bool,
    tcp: bool,
) -> None:
    table = FastTable(SNAPSHOT)
    # The same question twice teaches the table; another case in between must not confuse it.
    order = [cases[0], cases[0], cases[1], cases[0]]
    queries = [
        query(name, qtype, case, qid, extra_flags | (0x0100 if rd else 0), opt, payload, do)
        for case, qid, rd in zip(order, qids, rds, strict=True)
    ]
    for q in queries:  # every answer, from a template or not, must be the full path's
        full = respond(SNAPSHOT, q, tcp=tcp)
        assert table.answer(q, tcp=tcp) == full
        fast = table.lookup(q, tcp=tcp)
        assert fast is None or fast == full
    last = queries[-1]
    if split_query(last) is not None and qtype in (1, 28, 6) and name == f"www.{ORIGIN}":
        assert table.lookup(last, tcp=tcp) is not None  # the common case is really served fast
        # and for any spelling of the name: resolvers using 0x20 randomise the case
        assert table.lookup(queries[2], tcp=tcp) is not None


def test_big_udp_answers_and_malformed_queries_are_declined() -> None:
    table = FastTable(SNAPSHOT)
    big = raw_query(b"\x03big\x07example\x04test\x00")
    for _ in range(3):
        assert table.answer(big, tcp=False) == respond(SNAPSHOT, big, tcp=False)
    assert table.lookup(big, tcp=False) is None  # over 512 bytes: depends on the payload size
    assert split_query(raw_query(qdcount=2)) is None
    assert split_query(raw_query(b"\xc0\x0c")) is None  # compression pointer in the question
    assert split_query(raw_query(qclass=3)) is None
    assert split_query(raw_query()[:-1]) is None
    assert split_query(raw_query() + b"\x00") is None


def test_a_key_seen_once_costs_one_full_answer_and_the_table_is_bounded() -> None:
    calls: list[bytes] = []

    def counting(
        snapshot: object, data: bytes, tcp: bool, size: int, where: object = None, /
    ) -> bytes | None:
        calls.append(data)
        return respond(SNAPSHOT, data, tcp=tcp, max_udp_payload=size)

    table = FastTable(SNAPSHOT, max_entries=4, responder=counting)
    for i in range(10):
        table.answer(raw_query(bytes([3]) + b"n%02d" % i + b"\x07example\x04test\x00"), tcp=False)
    assert len(calls) == 10
    for i in range(10):
        q = raw_query(bytes([3]) + b"n%02d" % i + b"\x07example\x04test\x00", qid=i)
        table.answer(q, tcp=False)
    assert len(table) <= 4


async def test_server_answers_id_server_with_its_identity() -> None:
    async with DnsServer(SNAPSHOT, port=0, identity="dnsfailover-test") as srv:
        assert srv.address is not None
        for name in ("id.server.", "HOSTNAME.bind."):
            q = dns.message.make_query(name, dns.rdatatype.TXT, dns.rdataclass.CH)
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=srv.address[1], timeout=2)
            assert [rd.to_text() for rd in r.answer[0]] == ['"dnsfailover-test"']
        q = dns.message.make_query("version.bind.", dns.rdatatype.TXT, dns.rdataclass.CH)
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=srv.address[1], timeout=2)
        assert not r.answer


async def test_udp_on_a_thread_answers_and_stops() -> None:
    async with DnsServer(SNAPSHOT, port=0, udp_thread=True) as srv:
        assert srv.address is not None
        q = dns.message.make_query(f"www.{ORIGIN}", dns.rdatatype.A)
        for _ in range(3):
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=srv.address[1], timeout=2)
            assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.1"]


def test_fast_path_is_used_after_publish_and_swapped_with_the_snapshot() -> None:
    srv = DnsServer(SNAPSHOT, port=0)
    q = raw_query()
    for _ in range(3):
        assert srv.answer(q, tcp=False) == respond(SNAPSHOT, q, tcp=False)
    new = example_snapshot(serial=2, www="192.0.2.99")
    srv.publish(new)
    assert srv.answer(q, tcp=False) == respond(new, q, tcp=False)
    assert srv.snapshot is new


def ecs_option(family: int, source: int, scope: int, address: bytes) -> bytes:
    body = struct.pack("!HBB", family, source, scope) + address
    return struct.pack("!HH", 8, len(body)) + body


@st.composite
def ecs_options(draw: st.DrawFn) -> tuple[bytes, bool]:
    """An ECS option, and whether it was made well formed (RFC 7871 §6); the faults make
    most kinds of malformed option (the full path answers those FORMERR)."""
    family = draw(st.sampled_from([1, 2]))
    width = 32 if family == 1 else 128
    source = draw(st.integers(0, width))
    size = (source + 7) // 8
    address = bytearray(draw(st.binary(min_size=size, max_size=size)))
    if source % 8:
        address[-1] &= 0xFF & ~(0xFF >> (source % 8))
    fault = draw(st.sampled_from(["none"] * 4 + ["scope", "long", "bits", "family", "prefix"]))
    scope = draw(st.integers(1, 255)) if fault == "scope" else 0
    if fault == "long":
        address += b"\x01"
    elif fault == "bits" and source % 8:
        address[-1] |= 0xFF >> (source % 8)
    elif fault == "family":
        family = draw(st.sampled_from([0, 3, 0xFFFF]))
    elif fault == "prefix":
        source = width + draw(st.integers(1, 255 - width))
    option = ecs_option(family, source, scope, bytes(address))
    if draw(st.booleans()) and fault != "none":
        option = option[: draw(st.integers(0, len(option) - 1))]  # cut short too
    return option, fault == "none"


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    qtype=st.sampled_from([1, 28, 16, 6, 2, 5, 255]),
    cases=st.lists(st.lists(st.booleans(), min_size=1, max_size=8), min_size=2, max_size=2),
    qids=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    options=st.lists(ecs_options(), min_size=4, max_size=4),
    payload=st.integers(0, 0xFFFF),
    do=st.booleans(),
    tcp=st.booleans(),
)
def test_fast_path_with_client_subnet_equals_the_full_path(
    name: str,
    qtype: int,
    cases: list[list[bool]],
    qids: list[int],
    options: list[tuple[bytes, bool]],
    payload: int,
    do: bool,
    tcp: bool,
) -> None:
    """Queries carrying an ECS option (well formed or not, a different one each time) get
    byte for byte the full path's reply: the echo, or its FORMERR."""
    table = FastTable(SNAPSHOT)
    order = [cases[0], cases[0], cases[1], cases[0]]
    queries = []
    for case, qid, (option, _ok) in zip(order, qids, options, strict=True):
        header = struct.pack("!6H", qid, 0x0100, 1, 0, 0, 1)
        opt = struct.pack("!BHHBBHH", 0, 41, payload, 0, 0, 0x8000 if do else 0, len(option))
        queries.append(header + wire_name(name, case) + struct.pack("!HH", qtype, 1) + opt + option)
    for q in queries:
        full = respond(SNAPSHOT, q, tcp=tcp)
        assert table.answer(q, tcp=tcp) == full
        fast = table.lookup(q, tcp=tcp)
        assert fast is None or fast == full


def test_client_subnet_queries_are_served_fast() -> None:
    """Resolvers that send ECS on every query (a public resolver) are answered from
    templates they taught the table themselves, each with its own option echoed."""
    table = FastTable(SNAPSHOT)
    name = wire_name(f"www.{ORIGIN}", [False])

    def ask(qid: int, option: bytes) -> bytes:
        header = struct.pack("!6H", qid, 0x0100, 1, 0, 0, 1)
        opt = struct.pack("!BHHBBHH", 0, 41, 1232, 0, 0, 0, len(option))
        return header + name + struct.pack("!HH", 1, 1) + opt + option

    v4 = ecs_option(1, 24, 0, bytes([192, 0, 2]))
    v6 = ecs_option(2, 56, 0, bytes.fromhex("20010db8000000"))
    for qid, option in enumerate([v4, v4, v6]):
        q = ask(qid, option)
        assert table.answer(q, tcp=False) == respond(SNAPSHOT, q, tcp=False)
    for qid, option in enumerate([v4, v6], start=10):
        q = ask(qid, option)
        fast = table.lookup(q, tcp=False)
        assert fast is not None
        assert fast == respond(SNAPSHOT, q, tcp=False)
        reply = dns.message.from_wire(fast)
        (echo,) = reply.options
        assert echo.otype == 8
        assert echo.to_wire() == option[4:]  # as sent, SCOPE 0
