"""Batched UDP receive and send (recvmmsg/sendmmsg) and the C hit path; the C extension in
_mmsg.c and _hits.c."""

from collections.abc import Sequence

def recv_batch(fd: int, max_messages: int, bufsize: int = 4096) -> list[tuple[bytes, str, bytes]]:
    """Waits for a datagram, then takes what is queued (up to ``max_messages``): for each, the
    data, the sender's address as text and its raw sockaddr (for :func:`send_batch`).
    Datagrams longer than ``bufsize`` are dropped; an empty list on a non-blocking socket
    with nothing queued."""

def send_batch(fd: int, messages: Sequence[tuple[bytes, bytes]]) -> int:
    """Sends (data, sockaddr) pairs with sendmmsg(), skipping any a destination refuses;
    returns how many went out (OSError when none did)."""

class Cycle:
    """A rotation through ``order`` (indices), shared by Python and the C hit path."""

    def __init__(self, order: Sequence[int]) -> None: ...
    def pick(self) -> int:
        """The next turn's index; every call advances the rotation (atomically)."""

class HitTable:
    """The UDP (or, with ``tcp``, TCP) templates of one fast-path table, in C memory (see
    fast.FastTable); a UDP key's EDNS variant counts a payload of at least
    ``max_udp_payload`` apart, and an ECS echo must fit 512 bytes (not over TCP)."""

    def __init__(self, max_udp_payload: int, tcp: bool = False) -> None: ...
    def put(
        self,
        question: bytes,
        keyed: int,
        variant: int,
        templates: Sequence[bytes],
        cycle: Cycle | None = None,
        carry: bool = False,
    ) -> None:
        """Answer the key (question without case, keyed flags, EDNS variant) with its
        template, or with one template per choice of a weighted set's ``cycle``; ``carry``:
        the reply is made of its name's own records alone (see :meth:`carried`)."""
    def clear(self) -> None: ...
    def carried(self, names: Sequence[bytes]) -> HitTable:
        """A new table with this one's ``carry`` entries, but weighted ones and those whose
        question's name is one of ``names`` (lower-case wire names): shared, not copied."""
    def reply(self, data: bytes) -> bytes | None:
        """The hit path's reply to one query (for UDP exactly what UdpLoop sends), or None."""
    def __len__(self) -> int: ...

class UdpLoop:
    """A UDP socket answered by the C hit path: recvmmsg, hits answered and sent with
    sendmmsg without the GIL; only misses come back to Python."""

    def __init__(self, fd: int, max_messages: int, bufsize: int = 65535) -> None: ...
    def set_table(self, hits: HitTable | None, owner: object) -> None:
        """Answer from ``hits`` (None: every datagram is a miss) from the next batch on;
        :meth:`run` returns ``owner`` with the misses of a batch that table answered."""
    def run(self) -> tuple[object, list[tuple[bytes, str, bytes]]]:
        """Answers hits until a batch has misses, then returns (owner, misses): each as
        (data, sender's address as text, raw sockaddr).  (owner, []) after :meth:`stop`."""
    def stop(self) -> None:
        """Make :meth:`run` return after its current wait (shut the socket down to end it)."""
    def counts(self) -> list[int]:
        """Replies the hit path sent, by the header's rcode (16 counts)."""
