"""TSIG on any query (RFC 8945 §5), over UDP and TCP alike.

A query that carries a TSIG is checked before it is answered: a TSIG anywhere but last in
the additional section gets FORMERR (§5.1), a key we do not have NOTAUTH with TSIG error
BADKEY (§5.2.1), a wrong MAC BADSIG (§5.2.2), a clock too far off BADTIME (§5.2.3).  A
valid one gets the normal answer, signed with the same key over the request's MAC (§5.3).
dnslib has no TSIG: dnspython verifies and signs, the answer itself comes from the normal
path as bytes, and the TSIG record is appended to them.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Mapping

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from dnsfailover.server.tsig import tsig_error
from dnsfailover.server.wire import skip_name

log = logging.getLogger("dnsfailover.server")
# Per-query problems are logged at DEBUG: anyone can send a bad TSIG, as often as they like.

Keys = Mapping[dns.name.Name, dns.tsig.Key]
Unsigned = Callable[[bytes, int], bytes | None]
"""The normal answer to a query (without its TSIG), keeping ``reserve`` bytes free."""

_TSIG = int(dns.rdatatype.TSIG)
_FORMERR = int(dns.rcode.FORMERR)
_MAX_MAC = 64  # hmac-sha512
_FUDGE = 300


def tsig_start(data: bytes) -> int | None:
    """Where the query's TSIG record starts; None when it has none (or cannot be read: the
    normal path judges it).

    :raises dns.message.BadTSIG: if a TSIG is anywhere but last in the additional section.
    """
    counts = struct.unpack_from("!4H", data, 4) if len(data) >= 12 else (0, 0, 0, 0)
    if not any(counts[1:]):
        return None
    total = sum(counts[1:])
    pos = 12
    try:
        for _ in range(counts[0]):
            pos = skip_name(data, pos) + 4
        found = None
        for index in range(total):
            start = pos
            pos = skip_name(data, pos)
            rtype, _class, _ttl, rdlength = struct.unpack_from("!HHIH", data, pos)
            pos += 10 + rdlength
            if rtype == _TSIG:
                if index != total - 1 or index < counts[1] + counts[2]:
                    raise dns.message.BadTSIG
                found = start
    except (IndexError, ValueError, struct.error):
        return None
    return found if pos <= len(data) else None


def _formerr(data: bytes) -> bytes:
    """A header-only FORMERR: what is misplaced cannot be trusted to be echoed."""
    qid, flags = struct.unpack_from("!HH", data)
    return struct.pack("!6H", qid, 0x8000 | (flags & 0x7910) | _FORMERR, 0, 0, 0, 0)


def answer(data: bytes, keys: Keys, unsigned: Unsigned) -> bytes | None:
    """The reply to ``data``: ``unsigned(data, 0)`` when it has no TSIG, else checked and
    signed as the module says (None: send nothing)."""
    if len(data) < 12 or data[2] & 0x80:
        return unsigned(data, 0)  # too short, or a response: dropped unseen
    try:
        start = tsig_start(data)
    except dns.message.BadTSIG:
        return _formerr(data)
    if start is None:
        return unsigned(data, 0)
    try:
        return _signed(data, start, keys, unsigned)
    except Exception:  # dnspython may raise more than DNSException on hostile input
        log.debug("query: cannot check its TSIG", exc_info=True)
        return _formerr(data)


def _signed(data: bytes, start: int, keys: Keys, unsigned: Unsigned) -> bytes | None:
    arcount = struct.unpack_from("!H", data, 10)[0] - 1
    stripped = data[:10] + struct.pack("!H", arcount) + data[12:start]
    try:
        # Structure only; bytes after the message are ignored, as the unsigned path does.
        query = dns.message.from_wire(data, keyring=False, ignore_trailing=True)
    except dns.exception.DNSException:
        # Malformed before its TSIG can be checked (dnspython refuses a malformed ECS
        # option, say): the unsigned path's FORMERR keeps the OPT (RFC 6891 §7), unsigned.
        reply = unsigned(stripped, 0)
        formerr = reply is not None and len(reply) >= 12 and reply[3] & 0xF == _FORMERR
        return reply if formerr else _formerr(data)
    if query.edns > 0:
        return unsigned(stripped, 0)  # BADVERS comes first, unsigned (as BIND answers it)
    name = query.keyname
    if name is None or query.tsig is None:
        return _formerr(data)
    key = keys.get(name)
    if key is None or key.algorithm != query.keyalgorithm:
        log.debug("query: unknown TSIG key %s", name)
        return tsig_error(query, dns.rcode.BADKEY)
    try:
        query = dns.message.from_wire(data, keyring={name: key}, ignore_trailing=True)
    except dns.tsig.BadTime:
        log.debug("query: TSIG time out of range, key %s", name)
        return tsig_error(query, dns.rcode.BADTIME)
    except (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm):
        log.debug("query: bad TSIG signature, key %s", name)
        return tsig_error(query, dns.rcode.BADSIG)
    except dns.exception.DNSException:
        return _formerr(data)
    owner = name.to_wire() or b""
    algorithm = key.algorithm.to_wire() or b""
    reserve = len(owner) + 10 + len(algorithm) + 16 + _MAX_MAC
    reply = unsigned(stripped, reserve)
    if reply is None:
        return None
    original_id = query.tsig[0].original_id if query.tsig is not None else query.id
    template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
        dns.rdataclass.ANY,
        dns.rdatatype.TSIG,
        key.algorithm,
        0,
        _FUDGE,
        b"",
        original_id,
        0,
        b"",
    )
    now = int(time.time())
    rdata, _ctx = dns.tsig.sign(reply, key, template, now, query.mac)  # type: ignore[no-untyped-call]
    tsig = rdata.to_wire() or b""
    record = owner + struct.pack("!HHIH", _TSIG, int(dns.rdataclass.ANY), 0, len(tsig)) + tsig
    count = struct.unpack_from("!H", reply, 10)[0] + 1
    return reply[:10] + struct.pack("!H", count) + reply[12:] + record
