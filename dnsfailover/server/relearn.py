"""New replies for the address questions a publish changed, made before anyone asks.

A failover changes the A/AAAA sets of many names at once, and the fast path drops their
templates (`FastTable.carried`).  Without this, each one's next query takes the full path
(~130 µs of Python each: 10,000 names are over a second of the interpreter right when the
answers matter).  Their old templates say how the reply is laid out: the header, the
question, then the answer's records, each owned by the question (a pointer to offset 12),
and maybe our plain OPT.  For a name whose new answer is again its own plain A/AAAA set
(not weighted, steered, a CNAME, or signed for a DO query), the new reply is that layout
with the new records: `synthesize` writes it, and `relearn` files it in the table (and the
C hit path) right after the swap, on the server's relearn thread.

The first template of every relearn pass is checked against the full path's reply to the
same question; a difference stops the pass (logged): the full path stays the reference.
The property tests (tests/test_relearn.py) hold every synthesized template equal to it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from dnsfailover.server.replay import question_labels, replayable
from dnsfailover.server.wire import HEADER_LEN

if TYPE_CHECKING:
    from dnsfailover.server.zone import ZoneSnapshot

Key = tuple[bytes, int, int, bool]
"""A fast-path key (`fast.Key`): question without case, keyed flags, EDNS variant, TCP."""


class FastTable(Protocol):
    """What this module uses of a `fast.FastTable`."""

    trusted: bool

    @property
    def stale(self) -> dict[Key, bytes]: ...
    @property
    def snapshot(self) -> ZoneSnapshot: ...
    def limit(self, key: Key) -> int: ...
    def adopt(self, key: Key, template: bytes) -> None: ...
    def full_reply(self, key: Key) -> bytes | None: ...


log = logging.getLogger("dnsfailover.server")

_A, _AAAA = 1, 28
_OWNER = b"\xc0\x0c"  # a pointer to the question's name
_OPT_LEN = 11  # our plain OPT: root owner, type, payload, flags, rdlength 0


def synthesize(snapshot: ZoneSnapshot, key: Key, old: bytes, limit: int) -> bytes | None:
    """The template for `key` in `snapshot`, laid out as `old` (its template in the previous
    version), or None when this is not a plain own-name address answer in both."""
    question, _keyed, variant, tcp = key
    qtype = int.from_bytes(question[-4:-2], "big")
    if qtype not in (_A, _AAAA):
        return None
    name = question_labels(question[:-4])
    zone = snapshot.find_zone(name)
    if zone is None or name not in zone.names or name in zone.cname_targets:
        return None
    found = zone.rrsets.get((name, qtype))
    if not found or (name, qtype) in zone.weighted or (name, qtype) in zone.steered:
        return None
    if zone.secure is not None and variant in (2, 4):  # DO in a signed zone: RRSIGs too
        return None
    qend = HEADER_LEN + len(question)
    tail = _old_tail(old, qend, qtype, variant)
    if tail is None:
        return None
    size = 4 if qtype == _A else 16
    records = []
    for rr in found:
        rdata = bytes(rr.rdata.data)  # (dnslib's A and AAAA hold their address octets)
        if len(rdata) != size:
            return None
        records.append(_OWNER + struct.pack("!HHIH", qtype, rr.rclass, rr.ttl, size) + rdata)
    # (the question as the key spells it: `old` may hold the spelling it was learnt from)
    made = old[:6] + struct.pack("!H", len(records)) + old[8:12] + question
    made += b"".join(records) + tail
    return made if replayable(made, question, qend, tcp, limit) else None


def _old_tail(old: bytes, qend: int, qtype: int, variant: int) -> bytes | None:
    """The OPT that ends `old` (b"" without EDNS), if `old` is a positive answer of only
    `qtype` records owned by the question; else None."""
    if len(old) < qend or old[3] & 0x0F or old[8:10] != b"\0\0":  # NOERROR, no authority
        return None
    count, pos = int.from_bytes(old[6:8], "big"), qend
    for _ in range(count):
        if old[pos : pos + 2] != _OWNER or int.from_bytes(old[pos + 2 : pos + 4], "big") != qtype:
            return None
        pos += 12 + int.from_bytes(old[pos + 10 : pos + 12], "big")
    tail = old[pos:]
    if count == 0 or old[10:12] != (b"\0\1" if variant else b"\0\0"):
        return None
    if len(tail) != (_OPT_LEN if variant else 0) or (tail and tail[:3] != b"\0\0\x29"):
        return None
    return tail


def relearn(table: FastTable, current: Callable[[], bool]) -> int:
    """Files new templates for the keys `table` has to relearn (see the module); stops when
    `current()` is false (a newer table is served).  Returns how many it filed.  The UDP
    thread remakes the keys it is asked for meanwhile (`remade`) once one was checked."""
    made = 0
    stale = table.stale
    for key in list(stale):
        if not current():
            break
        old = stale.pop(key, None)
        if old is None:
            continue  # (remade by a query meanwhile)
        template = synthesize(table.snapshot, key, old, table.limit(key))
        if template is None:
            continue
        if not table.trusted:
            if not _as_full_path(table, key, template):
                stale.clear()
                return made
            table.trusted = True
        table.adopt(key, template)
        made += 1
    return made


def remade(table: FastTable, key: Key) -> bytes | None:
    """The new template of a changed `key` a query asks for before `relearn` got to it
    (None: it cannot be made from the old one; the full path answers)."""
    old = table.stale.pop(key, None)
    if old is None:
        return None
    template = synthesize(table.snapshot, key, old, table.limit(key))
    if template is not None:
        table.adopt(key, template)
    return template


def _as_full_path(table: FastTable, key: Key, template: bytes) -> bool:
    if table.full_reply(key) == template:
        return True
    log.warning("fast path: a relearnt template differs from the full path's reply; skipped")
    return False
