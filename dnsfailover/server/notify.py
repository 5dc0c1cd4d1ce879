"""Outgoing NOTIFY (RFC 1996): tell secondaries a zone changed, so they transfer it at once.

The :class:`Notifier` is an :class:`~dnsfailover.embedded.EmbeddedZones` listener.  For every
zone whose serial changed it sends a NOTIFY over UDP to each configured secondary and
retries with backoff until the secondary acknowledges; a newer serial replaces a pending
NOTIFY for the same zone and target.  Nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig

from dnsfailover.config.schema import Config
from dnsfailover.model import ZoneContent, hostport
from dnsfailover.server.tsig import Keyring, key_name
from dnsfailover.server.versions import ZoneChange
from dnsfailover.server.xfr import soa_rrset

log = logging.getLogger("dnsfailover.server.notify")

WAITS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Seconds to wait for an answer after each try: five tries, about 31 s in all."""


@dataclass(frozen=True, slots=True)
class Secondary:
    """Where to send NOTIFY, and the key to sign it with (None: unsigned)."""

    address: str
    port: int
    # dnspython's Key repr shows the secret: keep it out of repr() and comparisons.
    key: dns.tsig.Key | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:  # never shows the key's secret (dnspython's repr does)
        return hostport(self.address, self.port)


def notify_message(content: ZoneContent, key: dns.tsig.Key | None) -> dns.message.Message:
    """A NOTIFY for ``content``: opcode NOTIFY, AA, question ORIGIN SOA, the SOA as answer."""
    message = dns.message.make_query(content.origin, dns.rdatatype.SOA)
    message.flags = dns.flags.AA  # and no RD; the opcode lives in the flags too: set it after
    message.set_opcode(dns.opcode.NOTIFY)
    message.answer.append(soa_rrset(content.origin, content.soa))
    if key is not None:
        message.use_tsig(key)
    return message


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        pass  # port unreachable and the like: the secondary is not up yet; keep retrying


class Notifier:
    """Sends NOTIFY for changed zones to their secondaries (``targets`` by zone origin)."""

    def __init__(
        self, targets: Mapping[str, Sequence[Secondary]], *, waits: Sequence[float] = WAITS
    ) -> None:
        self._targets = {origin: tuple(t) for origin, t in targets.items() if t}
        self._waits = tuple(waits)
        self._loop = asyncio.get_running_loop()
        self._tasks: dict[tuple[str, Secondary], asyncio.Task[bool]] = {}
        self._closed = False

    def retarget(self, targets: Mapping[str, Sequence[Secondary]]) -> None:
        """A reload: later serials are announced to these secondaries."""
        self._targets = {origin: tuple(t) for origin, t in targets.items() if t}

    def __call__(self, _zones: object, changes: list[ZoneChange]) -> None:
        """The EmbeddedZones listener: may be called from any thread."""
        changed = [c.new for c in changes]
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self.notify(changed)
        else:
            self._loop.call_soon_threadsafe(self.notify, changed)

    def notify(self, zones: Iterable[ZoneContent]) -> None:
        """Start notifying every secondary of each zone, replacing older pending NOTIFYs."""
        if self._closed:
            return
        for content in zones:
            for target in self._targets.get(content.origin, ()):
                key = (content.origin, target)
                pending = self._tasks.get(key)
                if pending is not None:
                    pending.cancel()  # superseded by this serial
                task = self._loop.create_task(
                    self._send(content, target), name=f"notify {content.origin} {target}"
                )
                self._tasks[key] = task
                task.add_done_callback(partial(self._done, key))

    def _done(self, key: tuple[str, Secondary], task: asyncio.Task[bool]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    async def _send(self, content: ZoneContent, target: Secondary) -> bool:
        """Send and retry until acknowledged; True if the secondary acknowledged."""
        serial = content.soa.serial
        transport, protocol = await self._loop.create_datagram_endpoint(
            _Replies, remote_addr=(target.address, target.port)
        )
        try:
            for attempt, wait in enumerate(self._waits, start=1):
                query = notify_message(content, target.key)
                transport.sendto(query.to_wire())
                verdict = await self._await_reply(protocol, query, target, wait)
                if verdict is None:
                    log.debug(
                        "notify: zone=%s serial=%d %s: no answer (try %d)",
                        content.origin,
                        serial,
                        target,
                        attempt,
                    )
                    continue
                if verdict == dns.rcode.NOERROR:
                    log.info(
                        "notify: zone=%s serial=%d acknowledged by %s",
                        content.origin,
                        serial,
                        target,
                    )
                    return True
                log.warning(
                    "notify: zone=%s serial=%d %s answered %s; giving up",
                    content.origin,
                    serial,
                    target,
                    dns.rcode.to_text(dns.rcode.Rcode(verdict)),
                )
                return False
            log.warning(
                "notify: zone=%s serial=%d %s did not answer %d tries; giving up",
                content.origin,
                serial,
                target,
                len(self._waits),
            )
            return False
        finally:
            transport.close()

    @staticmethod
    async def _await_reply(
        protocol: _Replies, query: dns.message.Message, target: Secondary, wait: float
    ) -> int | None:
        """The rcode of the secondary's answer to ``query``, or None if none came in time."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while True:
                    data = await protocol.queue.get()
                    try:
                        reply = dns.message.from_wire(
                            data,
                            keyring=target.key if target.key is not None else None,
                            request_mac=query.mac or b"",
                        )
                    except (dns.exception.DNSException, ValueError):
                        continue  # not a valid (or validly signed) answer: keep waiting
                    if (
                        reply.id == query.id
                        and reply.flags & dns.flags.QR
                        and reply.opcode() == dns.opcode.NOTIFY
                    ):
                        return int(reply.rcode())
        return None

    async def stop(self) -> None:
        """Cancel pending NOTIFYs and wait for them to end."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


def secondaries(config: Config, keyring: Keyring) -> dict[str, tuple[Secondary, ...]]:
    """Each embedded zone's `also_notify`, with its keys from ``keyring``."""
    return {
        origin: tuple(
            Secondary(t.address, t.port, keyring[key_name(t.key)] if t.key else None)
            for t in zone.also_notify
        )
        for origin, zone in config.zones.items()
        if zone.also_notify
    }
