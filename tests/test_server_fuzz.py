"""Fuzz the bytes-in, bytes-out path: it must never raise, and every reply must parse."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
from conftest_server import ORIGIN, example_snapshot, raw_query
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsfailover.server.wire import respond

SNAPSHOT = example_snapshot()

VALID = [
    dns.message.make_query(f"www.{ORIGIN}", "A").to_wire(),
    dns.message.make_query(f"alias.{ORIGIN}", "A", use_edns=0, payload=4096).to_wire(),
    dns.message.make_query(f"big.{ORIGIN}", "A", use_edns=0, payload=512).to_wire(),
    dns.message.make_query(f"nope.{ORIGIN}", "TXT", want_dnssec=True).to_wire(),
    dns.message.make_query(ORIGIN, "CAA").to_wire(),
    raw_query(qclass=3),
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
    if not tcp:
        assert len(reply) <= 1232


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid query with a few bytes flipped, set, inserted, deleted or cut off."""
    wire = bytearray(draw(st.sampled_from(VALID)))
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
