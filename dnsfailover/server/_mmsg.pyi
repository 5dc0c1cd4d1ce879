"""Batched UDP receive and send (recvmmsg/sendmmsg); the C extension in _mmsg.c."""

from collections.abc import Sequence

def recv_batch(fd: int, max_messages: int, bufsize: int = 4096) -> list[tuple[bytes, str, bytes]]:
    """Waits for a datagram, then takes what is queued (up to ``max_messages``): for each, the
    data, the sender's address as text and its raw sockaddr (for :func:`send_batch`).
    Datagrams longer than ``bufsize`` are dropped; an empty list on a non-blocking socket
    with nothing queued."""

def send_batch(fd: int, messages: Sequence[tuple[bytes, bytes]]) -> int:
    """Sends (data, sockaddr) pairs with sendmmsg(), skipping any a destination refuses;
    returns how many went out (OSError when none did)."""
