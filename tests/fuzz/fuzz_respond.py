"""libFuzzer (atheris) harness for :func:`dnsfailover.server.wire.respond`.

Not a pytest module (no ``test_`` prefix): run it through ``bench/fuzz_server.py``, or by hand
with ``PYTHONPATH=tests python tests/fuzz/fuzz_respond.py CORPUS_DIR -runs=100000``.
The first input byte picks the transport (bit 0: TCP); the rest is the query.

A crash is an exception escaping ``respond()``, an exception ``respond()`` caught and turned
into SERVFAIL (logged with a traceback), or a reply that breaks the invariants below.
"""

from __future__ import annotations

import logging
import sys

import atheris

with atheris.instrument_imports():
    from conftest_server import example_zone, reverse_zone, sub_zone, weighted_zone, wild_zone

    from dnsfailover.server.wire import DEFAULT_UDP_PAYLOAD, parse, respond
    from dnsfailover.server.zone import ZoneSnapshot

SNAPSHOT = ZoneSnapshot.build(
    [example_zone(), sub_zone(), reverse_zone(), wild_zone(), weighted_zone()]
)


class CaughtException(Exception):
    """respond() caught an exception: a bug even though the client got SERVFAIL."""


class _RaiseOnTraceback(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            raise CaughtException(record.getMessage()) from record.exc_info[1]


def fuzz_one_input(data: bytes) -> None:
    """One fuzz input: respond() must not fail, and its reply must be a valid reply."""
    if not data:
        return
    tcp = bool(data[0] & 1)
    query = data[1:]
    reply = respond(SNAPSHOT, query, tcp=tcp)
    if reply is None:
        if not (len(query) < 12 or query[2] & 0x80):
            raise AssertionError("only runts and responses may be dropped")
        return
    if reply[:2] != query[:2] or not reply[2] & 0x80 or reply[3] & 0x80:
        raise AssertionError("a reply must have the query's ID, QR set and RA clear")
    if not tcp and len(reply) > DEFAULT_UDP_PAYLOAD:
        raise AssertionError(f"UDP reply of {len(reply)} bytes")
    parse(reply)  # dnslib's parser, taking any octet in a label as the server does


def main() -> None:
    logger = logging.getLogger("dnsfailover.server")
    logger.addHandler(_RaiseOnTraceback())
    logger.propagate = False
    atheris.Setup(sys.argv, fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
