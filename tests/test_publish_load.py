"""bench/publish_load.py, CI-sized: 100 publishes a second for 2 s while dnsperf runs and two
checkers check every reply is exactly one published version's (and never an older one); and
the checks themselves catch a server that keeps a changed name's old answer."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from pathlib import Path

import dns.message
import dns.rrset
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import publish_load  # noqa: E402
from publish_load import ORIGIN, Inconsistent, seen_version  # noqa: E402

from dnsfailover.rdata import Labels  # noqa: E402
from dnsfailover.server import embedded  # noqa: E402
from dnsfailover.server.versions import ZoneChange  # noqa: E402


def test_every_reply_is_one_published_version_under_load() -> None:
    result = asyncio.run(publish_load.run(2, 100, 2, with_dnsperf=True))
    assert result.inconsistent == []
    assert result.loaded is not None
    assert result.loaded.malformed == 0
    assert result.loaded.completed > 0
    assert "SERVFAIL" not in result.loaded.rcodes
    assert "FORMERR" not in result.loaded.rcodes
    assert result.publishes > 20
    assert result.checked > 20
    assert result.versions > 5  # the checkers' replies came from many versions


def test_the_checks_catch_a_name_answered_from_an_old_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A publish that does not tell the server v5 changed: its learnt reply is carried into
    every later table (a stale, half-swapped answer), and the checkers say so."""
    stale: Labels = (b"v5", b"load", b"test")

    def forgetful(changes: Iterable[ZoneChange]) -> frozenset[Labels] | None:
        names = real(changes)
        return None if names is None else names - {stale}

    real = embedded.changed_names
    monkeypatch.setattr(embedded, "changed_names", forgetful)
    result = asyncio.run(publish_load.run(3, 20, 2, with_dnsperf=True))
    assert any("v5" in m.lower() for m in result.inconsistent), result.inconsistent


def _reply(name: str, rtype: str, *rrsets: dns.rrset.RRset) -> tuple[dns.message.Message, bytes]:
    query = dns.message.make_query(name, rtype)
    reply = dns.message.make_response(query)
    for rrset in rrsets:
        if rrset.rdtype == 6:
            reply.authority.append(rrset)
        else:
            reply.answer.append(rrset)
    return query, reply.to_wire()


def test_a_reply_is_read_as_its_version_or_rejected() -> None:
    v3 = f"v3.{ORIGIN}"
    soa = f"ns1.{ORIGIN} hostmaster.{ORIGIN} {{}} 7200 900 1209600 300"

    def rr(name: str, rtype: str, *values: str) -> dns.rrset.RRset:
        return dns.rrset.from_text(name, 30, "IN", rtype, *values)

    assert seen_version(*_reply(v3, "A", rr(v3, "A", "10.1.2.3", "10.1.2.103"))) == 258
    assert seen_version(*_reply(v3, "TXT", rr(v3, "TXT", '"258"'))) == 258
    assert seen_version(*_reply(v3, "AAAA", rr(ORIGIN, "SOA", soa.format(9)))) == 9
    p = f"p.{ORIGIN}"
    assert seen_version(*_reply(p, "A", rr(ORIGIN, "SOA", soa.format(9)))) == 9
    bad = [
        _reply(v3, "A", rr(v3, "A", "10.1.2.3", "10.1.3.103")),  # two versions in one set
        _reply(v3, "A", rr(v3, "A", "10.1.2.4", "10.1.2.103")),  # another name's answer
        _reply(p, "A", rr(ORIGIN, "SOA", soa.format(8))),  # p has an A record in version 8
        _reply(p, "TXT", rr(p, "TXT", '"8"')),  # ... and no TXT
        _reply(v3, "AAAA"),  # NODATA without the SOA
    ]
    for query, wire in bad:
        with pytest.raises(Inconsistent):
            seen_version(query, wire)
    query, wire = _reply(v3, "TXT", rr(v3, "TXT", '"1"'))
    with pytest.raises(Inconsistent):
        seen_version(query, wire[:-3])  # truncated: does not parse
