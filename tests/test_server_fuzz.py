"""Fuzz the bytes-in, bytes-out path: it must never raise, and every reply must parse."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.update
from conftest_server import (
    ORIGIN,
    WILD,
    example_zone,
    raw_query,
    reverse_zone,
    sub_zone,
    wild_zone,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsfailover.server import ZoneSnapshot
from dnsfailover.server.wire import respond

SNAPSHOT = ZoneSnapshot.build([example_zone(), sub_zone(), reverse_zone(), wild_zone()])
UNKNOWN_OPTION = dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"\x00\x01")


def _notify() -> bytes:
    notify = dns.message.make_query(ORIGIN, "SOA", use_edns=0)
    notify.set_opcode(dns.opcode.NOTIFY)
    return notify.to_wire()


def _update() -> bytes:
    update = dns.update.UpdateMessage(ORIGIN)
    update.use_edns(0)
    update.delete("www")
    return update.to_wire()


ECS = dns.edns.ECSOption("192.0.2.0", 24)
ECS6 = dns.edns.ECSOption("2001:db8::", 56)


def _with_ecs(data: bytes) -> bytes:
    """A query whose OPT carries an ECS option of these bytes (dnspython builds no bad one)."""
    wire = dns.message.make_query(f"www.{ORIGIN}", "A", use_edns=0).to_wire()
    rdata = struct.pack("!HH", 8, len(data)) + data
    return wire[:-2] + struct.pack("!H", len(rdata)) + rdata


VALID = [
    dns.message.make_query(f"www.{ORIGIN}", "A").to_wire(),
    dns.message.make_query(f"alias.{ORIGIN}", "A", use_edns=0, payload=4096).to_wire(),
    dns.message.make_query(f"big.{ORIGIN}", "A", use_edns=0, payload=512).to_wire(),
    dns.message.make_query(f"nope.{ORIGIN}", "TXT", want_dnssec=True).to_wire(),
    dns.message.make_query(ORIGIN, "CAA").to_wire(),
    raw_query(qclass=3),
]

# Seeds for wildcards, delegations, EDNS options and other opcodes, with their rcodes.
MORE = [
    (dns.message.make_query(f"any.{WILD}", "A", use_edns=0).to_wire(), dns.rcode.NOERROR),
    (dns.message.make_query(f"x.alias.{WILD}", "A").to_wire(), dns.rcode.NOERROR),
    (dns.message.make_query(f"x.ent.{WILD}", "A").to_wire(), dns.rcode.NXDOMAIN),
    (dns.message.make_query(f"www.sub.{WILD}", "A", use_edns=0).to_wire(), dns.rcode.NOERROR),
    (dns.message.make_query(f"sub.{WILD}", "DS").to_wire(), dns.rcode.NOERROR),
    (dns.message.make_query(f"y.loop.{WILD}", "A").to_wire(), dns.rcode.NOERROR),
    (
        dns.message.make_query(
            f"host.{WILD}", "A", use_edns=0, want_dnssec=True, options=[UNKNOWN_OPTION]
        ).to_wire(),
        dns.rcode.NOERROR,
    ),
    (_notify(), dns.rcode.NOTIMP),
    (_update(), dns.rcode.NOTIMP),
    (
        dns.message.make_query(f"www.{ORIGIN}", "A", use_edns=0, options=[ECS]).to_wire(),
        dns.rcode.NOERROR,
    ),
    (
        dns.message.make_query(f"nope.{WILD}", "AAAA", use_edns=0, options=[ECS6]).to_wire(),
        dns.rcode.NOERROR,  # under the wildcard: NODATA
    ),
    (_with_ecs(b"\x00\x01\x17\x00\xc0\x00\x03"), dns.rcode.FORMERR),  # bits past /23
    (_with_ecs(b"\x00\x01\x18\x18\xc0\x00\x02"), dns.rcode.FORMERR),  # scope in a query
]

FUZZ = settings(max_examples=300, deadline=None, database=None)


def check(data: bytes, tcp: bool) -> None:
    reply = respond(SNAPSHOT, data, tcp=tcp)
    if reply is None:
        assert len(data) < 12 or data[2] & 0x80  # only runts and responses are dropped
        return
    message = dns.message.from_wire(reply)
    assert message.id == int.from_bytes(data[:2], "big")
    assert message.flags & dns.flags.QR
    assert not message.flags & dns.flags.RA
    # no answer depends on the client yet: an echoed ECS always has SCOPE 0
    assert all(o.scopelen == 0 for o in message.options if isinstance(o, dns.edns.ECSOption))
    if not tcp:
        assert len(reply) <= 1232


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid query with a few bytes flipped, set, inserted, deleted or cut off."""
    wire = bytearray(draw(st.sampled_from(VALID + [seed for seed, _ in MORE])))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(wire)))
        byte = draw(st.integers(0, 255))
        if op == "insert":
            wire.insert(pos, byte)
        elif op == "truncate":
            del wire[pos:]
        elif pos < len(wire):
            if op == "flip":
                wire[pos] ^= byte
            elif op == "set":
                wire[pos] = byte
            else:
                del wire[pos]
    return bytes(wire)


@FUZZ
@given(st.binary(max_size=700), st.booleans())
def test_random_bytes_never_raise(data: bytes, tcp: bool) -> None:
    check(data, tcp)


@FUZZ
@given(mutated(), st.booleans())
def test_mutated_queries_never_raise(data: bytes, tcp: bool) -> None:
    check(data, tcp)


def test_valid_seeds_are_answered() -> None:
    # The fuzz seeds themselves get real answers, so mutations start from the answer path.
    rcodes = []
    for data in VALID:
        reply = respond(SNAPSHOT, data, tcp=False)
        assert reply is not None
        rcodes.append(dns.message.from_wire(reply).rcode())
    assert rcodes == [
        dns.rcode.NOERROR,
        dns.rcode.NOERROR,
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
        dns.rcode.NOERROR,
        dns.rcode.REFUSED,
    ]


def test_more_seeds_are_answered() -> None:
    for data, rcode in MORE:
        reply = respond(SNAPSHOT, data, tcp=False)
        assert reply is not None
        message = dns.message.from_wire(reply)
        assert message.rcode() == rcode
        has_opt = struct.unpack_from("!H", data, 10)[0] > 0  # every seed's additional: the OPT
        assert message.edns == (0 if has_opt else -1)


LABELS = st.sampled_from(["*", "x", "alias", "ent", "a", "sub", "ns", "www", "deeper", "host"])
QTYPES = st.sampled_from(["A", "AAAA", "NS", "DS", "CNAME", "TXT", "ANY", "MX", "TYPE666"])


@FUZZ
@given(st.lists(LABELS, min_size=0, max_size=5), QTYPES, st.booleans())
def test_names_in_the_wildcard_zone(labels: list[str], qtype: str, tcp: bool) -> None:
    # Every name under wild.test. gets an authoritative answer or a referral, never a failure.
    name = ".".join([*labels, WILD])
    query = dns.message.make_query(name, qtype, use_edns=0, options=[UNKNOWN_OPTION])
    reply = respond(SNAPSHOT, query.to_wire(), tcp=tcp)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    assert not message.options
    below_cut = labels[-1:] == ["sub"] and not (len(labels) == 1 and qtype == "DS")
    if below_cut:
        assert not message.flags & dns.flags.AA
        assert message.answer == []
        assert [r.rdtype for r in message.authority] == [dns.rdatatype.NS]
    else:
        assert message.flags & dns.flags.AA
        assert message.answer or message.authority  # data, or NXDOMAIN/NODATA with the SOA
