"""Bytes in, bytes out: parse a query, apply EDNS and size limits, and never raise.

:func:`respond` is what both transports call.  It is synchronous and pure apart from
logging, so it can be fuzzed without sockets.
"""

from __future__ import annotations

import logging
import struct

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, DNSBuffer, DNSHeader, DNSQuestion, DNSRecord

from dnsfailover.server.rdata import MAX_LABEL, MAX_NAME_WIRE
from dnsfailover.server.zone import ZoneSnapshot

log = logging.getLogger("dnsfailover.server")

HEADER_LEN = 12
MIN_UDP_PAYLOAD = 512
DEFAULT_UDP_PAYLOAD = 1232
"""What we advertise and the most we send over UDP (DNS flag day 2020: avoid fragments)."""
MAX_TCP_MESSAGE = 0xFFFF

_OPT = int(QTYPE.OPT)
_QUERY = int(OPCODE.QUERY)
_UPDATE = int(OPCODE.UPDATE)
_SOA = int(QTYPE.SOA)
_FORMERR = int(RCODE.FORMERR)
_SERVFAIL = int(RCODE.SERVFAIL)
_BADVERS = 16  # RFC 6891: extended rcode, upper 8 bits travel in the OPT record
_MAX_ADDITIONAL = 2  # OPT and, one day, TSIG (as NSD allows)
_QR = 0x8000
_OPCODE_MASK = 0x7800
_RD = 0x0100
_CD = 0x0010


def respond(
    snapshot: ZoneSnapshot,
    data: bytes,
    *,
    tcp: bool,
    max_udp_payload: int = DEFAULT_UDP_PAYLOAD,
) -> bytes | None:
    """The wire reply to one query, or None when the query must be dropped.

    Dropped: anything shorter than a header, and responses (QR=1).  A header followed by
    garbage gets FORMERR with the query's ID.  Never raises.
    """
    if len(data) < HEADER_LEN:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    if flags & _QR:
        return None
    try:
        return _respond(snapshot, data, tcp=tcp, max_udp_payload=max_udp_payload)
    except Exception:
        log.warning("query: cannot answer id=%d", qid, exc_info=True)
        return _header_only(qid, flags, _SERVFAIL)


def _header_only(qid: int, flags: int, rcode: int) -> bytes:
    """A reply with no sections, built by hand so that it cannot fail."""
    reply_flags = _QR | (flags & (_OPCODE_MASK | _RD | _CD)) | rcode
    return struct.pack("!6H", qid, reply_flags, 0, 0, 0, 0)


def _is_query(flags: int) -> bool:
    return flags & _OPCODE_MASK == _QUERY << 11


def _parse(data: bytes) -> DNSRecord:
    """Parse a query; for opcodes we do not implement, only the header and one question."""
    (flags,) = struct.unpack_from("!H", data, 2)
    if _is_query(flags):
        return DNSRecord.parse(data)
    # UPDATE and NOTIFY bodies (e.g. empty-rdata deletes) need not parse for a NOTIMP reply.
    buffer = DNSBuffer(data)
    header = DNSHeader.parse(buffer)
    try:
        questions = [DNSQuestion.parse(buffer)] if int(header.q) == 1 else []
    except Exception:
        questions = []
    if int(header.opcode) == _UPDATE and any(int(q.qtype) != _SOA for q in questions):
        questions = []  # RFC 2136 §3.1.1: a zone section must be SOA; don't echo a bad one
    return DNSRecord(header, questions)


def _names_ok(request: DNSRecord) -> bool:
    # dnslib accepts labels of 64-191 bytes and names over 255 bytes, then fails to pack them.
    for question in request.questions:
        labels = question.qname.label
        if any(len(label) > MAX_LABEL for label in labels):
            return False
        if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME_WIRE:
            return False
    return True


def _respond(snapshot: ZoneSnapshot, data: bytes, *, tcp: bool, max_udp_payload: int) -> bytes:
    qid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", data)
    if _is_query(flags) and (qdcount != 1 or ancount or nscount or arcount > _MAX_ADDITIONAL):
        # Checked before parsing: dnslib follows compression pointers recursively, so a
        # large message full of names would be costly to parse just to refuse it.
        return _header_only(qid, flags, _FORMERR)
    try:
        request = _parse(data)
    except Exception as e:  # dnslib raises DNSError, UnicodeDecodeError, RecursionError, ...
        log.debug("query: malformed id=%d: %s", qid, e)
        return _header_only(qid, flags, _FORMERR)
    if not _names_ok(request):
        return _header_only(qid, flags, _FORMERR)

    opts = [rr for rr in request.ar if int(rr.rtype) == _OPT]
    if len(opts) > 1:
        return _header_only(qid, flags, _FORMERR)
    opt = opts[0] if opts else None
    ours = max(MIN_UDP_PAYLOAD, max_udp_payload)

    if opt is not None and int(opt.edns_ver) > 0:
        reply = DNSRecord(DNSHeader(id=qid, bitmap=0, qr=1, rd=request.header.rd))
        reply.add_question(*request.questions[:1])
        reply.add_ar(EDNS0(udp_len=ours, ext_rcode=_BADVERS >> 4))
        reply.header.rcode = _BADVERS & 0xF
        return bytes(reply.pack())

    reply = snapshot.resolve(request)
    if opt is not None:
        reply.add_ar(EDNS0(udp_len=ours))
    wire = bytes(reply.pack())

    if tcp:
        limit = MAX_TCP_MESSAGE
    elif opt is None:
        limit = MIN_UDP_PAYLOAD
    else:
        limit = min(ours, max(MIN_UDP_PAYLOAD, int(opt.edns_len)))
    if len(wire) <= limit:
        return wire
    if tcp:
        log.warning("query: answer of %d bytes does not fit a TCP message", len(wire))
        return _header_only(qid, flags, _SERVFAIL)
    # Too big for UDP: the question (and OPT) only, with TC set, so the client retries on TCP.
    truncated = DNSRecord(DNSHeader(id=qid, bitmap=reply.header.bitmap, tc=1))
    truncated.add_question(*reply.questions)
    truncated.add_ar(*reply.ar)
    return bytes(truncated.pack())
