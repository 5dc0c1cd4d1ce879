"""The bytes of fast-path replies: which queries a template may answer (`split_query`),
the query a template is made from (`canonical`), and how a template becomes the reply to
one query (`patch`, with the query's ECS option echoed by `echo` or `with_option`).

See :mod:`dnsfailover.server.fast` for why replaying a template is exact.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from socket import AF_INET, AF_INET6, inet_pton
from typing import TYPE_CHECKING, Protocol

from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.steering import Steering
from dnsfailover.rdata import Labels
from dnsfailover.server.steered import ecs_client, ecs_scope
from dnsfailover.server.wire import HEADER_LEN, MIN_UDP_PAYLOAD, respond

if TYPE_CHECKING:
    from dnsfailover.server.steered import Where
    from dnsfailover.server.zone import ZoneSnapshot

_RD = 0x0100
_AD = 0x0020
_CD = 0x0010
KEYED_FLAGS = _AD | _CD
"""Query flags that may change a reply and so are part of the key; RD is patched."""
_OPT_TYPE = 41
_ECS = 8  # EDNS Client Subnet (RFC 7871)
_IN = 1
_DO = 0x8000
_TC = 0x0200
_NS, _SOA, _ANY = 2, 6, 255


def split_query(data: bytes) -> tuple[int, int, int] | None:
    """Where a query we may fast-path ends its question, and its EDNS variant.

    :returns: (end of the question, keyed flags, EDNS variant: 0 none, 1 OPT, 2 OPT+DO),
        or None when the query is not of the plain kind the table serves.
    """
    if len(data) < HEADER_LEN + 5:
        return None
    flags, qd, an, ns, ar = struct.unpack_from("!5H", data, 2)
    # QR=0, opcode QUERY, rcode 0, no AA/TC/RA/Z; one question; at most the OPT.
    if flags & ~(_RD | KEYED_FLAGS) or qd != 1 or an or ns or ar > 1:
        return None
    pos = HEADER_LEN
    end = len(data)
    while True:
        if pos >= end:
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:  # a compression pointer or a reserved label type: let respond() judge
            return None
        pos += length + 1
    if pos - HEADER_LEN > 255 or pos + 4 > end:
        return None
    qclass = (data[pos + 2] << 8) | data[pos + 3]
    pos += 4
    if qclass != _IN:
        return None
    if ar == 0:
        return (pos, flags & KEYED_FLAGS, 0) if pos == end else None
    # The one additional record must be an OPT: root owner, version 0, and no option but
    # at most one well-formed EDNS Client Subnet (answered as without it, the option echoed).
    if end - pos < 11 or data[pos] != 0:
        return None
    rtype, _payload, ext_rcode, version, z, rdlen = struct.unpack_from("!HHBBHH", data, pos + 1)
    if rtype != _OPT_TYPE or ext_rcode or version or z & ~_DO or pos + 11 + rdlen != end:
        return None
    if rdlen and not plain_ecs(data, pos + 11):
        return None
    return pos, flags & KEYED_FLAGS, 2 if z & _DO else 1


def plain_ecs(data: bytes, start: int) -> bool:
    """Whether `data[start:]` is exactly one ECS option of a query that the full path
    accepts (`geo.ecs.parse`): family 1 or 2, source prefix within the family, as many
    address octets as the prefix needs and no bit set past it, scope 0.  Its reply is the
    one without it with the option echoed (SCOPE 0: no answer depends on the client yet)."""
    if len(data) - start < 8:
        return False
    code, length, family, source, scope = struct.unpack_from("!HHHBB", data, start)
    address = data[start + 8 :]
    if code != _ECS or length != len(address) + 4 or scope:
        return False
    if family not in (1, 2) or source > (32 if family == 1 else 128):
        return False
    if len(address) != (source + 7) // 8:
        return False
    return not (source % 8 and address[-1] & (0xFF >> (source % 8)))


def echo(reply: bytes, data: bytes, qend: int, tcp: bool) -> bytes | None:
    """`reply` (to the query without its ECS option) with the query's option echoed in the
    reply's OPT, its last record; None when it would not fit in a plain UDP reply."""
    option = data[qend + 11 :]
    if not option:  # (`with_option`, inlined: this is every plain hit's path)
        return reply
    if not tcp and len(reply) + len(option) > MIN_UDP_PAYLOAD:
        return None
    if reply[-11] != 0 or reply[-10:-8] != b"\0\x29" or reply[-2:] != b"\0\0":
        return None  # not ending in our plain OPT: let the full path answer
    return reply[:-2] + struct.pack("!H", len(option)) + option


def with_option(reply: bytes, option: bytes, tcp: bool) -> bytes | None:
    """`reply` with `option` (a whole ECS option: code, length, data) in its OPT, the last
    record; None when it would not fit in a plain UDP reply."""
    if not option:
        return reply
    if not tcp and len(reply) + len(option) > MIN_UDP_PAYLOAD:
        return None
    if reply[-11] != 0 or reply[-10:-8] != b"\0\x29" or reply[-2:] != b"\0\0":
        return None  # not ending in our plain OPT: let the full path answer
    return reply[:-2] + struct.pack("!H", len(option)) + option


def scoped(option: bytes, scope: int) -> bytes:
    """An ECS option (code, length, FAMILY, SOURCE, SCOPE, ADDRESS) with SCOPE `scope`."""
    return option[:7] + bytes((scope,)) + option[8:] if option else option


def canonical(
    question: bytes, keyed_flags: int, variant: int, payload: int = MIN_UDP_PAYLOAD
) -> bytes:
    """The query a template is made from: ID 0, RD clear, UDP payload 512 (`payload` for
    the variants above 2: the large payload ones, `fast.LARGE`)."""
    header = struct.pack("!6H", 0, keyed_flags, 1, 0, 0, 1 if variant else 0)
    if not variant:
        return header + question
    z = _DO if variant in (2, 4) else 0
    size = payload if variant > 2 else MIN_UDP_PAYLOAD
    return header + question + struct.pack("!BHHBBHH", 0, _OPT_TYPE, size, 0, 0, z, 0)


def patch(template: bytes, data: bytes, qend: int) -> bytes:
    """The template with the query's ID, RD bit (the template's RD is clear) and question.

    Names are compressed caselessly (`wire.pack`), so later names point at the question and
    copying the query's spelling of it over the template's gives what the full path gives.
    """
    flags = bytes((template[2] | (data[2] & 1),))
    return data[:2] + flags + template[3:HEADER_LEN] + data[HEADER_LEN:qend] + template[qend:]


def positive(template: bytes) -> bool:
    """A NOERROR reply with an answer and no authority section (no SOA in it)."""
    return not template[3] & 0x0F and template[6:8] != b"\0\0" and template[8:10] == b"\0\0"


def question_labels(qname: bytes) -> Labels:
    """Lower-case labels of a wire name without compression (a question's)."""
    labels: list[bytes] = []
    pos = 0
    while pos < len(qname) and (length := qname[pos]):
        labels.append(qname[pos + 1 : pos + 1 + length].lower())
        pos += length + 1
    return tuple(labels)


def replayable(template: bytes | None, question: bytes, qend: int, tcp: bool, limit: int) -> bool:
    """Whether `template` (a reply to `question`) may be replayed: over UDP only untruncated
    and at most `limit` bytes."""
    return (
        template is not None
        and len(template) >= qend
        and template[HEADER_LEN:qend].lower() == question.lower()
        and (tcp or (len(template) <= limit and not template[2] << 8 & _TC))
    )


def own_name(snapshot: ZoneSnapshot, template: bytes, question: bytes) -> Labels | None:
    """The name whose records alone make this reply, or None (see `FastTable.carried`)."""
    qtype = int.from_bytes(question[-4:-2], "big")
    # NS answers carry their in-zone nameservers' addresses: other names' records
    if not positive(template) or qtype in (_SOA, _ANY, _NS):
        return None
    name = question_labels(question[:-4])
    zone = snapshot.find_zone(name)
    if zone is None or name not in zone.names or name in zone.cname_targets:
        return None
    return name


class Responder(Protocol):
    """The full path: the reply to a query from a snapshot; ``where`` places the client for
    steered names (only passed when the table steers)."""

    def __call__(
        self,
        snapshot: ZoneSnapshot,
        data: bytes,
        tcp: bool,
        max_udp_payload: int,
        where: Where | None = None,
        /,
    ) -> bytes | None: ...


def full_path(
    snapshot: ZoneSnapshot,
    data: bytes,
    tcp: bool,
    max_udp_payload: int,
    where: Where | None = None,
    /,
) -> bytes | None:
    return respond(snapshot, data, tcp=tcp, max_udp_payload=max_udp_payload, where=where)


MAX_PLACEMENTS = 65_536
"""Placements remembered, by (steered name, client network or address): a steered hit
that finds one costs a dict look-up, not a database look-up; when full, it starts over."""


def replay_steered(
    steering: Steering,
    rule_of: dict[str, Hashable],
    placed: dict[tuple[Hashable, bytes, str], tuple[str, bytes]],
    limits: SourceLimits,
    queries: dict[tuple[str, str], int],
    steered: tuple[str, dict[str, bytes]],
    data: bytes,
    qend: int,
    tcp: bool,
    client: str | None,
) -> bytes | None:
    """The fast path's reply to a steered key (`fast.FastTable`): the template of its
    client's group (None: no template for that group yet, or the client cannot be placed
    here: the full path answers).  `rule_of`, `placed` and `queries` are the table's caches
    and counts, updated here."""
    option = data[qend + 11 :]  # the query's ECS option, if any (`split_query`)
    source = option[6] if option else 0
    # ECS with SOURCE > 0: the network decides; else the source address
    rule = rule_of.get(steered[0])
    if rule is None:
        try:
            rule = rule_of[steered[0]] = steering.table_of(steered[0])
        except KeyError:  # not steered by this steering: the full path says
            return None
    at_key = (rule, option, "" if source else client or "")
    found = placed.get(at_key)
    if found is None:
        try:
            if source:
                version, value = ecs_client(option, source, limits)
            elif client:
                packed = inet_pton(AF_INET6 if ":" in client else AF_INET, client)
                version, value = 4 if len(packed) == 4 else 6, int.from_bytes(packed)
            else:
                return None
            placement = steering.place_value(steered[0], version, value)
        except Exception:  # an unreadable address, a failing database: the full path says
            return None
        found = (placement.group, scoped(option, ecs_scope(option, placement.scope, limits)))
        if len(placed) >= MAX_PLACEMENTS:
            placed.clear()
        if MAX_PLACEMENTS:
            placed[at_key] = found
    template = steered[1].get(found[0])
    if not template:
        return None
    at = (steered[0], found[0])
    queries[at] = queries.get(at, 0) + 1
    return with_option(patch(template, data, qend), found[1], tcp)


def rotor_turn(snapshot: ZoneSnapshot, question: bytes) -> Callable[[], int] | None:
    """The turn of the weighted set a question's name answers from in `snapshot`."""
    name = question_labels(question[:-4])
    zone = snapshot.find_zone(name)
    rotor = zone.weighted.get((name, int.from_bytes(question[-4:-2]))) if zone else None
    return None if rotor is None else rotor.pick


def wire_name(labels: Labels) -> bytes:
    """A name's uncompressed wire form, lower-case (the C table's spelling)."""
    return b"".join(bytes((len(label),)) + label.lower() for label in labels) + b"\0"
