"""NOTIFY to secondaries: a tiny UDP responder on 127.0.0.1:0 that drops the first NOTIFY."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.tsig
import pytest
from conftest_server import ORIGIN, example_zone

from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.notify import Notifier, Secondary
from dnsfailover.server.tsig import key_name

KEY = dns.tsig.Key(key_name("xfr-key"), b"0123456789abcdef0123456789abcdef", dns.tsig.HMAC_SHA256)
WAITS = (0.2, 0.2, 0.2)


class Responder(asyncio.DatagramProtocol):
    """Records every NOTIFY; answers from the ``ignore``-th one on with ``rcode``."""

    def __init__(self, ignore: int, rcode: dns.rcode.Rcode = dns.rcode.NOERROR) -> None:
        self.ignore = ignore
        self.rcode = rcode
        self.received: list[dns.message.Message] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data, keyring={KEY.name: KEY})
        self.received.append(query)
        if len(self.received) <= self.ignore or self.transport is None:
            return
        reply = dns.message.make_response(query)
        reply.set_rcode(self.rcode)
        self.transport.sendto(reply.to_wire(), addr)


async def responder(ignore: int, rcode: dns.rcode.Rcode = dns.rcode.NOERROR) -> tuple[Any, int]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Responder(ignore, rcode), local_addr=("127.0.0.1", 0)
    )
    return (transport, protocol), int(transport.get_extra_info("sockname")[1])


@pytest.fixture
async def secondary() -> AsyncIterator[tuple[Responder, int]]:
    (transport, protocol), port = await responder(ignore=1)
    yield protocol, port
    transport.close()


async def wait_until(predicate: Any) -> None:
    """Poll ``predicate`` for up to 5 s."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


async def test_notify_is_retried_until_acknowledged(
    secondary: tuple[Responder, int], caplog: pytest.LogCaptureFixture
) -> None:
    protocol, port = secondary
    zones = EmbeddedZones()
    notifier = Notifier({ORIGIN: [Secondary("127.0.0.1", port, KEY)]}, waits=WAITS)
    zones.subscribe(notifier)
    caplog.set_level(logging.INFO, "dnsfailover.server.notify")
    zones.put([example_zone(42)])
    await wait_until(lambda: "acknowledged" in caplog.text)
    await notifier.stop()

    assert len(protocol.received) == 2  # the first was dropped, the retry acknowledged
    for message in protocol.received:
        assert message.opcode() == dns.opcode.NOTIFY
        assert message.flags & dns.flags.AA
        assert not message.flags & dns.flags.QR
        assert message.had_tsig
        assert message.question[0].name.to_text() == ORIGIN
        assert message.question[0].rdtype == dns.rdatatype.SOA
        soa = message.answer[0][0]
        assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
        assert soa.serial == 42
    assert f"zone={ORIGIN} serial=42 acknowledged by 127.0.0.1:{port}" in caplog.text
    assert "0123456789abcdef" not in caplog.text
    shown = repr(Secondary("127.0.0.1", port, KEY))
    assert "MDEyMzQ1" not in shown  # base64 of the secret, as dnspython's Key repr shows it
    assert "0123456789abcdef" not in shown


async def test_notify_gives_up_and_a_newer_serial_supersedes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    (silent_t, silent), silent_port = await responder(ignore=100)
    (refusing_t, refusing), refusing_port = await responder(0, dns.rcode.REFUSED)
    try:
        targets = [Secondary("127.0.0.1", silent_port), Secondary("127.0.0.1", refusing_port)]
        notifier = Notifier({ORIGIN: targets}, waits=(0.1, 0.1))
        notifier.notify([example_zone(1)])
        notifier.notify([example_zone(2)])  # replaces the pending NOTIFY of serial 1
        await wait_until(lambda: caplog.text.count("giving up") == 2)
        await notifier.stop()
    finally:
        silent_t.close()
        refusing_t.close()
    serials = [m.answer[0][0].serial for m in silent.received]
    assert serials[-2:] == [2, 2]
    assert f"serial=2 127.0.0.1:{silent_port} did not answer 2 tries; giving up" in caplog.text
    assert f"serial=2 127.0.0.1:{refusing_port} answered REFUSED; giving up" in caplog.text
    assert not message_without_tsig_is_signed(refusing.received)


def message_without_tsig_is_signed(messages: list[dns.message.Message]) -> bool:
    return any(m.had_tsig for m in messages)
