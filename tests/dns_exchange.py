"""Send many DNS queries to one server over UDP and TCP, and reduce each reply to what a
client can compare between servers (for tests/test_differential_bind.py)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Sequence

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

HOST = "127.0.0.1"


# --- sending -------------------------------------------------------------------------------


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.by_id: dict[int, bytes] = {}
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) >= 2:
            self.by_id.setdefault(struct.unpack_from("!H", data)[0], data)
            self.arrived.set()


async def _udp(port: int, batch: list[tuple[int, bytes]], idle: float) -> dict[int, bytes]:
    """Send every datagram of ``batch`` (ids unique), 50 at a time, and gather replies.

    Each burst waits until all its replies came or none came for ``idle`` seconds, so no
    socket buffer overflows; what got no reply is sent once more at the end, as any UDP
    client does (a query both servers drop on purpose is dropped again)."""
    loop = asyncio.get_running_loop()
    transport, replies = await loop.create_datagram_endpoint(_Replies, remote_addr=(HOST, port))
    try:
        for attempt in range(2):
            todo = [(qid, wire) for qid, wire in batch if qid not in replies.by_id]
            for start in range(0, len(todo), 50):
                burst = todo[start : start + 50]
                for _, wire in burst:
                    transport.sendto(wire)
                while any(qid not in replies.by_id for qid, _ in burst):
                    replies.arrived.clear()
                    try:
                        await asyncio.wait_for(replies.arrived.wait(), idle * (attempt + 1))
                    except TimeoutError:
                        break
        return dict(replies.by_id)
    finally:
        transport.close()


async def _tcp(port: int, wire: bytes, limit: asyncio.Semaphore) -> bytes | None:
    async with limit:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            async with asyncio.timeout(1.0):
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                return await reader.readexactly(length)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def exchange(port: int, batch: Sequence[tuple[bytes, bool]]) -> list[bytes | None]:
    """Each (query, over TCP?)'s reply from the server on ``port`` (None: no reply)."""
    udp = [(i, wire) for i, (wire, over_tcp) in enumerate(batch) if not over_tcp]
    limit = asyncio.Semaphore(16)
    tcp = {
        i: asyncio.ensure_future(_tcp(port, wire, limit))
        for i, (wire, over_tcp) in enumerate(batch)
        if over_tcp
    }
    got = await _udp(port, udp, idle=0.2)
    await asyncio.gather(*tcp.values())
    out: list[bytes | None] = []
    for i, (wire, over_tcp) in enumerate(batch):
        if over_tcp:
            out.append(tcp[i].result())
        else:
            qid = struct.unpack_from("!H", wire)[0] if len(wire) >= 2 else -1
            out.append(got.get(qid))
    return out


# --- comparing -----------------------------------------------------------------------------

_FLAGS = (
    dns.flags.QR | dns.flags.AA | dns.flags.TC | dns.flags.RD | dns.flags.RA
    | dns.flags.AD | dns.flags.CD
)  # fmt: skip


def _rrs(section: list[dns.rrset.RRset]) -> frozenset[str]:
    """RRs as text, names (owners and inside rdata) without case: we compress caselessly,
    so a name in our rdata may read in the question's spelling (RFC 4343 §3: equal)."""
    return frozenset(
        f"{rrset.name.canonicalize()} {rrset.ttl} {dns.rdataclass.to_text(rrset.rdclass)} "
        f"{dns.rdatatype.to_text(rrset.rdtype)} "
        + (rd.to_text().lower() if rrset.rdtype in _NAMED_RDATA else rd.to_text())
        for rrset in section
        for rd in rrset
    )


_NAMED_RDATA = {
    dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.SOA, dns.rdatatype.MX,
    dns.rdatatype.PTR, dns.rdatatype.SRV,
}  # fmt: skip
"""Types whose rdata is names and numbers only: lower-casing their text changes no data."""


def summary(wire: bytes | None) -> dict[str, object]:
    """What a client can see of a reply, comparable between servers."""
    if wire is None:
        return {"reply": None}
    try:
        m = dns.message.from_wire(wire, keyring=False)  # MACs differ: compare the rest
    except Exception as e:  # compare what the header says
        _qid, flags, *counts = struct.unpack_from("!6H", wire.ljust(12, b"\0"))
        return {"unparsed": type(e).__name__, "rcode": flags & 0xF, "counts": tuple(counts)}
    return {
        "opcode": dns.opcode.to_text(m.opcode()),
        "rcode": dns.rcode.to_text(m.rcode()),
        "flags": dns.flags.to_text(m.flags & _FLAGS),
        "question": [(str(q.name.canonicalize()), q.rdclass, q.rdtype) for q in m.question],
        "edns": m.edns,
        "do": bool(m.ednsflags & dns.flags.DO),
        "payload": m.payload if m.edns >= 0 else None,
        "options": sorted(o.otype for o in m.options),
        "answer": _rrs(m.answer),
        "authority": _rrs(m.authority),
        "additional": _rrs(m.additional),
        "tsig": (m.keyname is not None, m.tsig_error),
    }
