"""The CH TXT answer naming the server process (RFC 4892: ``id.server.``, ``hostname.bind.``).

Its header follows BIND 9.18's: QR and AA set (the server is the authority for its own
name), RD and CD copied from the query (RFC 1035 §4.1.1, RFC 4035 §3.2.2), RA, AD and Z
clear.  Only a plain QUERY is answered here (its ECS echoed with SCOPE 0, as every answer
echoes it); any other opcode, a second OPT, one of another version or a malformed ECS takes
the full path (NOTIMP, FORMERR, BADVERS) like any other name.
"""

from __future__ import annotations

import struct

from dnslib import CLASS, QTYPE, RR, TXT, DNSHeader, DNSRecord

from dnsfailover.server.wire import (
    MIN_UDP_PAYLOAD,
    client_subnet,
    edns_of,
    opt_record,
    parse_query,
)

_NAMES = frozenset({b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"})
_TAIL = b"\x00\x10\x00\x03"  # qtype TXT, qclass CH
_TXT, _CH = int(QTYPE.TXT), int(CLASS.CH)
_OPCODE_MASK = 0x7800


def is_identity_question(data: bytes) -> bool:
    """Whether ``data`` asks CH TXT id.server. or hostname.bind. (RFC 4892), any case."""
    for name in _NAMES:
        end = 12 + len(name)
        if data[12:end].lower() == name and data[end : end + 4] == _TAIL:
            return True
    return False


def identity_reply(data: bytes, identity: str, max_udp_payload: int) -> bytes | None:
    """The CH TXT answer naming this server, or None: not such a query, or one the full path
    must judge (malformed, a response, another opcode, an OPT we do not answer plainly)."""
    if not is_identity_question(data) or len(data) < 12:
        return None
    (flags,) = struct.unpack_from("!H", data, 2)
    if flags & _OPCODE_MASK:
        return None  # NOTIFY, UPDATE, ...: NOTIMP from the full path
    try:
        request, opts = parse_query(data)
        edns = edns_of(request, opts)
        subnet = client_subnet(edns[0]) if edns else None
    except Exception:
        return None  # malformed, or a malformed ECS: the full path answers FORMERR
    header = request.header
    if header.qr or len(request.questions) != 1 or request.rr or request.auth:
        return None
    if edns is None:
        return None  # several OPTs, a non-root owner, version > 0, other records
    reply = DNSRecord(DNSHeader(id=header.id, bitmap=0, qr=1, aa=1, rd=header.rd))
    reply.header.cd = header.cd
    reply.add_question(request.q)
    reply.add_answer(RR(request.q.qname, _TXT, _CH, 0, TXT(identity)))
    if edns:
        reply.add_ar(opt_record(max(MIN_UDP_PAYLOAD, max_udp_payload), edns[0], subnet=subnet))
    return bytes(reply.pack())
