"""Bytes in, bytes out: parse a query, apply EDNS and size limits, and never raise.

:func:`respond` is what both transports call.  It is synchronous and pure apart from
logging, so it can be fuzzed without sockets.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from dnslib import (
    EDNS0,
    OPCODE,
    QTYPE,
    RCODE,
    RR,
    DNSBuffer,
    DNSError,
    DNSHeader,
    DNSLabel,
    DNSLabelError,
    DNSQuestion,
    DNSRecord,
    EDNSOption,
)
from dnslib.bimap import BimapError
from dnslib.buffer import BufferError as _BufferError

from dnsfailover.geo import ecs
from dnsfailover.geo.ecs import ClientSubnet
from dnsfailover.geo.errors import EcsFormatError
from dnsfailover.rdata import MAX_LABEL, MAX_NAME_WIRE
from dnsfailover.server.steered import Where
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
_DO = 0x8000  # in the OPT TTL field


class _CaselessBuffer(DNSBuffer):  # type: ignore[misc]  # dnslib is untyped
    """Compresses names without regard to case, as RFC 1035 compares them.

    dnslib matches compression targets case-sensitively, so a query for `WwW.Example.test`
    made a reply laid out differently from one for `www.example.test`.  Caseless matching
    points every later name at the question's spelling, so the reply's layout is the same
    whatever the query's case (0x20 resolvers randomise it) and only the question's bytes
    differ, which lets the fast path replay one template for every spelling.
    """

    def encode_name(self, name: object) -> None:
        label = name if isinstance(name, DNSLabel) else DNSLabel(name)
        if len(label) > 253:
            raise DNSLabelError(f"Domain label too long: {label!r}")
        labels: list[bytes] = list(label.label)
        while labels:
            key = tuple(part.lower() for part in labels)
            if key in self.names:
                self.pack("!H", self.names[key] | 0xC000)
                return
            self.names[key] = self.offset
            element = labels.pop(0)
            if len(element) > 63:
                raise DNSLabelError(f"Label component too long: {element!r}")
            self.pack("!B", len(element))
            self.append(element)
        self.append(b"\x00")


class _OctetBuffer(DNSBuffer):  # type: ignore[misc]  # dnslib is untyped
    """Reads names whose labels hold any octet (RFC 2181 §11).

    dnslib refuses labels that are not UTF-8, so a query for ``caf\\233.example.test``
    got a header-only FORMERR; BIND answers it like any other name.
    """

    offset: int

    def decode_name(self, last: int = -1) -> DNSLabel:
        labels: list[bytes] = []
        limit = self.offset  # every pointer must go back before the last one's target
        resume = None
        while True:
            (length,) = self.unpack("!B")
            if length & 0xC0 == 0xC0:
                pointer = ((length & 0x3F) << 8) | self.unpack("!B")[0]
                if pointer >= limit:
                    raise _BufferError(f"bad name pointer at offset {self.offset - 2}")
                if resume is None:
                    resume = self.offset
                self.offset = limit = pointer
            elif length & 0xC0:
                raise _BufferError(f"reserved label type at offset {self.offset - 1}")
            elif length == 0:
                break
            else:
                labels.append(bytes(self.get(length)))
        if resume is not None:
            self.offset = resume
        return DNSLabel(labels)


def parse(data: bytes) -> DNSRecord:
    """`DNSRecord.parse`, accepting names with any octet (see `_OctetBuffer`)."""
    return _parse_message(data)[0]


def _parse_message(data: bytes) -> tuple[DNSRecord, list[bytes]]:
    """:func:`parse`, and the RDATA of each OPT record of the additional section as sent.

    dnslib's OPT options lose a last option of length 0 (an empty ECS option must still
    get FORMERR), so the options are read from these bytes (:func:`client_subnet`).
    """
    buffer = _OctetBuffer(data)
    options: list[bytes] = []
    try:
        header = DNSHeader.parse(buffer)
        questions = [DNSQuestion.parse(buffer) for _ in range(header.q)]
        answer = [RR.parse(buffer) for _ in range(header.a)]
        authority = [RR.parse(buffer) for _ in range(header.auth)]
        additional = []
        for _ in range(header.ar):
            start = buffer.offset
            rr = RR.parse(buffer)
            if int(rr.rtype) == _OPT:
                (rdlength,) = struct.unpack_from("!H", data, skip_name(data, start) + 8)
                options.append(data[buffer.offset - rdlength : buffer.offset])
            additional.append(rr)
    except DNSError:
        raise
    except (_BufferError, BimapError) as e:
        raise DNSError(f"cannot parse the message at offset {buffer.offset}: {e}") from e
    record = DNSRecord(header, questions, answer, auth=authority, ar=additional)
    return record, options


def pack(record: DNSRecord) -> bytes:
    """`record.pack()`, with caseless name compression."""
    record.set_header_qa()
    buffer = _CaselessBuffer()
    record.header.pack(buffer)
    for section in (record.questions, record.rr, record.auth, record.ar):
        for item in section:
            item.pack(buffer)
    return bytes(buffer.data)


def respond(
    snapshot: ZoneSnapshot,
    data: bytes,
    *,
    tcp: bool,
    max_udp_payload: int = DEFAULT_UDP_PAYLOAD,
    reserve: int = 0,
    where: Where | None = None,
) -> bytes | None:
    """The wire reply to one query, or None when the query must be dropped.

    Dropped: anything shorter than a header, and responses (QR=1).  A header followed by
    garbage gets FORMERR with the query's ID.  Never raises.  ``reserve``: bytes the reply
    must leave free within the size limit (for a TSIG appended to it).  ``where``: the
    client, for steered names (None: every client gets the default answers); the ECS echo
    of a steered answer carries the SCOPE of its placement.
    """
    if len(data) < HEADER_LEN:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    if flags & _QR:
        return None
    try:
        return _respond(
            snapshot, data, tcp=tcp, max_udp_payload=max_udp_payload, reserve=reserve, where=where
        )
    except Exception:
        log.warning("query: cannot answer id=%d", qid, exc_info=True)
        return _header_only(qid, flags, _SERVFAIL)


def _header_only(qid: int, flags: int, rcode: int) -> bytes:
    """A reply with no sections, built by hand so that it cannot fail."""
    reply_flags = _QR | (flags & (_OPCODE_MASK | _RD | _CD)) | rcode
    return struct.pack("!6H", qid, reply_flags, 0, 0, 0, 0)


def _is_query(flags: int) -> bool:
    return flags & _OPCODE_MASK == _QUERY << 11


@dataclass(frozen=True, slots=True)
class _Edns:
    """What we use of a query's OPT record (RFC 6891 §6.1.3): the rest is ignored.

    ``options``: the OPT's RDATA as sent (read for ECS only; empty for opcodes other than
    QUERY, which get NOTIMP whatever their options say).
    """

    payload: int
    version: int
    do: bool
    root_owner: bool
    options: bytes = b""


def parse_query(data: bytes) -> tuple[DNSRecord, list[_Edns]]:
    """Parse a QUERY (with dnslib: :func:`parse`) and its OPT records, in order.

    :raises Exception: whatever dnslib raises on a malformed message (DNSError and more).
    """
    request, options = _parse_message(data)
    opts = [
        _Edns(int(rr.edns_len), int(rr.edns_ver), bool(rr.edns_do), not rr.rname.label, raw)
        for rr, raw in zip((rr for rr in request.ar if int(rr.rtype) == _OPT), options, strict=True)
    ]
    return request, opts


def client_subnet(edns: _Edns) -> ClientSubnet | None:
    """The query's EDNS Client Subnet (RFC 7871), or None without one.

    Every ECS option is checked; the first one is the client's (BIND, which also checks
    them all, uses the first).  Other options are ignored (RFC 6891 §6.1.2), as are bytes
    too few to hold an option header after the last option (as dnslib does).

    :raises EcsFormatError: if an ECS option is malformed: the query gets FORMERR.
    """
    options, pos, found = edns.options, 0, None
    while pos + 4 <= len(options):
        code, length = struct.unpack_from("!HH", options, pos)
        pos += 4 + length
        if code == ecs.OPTION_CODE:
            if pos > len(options):  # dnslib refuses this first; keep the check local
                raise EcsFormatError("ECS option runs past the end of the OPT record")
            subnet = ecs.parse(options[pos - length : pos])
            found = subnet if found is None else found
    return found


def _parse(data: bytes) -> tuple[DNSRecord, list[_Edns]]:
    """Parse a query and its OPT records.

    For opcodes we do not implement, only the header, one question and the OPT are read.
    """
    (flags,) = struct.unpack_from("!H", data, 2)
    if _is_query(flags):
        return parse_query(data)
    # UPDATE and NOTIFY bodies (e.g. empty-rdata deletes) need not parse for a NOTIMP reply.
    buffer = _OctetBuffer(data)
    header = DNSHeader.parse(buffer)
    try:
        questions = [DNSQuestion.parse(buffer)] if int(header.q) == 1 else []
    except Exception:
        questions = []
    opts = _scan_opts(data, buffer.offset) if len(questions) == int(header.q) else []
    if int(header.opcode) == _UPDATE and any(int(q.qtype) != _SOA for q in questions):
        questions = []  # RFC 2136 §3.1.1: a zone section must be SOA; don't echo a bad one
    return DNSRecord(header, questions), opts


def skip_name(data: bytes, pos: int) -> int:
    """The offset just after the (possibly compressed) name at ``pos``."""
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length > MAX_LABEL:
            raise ValueError("reserved label type")
        pos += length + 1


def _scan_opts(data: bytes, pos: int) -> list[_Edns]:
    """The OPT records of a message whose question section ends at ``pos``, read by hand.

    Used where dnslib cannot parse the body (UPDATE prerequisites); a message that ends
    early or is malformed counts as having no OPT, since it is answered NOTIMP either way.
    """
    counts = struct.unpack_from("!3H", data, 6)
    opts: list[_Edns] = []
    try:
        for index in range(sum(counts)):
            owner = pos
            pos = skip_name(data, pos)
            rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, pos)
            pos += 10 + rdlength
            if pos > len(data):
                return []
            if rtype == _OPT and index >= counts[0] + counts[1]:
                root = data[owner] == 0
                opts.append(_Edns(rclass, (ttl >> 16) & 0xFF, bool(ttl & _DO), root))
    except (IndexError, ValueError, struct.error):
        return []
    return opts


def _names_ok(request: DNSRecord) -> bool:
    # dnslib accepts labels of 64-191 bytes and names over 255 bytes, then fails to pack them.
    for question in request.questions:
        labels = question.qname.label
        if any(len(label) > MAX_LABEL for label in labels):
            return False
        if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME_WIRE:
            return False
    return True


def _opt(
    payload: int,
    query: _Edns,
    rcode: int = 0,
    subnet: ClientSubnet | None = None,
    scope: int = 0,
) -> RR:
    """Our OPT: version 0, our payload size, the query's DO bit (RFC 3225 §3), and no
    options but the query's ECS echoed (RFC 7871 §7.2.1) when ``subnet`` is given.

    The SCOPE PREFIX-LENGTH is ``scope``: 0 unless the answer depends on the client's
    address (a steered name).
    """
    flags = "do" if query.do else ""
    if subnet is None:
        return EDNS0(udp_len=payload, ext_rcode=rcode >> 4, flags=flags)
    echo = EDNSOption(ecs.OPTION_CODE, ecs.reply_option(subnet, scope))
    return EDNS0(udp_len=payload, ext_rcode=rcode >> 4, flags=flags, opts=[echo])


opt_record = _opt


def edns_of(request: DNSRecord, opts: list[_Edns]) -> list[_Edns] | None:
    """The query's one plain OPT (``[edns]``), ``[]`` without EDNS, or None when its
    additional section holds anything else (other records, several OPTs, version > 0).

    ``opts``: the query's OPT records, from :func:`parse_query`.
    """
    if len(opts) != len(request.ar) or len(opts) > 1:
        return None
    if opts and (opts[0].version or not opts[0].root_owner):
        return None
    return opts


def _respond(
    snapshot: ZoneSnapshot,
    data: bytes,
    *,
    tcp: bool,
    max_udp_payload: int,
    reserve: int = 0,
    where: Where | None = None,
) -> bytes:
    qid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", data)
    if _is_query(flags) and (qdcount > 1 or ancount or nscount or arcount > _MAX_ADDITIONAL):
        # Checked before parsing: dnslib follows compression pointers recursively, so a
        # large message full of names would be costly to parse just to refuse it.
        return _header_only(qid, flags, _FORMERR)
    try:
        request, opts = _parse(data)
    except Exception as e:  # dnslib raises DNSError, UnicodeDecodeError, RecursionError, ...
        log.debug("query: malformed id=%d: %s", qid, e)
        return _header_only(qid, flags, _FORMERR)
    if not _names_ok(request):
        return _header_only(qid, flags, _FORMERR)

    ours = max(MIN_UDP_PAYLOAD, max_udp_payload)
    opt = opts[0] if opts else None
    if opt is not None and (len(opts) > 1 or not opt.root_owner or opt.version > 0):
        rcode = _BADVERS if len(opts) == 1 and opt.root_owner else _FORMERR
        return _edns_error(qid, request, opt, ours, rcode)
    subnet = None
    if opt is not None and opt.options:
        try:
            subnet = client_subnet(opt)
        except EcsFormatError as e:  # RFC 7871 §7.2.1: FORMERR, with our OPT (RFC 6891 §7)
            log.debug("query: malformed ECS id=%d: %s", qid, e)
            return _edns_error(qid, request, opt, ours, _FORMERR)

    if where is not None:
        where.use(subnet)
    reply = snapshot.resolve(request, where, opt is not None and opt.do)
    scope = where.scope(subnet) if where is not None and subnet is not None else 0
    if opt is not None:
        reply.add_ar(_opt(ours, opt, subnet=subnet, scope=scope))
    wire = pack(reply)

    if tcp:
        limit = MAX_TCP_MESSAGE
    elif opt is None:
        limit = MIN_UDP_PAYLOAD
    else:
        limit = min(ours, max(MIN_UDP_PAYLOAD, opt.payload))
    if len(wire) <= limit - reserve:
        return wire
    if tcp:
        log.warning("query: answer of %d bytes does not fit a TCP message", len(wire))
        return _header_only(qid, flags, _SERVFAIL)
    # Too big for UDP: the question (and OPT) only, with TC set, so the client retries on TCP.
    truncated = DNSRecord(DNSHeader(id=qid, bitmap=reply.header.bitmap, tc=1))
    truncated.add_question(*reply.questions)
    if opt is not None:
        truncated.add_ar(_opt(ours, opt, subnet=subnet, scope=scope))
    return pack(truncated)


def _edns_error(qid: int, request: DNSRecord, opt: _Edns, ours: int, rcode: int) -> bytes:
    """FORMERR or BADVERS for the query's EDNS: the question and our OPT, no answer."""
    reply = DNSRecord(DNSHeader(id=qid, bitmap=0, qr=1, opcode=request.header.opcode))
    reply.header.rd = request.header.rd
    reply.header.cd = request.header.cd
    reply.add_question(*request.questions[:1])
    reply.header.rcode = rcode & 0xF
    reply.add_ar(_opt(ours, opt, rcode))
    return pack(reply)
