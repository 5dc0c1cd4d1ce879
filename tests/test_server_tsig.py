"""TSIG on any query, over UDP and TCP (RFC 8945 §5): not only on zone transfers.

Unknown key → NOTAUTH + BADKEY, wrong MAC → NOTAUTH + BADSIG, a TSIG not last → FORMERR,
a valid one → the normal answer, signed (dnspython's client verifies the signature).
"""

from __future__ import annotations

import asyncio
import base64
import struct

import dns.flags
import dns.message
import dns.rcode
import dns.tsig
import pytest
from conftest_server import ORIGIN, example_zone, frame, raw_tcp, raw_udp
from hypothesis import given, settings
from hypothesis import strategies as st
from test_server_conformance import ask, port_of, raw_wire, send, server, texts

from dnsfailover.server import DnsServer, ZoneSnapshot

__all__ = ["server"]  # the fixture

pytestmark = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])


# --- TSIG on any query (RFC 8945 §5) -------------------------------------------------------

KEY = dns.tsig.Key("test-key.", base64.b64encode(b"k" * 32).decode(), dns.tsig.HMAC_SHA256)


def signed(name: str, rdtype: str, key: dns.tsig.Key = KEY) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    query.use_tsig(key)
    return query


@pytest.mark.parametrize(
    ("name", "rdtype"), [(ORIGIN, "SOA"), (f"www.{ORIGIN}", "A"), (f"nope.{ORIGIN}", "TXT")]
)
async def test_signed_query_gets_signed_answer(
    server: DnsServer, tcp: bool, name: str, rdtype: str
) -> None:
    server.keyring = {KEY.name: KEY}
    query = signed(name, rdtype)
    reply = await send(server, query, tcp)  # dnspython checks the reply's TSIG itself
    assert reply.had_tsig
    assert reply.keyname == KEY.name
    assert reply.edns == 0
    unsigned = await ask(server, name, rdtype, tcp)
    assert texts(reply) == texts(unsigned)
    assert reply.rcode() == unsigned.rcode()


async def test_unknown_key_is_notauth_badkey(server: DnsServer, tcp: bool) -> None:
    server.keyring = {KEY.name: KEY}
    other = dns.tsig.Key("other-key.", KEY.secret, dns.tsig.HMAC_SHA256)
    wire = await raw_wire(server, signed(f"www.{ORIGIN}", "A", other).to_wire(), tcp)
    reply = dns.message.from_wire(wire, keyring=False)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert reply.tsig_error == dns.rcode.BADKEY
    assert not reply.answer


async def test_wrong_secret_is_notauth_badsig(server: DnsServer, tcp: bool) -> None:
    server.keyring = {KEY.name: KEY}
    forged = dns.tsig.Key(KEY.name, base64.b64encode(b"x" * 32).decode(), dns.tsig.HMAC_SHA256)
    wire = await raw_wire(server, signed(f"www.{ORIGIN}", "A", forged).to_wire(), tcp)
    reply = dns.message.from_wire(wire, keyring=False)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert reply.tsig_error == dns.rcode.BADSIG
    assert not reply.answer


async def test_tsig_not_last_is_formerr(server: DnsServer, tcp: bool) -> None:
    server.keyring = {KEY.name: KEY}
    query = dns.message.make_query(f"www.{ORIGIN}", "A", use_edns=False)
    query.use_tsig(KEY)
    wire = query.to_wire()
    # move the TSIG before an OPT: count one more additional record and append a plain OPT
    arcount = struct.unpack_from("!H", wire, 10)[0]
    opt = struct.pack("!BHHIH", 0, 41, 1232, 0, 0)
    packet = wire[:10] + struct.pack("!H", arcount + 1) + wire[12:] + opt
    reply = dns.message.from_wire(await raw_wire(server, packet, tcp))
    assert reply.rcode() == dns.rcode.FORMERR
    assert not reply.answer


async def test_tsig_error_reply_keeps_the_opt(server: DnsServer, tcp: bool) -> None:
    other = dns.tsig.Key("other-key.", KEY.secret, dns.tsig.HMAC_SHA256)
    query = signed(f"www.{ORIGIN}", "A", other)
    query.want_dnssec()
    reply = dns.message.from_wire(await raw_wire(server, query.to_wire(), tcp), keyring=False)
    assert reply.tsig_error == dns.rcode.BADKEY
    assert reply.edns == 0  # RFC 6891 §7: an OPT in every reply to an EDNS query
    assert reply.ednsflags & dns.flags.DO


async def test_badvers_comes_before_tsig_and_is_unsigned(server: DnsServer, tcp: bool) -> None:
    server.keyring = {KEY.name: KEY}
    query = dns.message.make_query(f"www.{ORIGIN}", "A", use_edns=1)
    query.use_tsig(KEY)
    reply = dns.message.from_wire(await raw_wire(server, query.to_wire(), tcp), keyring=False)
    assert reply.rcode() == dns.rcode.BADVERS  # as BIND 9.18 answers it
    assert reply.keyname is None


async def test_signed_response_is_dropped(server: DnsServer, tcp: bool) -> None:
    server.keyring = {KEY.name: KEY}
    other = dns.tsig.Key("other-key.", KEY.secret, dns.tsig.HMAC_SHA256)
    response = signed(f"www.{ORIGIN}", "A", other)  # a key we lack: no BADKEY reply either
    response.id = 1
    response.flags |= dns.flags.QR
    query = dns.message.make_query(f"www.{ORIGIN}", "A", id=2)
    if tcp:
        # A frame that gets no answer ends a TCP connection (as BIND does): nothing for it,
        # and the next query goes on a new connection.
        stream = frame(response.to_wire()) + frame(query.to_wire())
        with pytest.raises(asyncio.IncompleteReadError):
            await raw_tcp(port_of(server), stream, 1)
        replies = await raw_tcp(port_of(server), frame(query.to_wire()), 1)
    else:
        replies = await raw_udp(port_of(server), [response.to_wire(), query.to_wire()])
    assert [struct.unpack_from("!H", r)[0] for r in replies] == [2]


# --- no signed input can make the server raise (hypothesis, no sockets) -------------------

_FUZZ = settings(max_examples=400, deadline=None, database=None)
_SIGNED = [signed(f"{n}.{ORIGIN}", t).to_wire() for n, t in [("www", "A"), ("nope", "SOA")]]


def _answer_or_nothing(data: bytes, tcp: bool) -> None:
    srv = DnsServer(ZoneSnapshot.build([example_zone()]), port=0)
    srv.keyring = {KEY.name: KEY}
    reply = srv.answer(data, tcp=tcp)  # must not raise
    if reply is not None:
        assert reply[:2] == data[:2]
        assert reply[2] & 0x80  # QR
        dns.message.from_wire(reply, keyring=False)


@_FUZZ
@given(st.sampled_from(_SIGNED), st.data())
def test_mutated_signed_queries_never_raise(tcp: bool, wire: bytes, data: st.DataObject) -> None:
    mutable = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        mutable[data.draw(st.integers(2, len(mutable) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(12, len(mutable)))
    _answer_or_nothing(bytes(mutable[:cut]), tcp)
