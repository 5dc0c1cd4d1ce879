"""TSIG keys (RFC 8945) as dnspython keys, their secrets read by `config.secrets`."""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.tsig

from dnsfailover.config.schema import TsigKeyConfig
from dnsfailover.config.secrets import read_secret

ALGORITHMS: Mapping[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}

Keyring = dict[dns.name.Name, dns.tsig.Key]

_PAYLOAD = 1232  # as `wire.DEFAULT_UDP_PAYLOAD` (not imported: xfr uses this module too)


def make_keyring(keys: Mapping[str, TsigKeyConfig]) -> Keyring:
    """Every configured key as a dnspython key, by absolute key name.

    :raises TsigSecretError: if any secret cannot be read.
    """
    keyring: Keyring = {}
    for name, key in keys.items():
        keyname = key_name(name)
        keyring[keyname] = dns.tsig.Key(keyname, read_secret(name, key), ALGORITHMS[key.algorithm])
    return keyring


def key_name(name: str) -> dns.name.Name:
    """A key name as written in the config (``xfr-key``) as an absolute DNS name."""
    return dns.name.from_text(name)


def tsig_error(query: dns.message.Message, error: int) -> bytes:
    """NOTAUTH with an unsigned TSIG carrying ``error`` (RFC 8945 §5.2.2, §5.2.3)."""
    assert query.tsig is not None
    rd = query.tsig[0]
    wire = response_shell(query, dns.rcode.NOTAUTH).to_wire()
    now = int(time.time())
    other = now.to_bytes(6) if error == dns.rcode.BADTIME else b""
    rdata = (
        (rd.algorithm.to_wire() or b"")
        + now.to_bytes(6)
        + struct.pack("!HHHHH", rd.fudge, 0, rd.original_id, error, len(other))
        + other
    )
    owner = query.tsig.name.to_wire() or b""
    tsig = owner + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
    arcount = int.from_bytes(wire[10:12]) + 1
    return bytes(wire[:10] + arcount.to_bytes(2) + wire[12:] + tsig)


def response_shell(query: dns.message.Message, rcode: int = 0) -> dns.message.Message:
    """An unsigned response (dnspython's make_response signs replies to signed queries)."""
    reply = dns.message.Message(id=query.id)
    reply.flags = dns.flags.QR | (query.flags & (dns.flags.RD | dns.flags.CD))
    reply.set_opcode(query.opcode())
    reply.set_rcode(dns.rcode.Rcode.make(rcode))
    reply.question = list(query.question)
    if query.edns == 0:  # an OPT in every reply to an EDNS query (RFC 6891 §7), DO copied
        reply.use_edns(0, query.ednsflags & dns.flags.DO, _PAYLOAD)
    return reply
