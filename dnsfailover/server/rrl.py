"""Response rate limiting (RRL) for UDP, in the manner of BIND's.

A spoofed-source flood makes an authoritative server a reflector.  RRL counts the responses
sent to each source prefix (/24 for IPv4, /56 for IPv6) per "response kind" (the same qname
and rcode for answers; one bucket per prefix for errors and NXDOMAIN, so random names do not
each get a fresh allowance) with a token bucket.  Over the limit a response is dropped, except
that every ``slip``-th one is sent as an empty TC=1 reply so that a real client behind the
prefix retries over TCP, which cannot be spoofed.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

HEADER_LEN = 12
MAX_ENTRIES = 100_000
"""Buckets kept at most; the least recently used go first (bounded memory under a flood)."""
_TC = 0x0200
_NOERROR = 0


class Action(enum.Enum):
    SEND = "send"
    DROP = "drop"
    SLIP = "slip"  # send a truncated reply instead


@dataclass(frozen=True, slots=True)
class RrlSettings:
    """``responses_per_second`` 0 disables RRL; ``slip`` 0 never slips, 1 slips every drop."""

    responses_per_second: float = 0.0
    slip: int = 2
    window: float = 15.0

    @property
    def enabled(self) -> bool:
        return self.responses_per_second > 0


class _Bucket:
    __slots__ = ("balance", "dropped", "updated")

    def __init__(self, balance: float, now: float) -> None:
        self.balance = balance
        self.updated = now
        self.dropped = 0


def prefix(host: str) -> bytes:
    """The source prefix a bucket is kept for: /24 of IPv4, /56 of IPv6."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.encode()
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.packed[:3]
    packed = addr.packed
    return packed[:3] if len(packed) == 4 else packed[:7]


def _question(reply: bytes) -> tuple[int, bytes] | None:
    """(end of the question, lower-case qname) of a reply, or None if it has none."""
    if len(reply) < HEADER_LEN or struct.unpack_from("!H", reply, 4)[0] != 1:
        return None
    pos = HEADER_LEN
    while pos < len(reply):
        length = reply[pos]
        if length == 0:
            end = pos + 5
            return (end, reply[HEADER_LEN : pos + 1].lower()) if end <= len(reply) else None
        if length > 63:
            return None
        pos += length + 1
    return None


def truncated(reply: bytes) -> bytes:
    """The slip reply: same ID, flags and question, TC set, no records."""
    (flags,) = struct.unpack_from("!H", reply, 2)
    found = _question(reply)
    end = found[0] if found is not None else HEADER_LEN
    header = reply[:2] + struct.pack("!5H", flags | _TC, 1 if found else 0, 0, 0, 0)
    return header + reply[HEADER_LEN:end]


class RateLimiter:
    """Token buckets per (prefix, response kind); ``check`` says what to do with a reply.

    A bucket holds at most one second of responses and may go ``window`` seconds into debt,
    so a steady flood stays limited rather than getting a burst every second.
    """

    def __init__(
        self,
        settings: RrlSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._max_entries = max_entries
        self._buckets: OrderedDict[tuple[bytes, int, bytes], _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, host: str, reply: bytes) -> Action:
        rate = self.settings.responses_per_second
        if rate <= 0 or len(reply) < HEADER_LEN:
            return Action.SEND
        rcode = reply[3] & 0xF
        found = _question(reply) if rcode == _NOERROR else None
        key = (prefix(host), rcode, found[1] if found is not None else b"")
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate, now)
            if len(self._buckets) > self._max_entries:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.balance = min(rate, bucket.balance + elapsed * rate)
            bucket.updated = now
        bucket.balance = max(bucket.balance - 1.0, -rate * self.settings.window)
        if bucket.balance >= 0:
            return Action.SEND
        bucket.dropped += 1
        slip = self.settings.slip
        return Action.SLIP if slip and bucket.dropped % slip == 0 else Action.DROP
