"""Zones and raw-socket helpers shared by the embedded server's test modules."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from dnsfailover.model import RecordSet, Soa, ZoneContent
from dnsfailover.server import ZoneSnapshot

ORIGIN = "example.test."
SUB = "sub.example.test."
REVERSE = "2.0.192.in-addr.arpa."
BIG_COUNT = 60
HUGE_COUNT = 100


def soa(origin: str, serial: int, *, ttl: int = 3600, minimum: int = 300) -> Soa:
    return Soa(f"ns1.{origin}", f"hostmaster.{origin}", serial, 7200, 900, 1209600, minimum, ttl)


def zone(
    origin: str, serial: int, records: Iterable[tuple[str, str, Sequence[str]]]
) -> ZoneContent:
    """A zone from (relative name or "@", type, values); TTL 300 everywhere."""
    sets = [
        RecordSet(
            origin if name == "@" else f"{name}.{origin}".replace("..", "."),
            rtype,
            300,
            tuple(values),
        )
        for name, rtype, values in records
    ]
    return ZoneContent(
        origin, soa(origin, serial), tuple(sorted(sets, key=lambda r: (r.name, r.rtype)))
    )


def example_zone(serial: int = 1, www: str = "192.0.2.1") -> ZoneContent:
    return zone(
        ORIGIN,
        serial,
        [
            ("@", "NS", [f"ns1.{ORIGIN}", f"ns2.{ORIGIN}"]),
            ("@", "MX", [f"10 mail.{ORIGIN}"]),
            ("@", "TXT", ['"v=spf1 -all"']),
            ("@", "CAA", ['0 issue "letsencrypt.org"']),
            ("ns1", "A", ["192.0.2.53"]),
            ("mail", "A", ["192.0.2.25"]),
            ("www", "A", [www]),
            ("www", "AAAA", ["2001:db8::1"]),
            ("alias", "CNAME", [f"www.{ORIGIN}"]),
            ("chain1", "CNAME", [f"chain2.{ORIGIN}"]),
            ("chain2", "CNAME", [f"alias.{ORIGIN}"]),
            ("loop1", "CNAME", [f"loop2.{ORIGIN}"]),
            ("loop2", "CNAME", [f"loop1.{ORIGIN}"]),
            ("external", "CNAME", ["www.elsewhere.invalid."]),
            ("dangling", "CNAME", [f"missing.{ORIGIN}"]),
            ("a.b", "TXT", ['"hello world"']),
            ("drained", "A", []),  # all_down=serve_none: the name exists, NODATA
            ("big", "A", [f"10.0.0.{i}" for i in range(1, BIG_COUNT + 1)]),
            ("huge", "A", [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(HUGE_COUNT)]),
            ("_sip._udp", "SRV", [f"0 5 5060 sip.{ORIGIN}"]),
        ],
    )


def weighted_zone(serial: int = 70) -> ZoneContent:
    """A zone with weighted answer sets (one address per query) and a CNAME into one."""
    origin = "weighted.test."
    plain = zone(
        origin,
        serial,
        [
            ("@", "NS", [f"ns1.{origin}"]),
            ("ns1", "A", ["192.0.2.53"]),
            ("alias", "CNAME", [f"w.{origin}"]),
        ],
    )
    weighted = (
        RecordSet(f"w.{origin}", "A", 30, ("192.0.2.1", "192.0.2.2", "192.0.2.3"), (5, 3, 0)),
        RecordSet(f"w.{origin}", "AAAA", 30, ("2001:db8::1", "2001:db8::2"), (1, 255)),
    )
    records = tuple(sorted(plain.records + weighted, key=lambda r: (r.name, r.rtype)))
    return ZoneContent(origin, plain.soa, records)


def sub_zone(serial: int = 50) -> ZoneContent:
    return zone(SUB, serial, [("@", "NS", [f"ns1.{SUB}"]), ("host", "A", ["198.51.100.1"])])


def reverse_zone(serial: int = 7) -> ZoneContent:
    return zone(REVERSE, serial, [("@", "NS", [f"ns1.{ORIGIN}"]), ("1", "PTR", [f"www.{ORIGIN}"])])


def example_snapshot(serial: int = 1, www: str = "192.0.2.1") -> ZoneSnapshot:
    return ZoneSnapshot.build([example_zone(serial, www), sub_zone(), reverse_zone()])


def raw_query(
    name: bytes = b"\x03www\x07example\x04test\x00",
    *,
    qid: int = 0x1234,
    flags: int = 0x0100,
    qtype: int = 1,
    qclass: int = 1,
    qdcount: int = 1,
) -> bytes:
    """A query built by hand, for what dnspython refuses to build."""
    question = name + struct.pack("!HH", qtype, qclass)
    return struct.pack("!6H", qid, flags, qdcount, 0, 0, 0) + question * qdcount


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.replies.put_nowait(data)


async def raw_udp(port: int, packets: Sequence[bytes], wait: float = 0.3) -> list[bytes]:
    """Send packets from one socket; return every reply that arrives within ``wait``."""
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(
        _Collector, remote_addr=("127.0.0.1", port)
    )
    try:
        for packet in packets:
            transport.sendto(packet)
        replies: list[bytes] = []
        try:
            while True:
                replies.append(await asyncio.wait_for(collector.replies.get(), wait))
        except TimeoutError:
            return replies
    finally:
        transport.close()


async def raw_tcp(port: int, stream: bytes, replies: int, wait: float = 2.0) -> list[bytes]:
    """Write ``stream`` on one connection and read ``replies`` framed replies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(stream)
        await writer.drain()
        out: list[bytes] = []
        async with asyncio.timeout(wait):
            for _ in range(replies):
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                out.append(await reader.readexactly(length))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


def frame(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


WILD = "wild.test."


def wild_zone(serial: int = 3) -> ZoneContent:
    """Wildcards (RFC 4592), empty non-terminals and a delegation, for the conformance suite."""
    return zone(
        WILD,
        serial,
        [
            ("@", "NS", [f"ns1.{WILD}"]),
            ("ns1", "A", ["192.0.2.53"]),
            ("*", "A", ["192.0.2.100"]),
            ("*", "TXT", ['"wild"']),
            ("host", "A", ["192.0.2.10"]),
            ("*.alias", "CNAME", [f"host.{WILD}"]),
            ("*.loop", "CNAME", [f"x.loop.{WILD}"]),
            ("a.ent", "TXT", ['"under an empty non-terminal"']),
            ("*.drained", "A", []),
            ("sub", "NS", [f"ns.sub.{WILD}", "ns.elsewhere.invalid."]),
            ("ns.sub", "A", ["192.0.2.54"]),
            ("ns.sub", "AAAA", ["2001:db8::54"]),
            ("www.sub", "A", ["192.0.2.99"]),  # occluded by the delegation
            ("deeper.sub", "NS", [f"ns1.{WILD}"]),  # occluded too
            ("into-sub", "CNAME", [f"www.sub.{WILD}"]),
        ],
    )
