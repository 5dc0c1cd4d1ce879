"""Building snapshots and answering from them, without sockets."""

from __future__ import annotations

import dataclasses

import dns.rdata
import pytest
from conftest_server import (
    ORIGIN,
    SUB,
    WILD,
    example_snapshot,
    example_zone,
    soa,
    sub_zone,
    wild_zone,
    zone,
)
from dnslib import QTYPE, RCODE, DNSBuffer, DNSRecord

from dnsfailover.config.load import loads
from dnsfailover.engine.decide import build_zone
from dnsfailover.errors import ConfigError
from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.rdata import ZoneBuildError, name_labels, parse_rdata, tokenize
from dnsfailover.server import ZoneSnapshot


@pytest.mark.parametrize(
    ("rtype", "value"),
    [
        ("A", "192.0.2.1"),
        ("AAAA", "2001:db8::1"),
        ("AAAA", "::ffff:192.0.2.1"),
        ("CNAME", "target.example.test."),
        ("NS", "ns1.example.test."),
        ("PTR", "www.example.test."),
        ("MX", "10 mail.example.test."),
        ("SRV", "0 5 5060 sip.example.test."),
        ("TXT", '"hello world"'),
        ("TXT", '"a\\"b" "two" unquoted'),
        ("TXT", '"x\\065y" "caf\\195\\169" "semi;colon" "back\\\\slash"'),
        ("TXT", '"café"'),
        ("TXT", '""'),
        ("TXT", '"' + "x" * 255 + '"'),
        ("CAA", '0 issue "letsencrypt.org"'),
        ("CAA", '128 iodef "mailto:security@example.test"'),
        ("CAA", '0 issuewild ";"'),
    ],
)
def test_rdata_wire_matches_dnspython(rtype: str, value: str) -> None:
    buffer = DNSBuffer()
    parse_rdata(rtype, value).pack(buffer)
    assert bytes(buffer.data) == dns.rdata.from_text("IN", rtype, value).to_wire()


@pytest.mark.parametrize(
    ("rtype", "value"),
    [
        ("A", "256.0.0.1"),
        ("A", "::1"),
        ("AAAA", "192.0.2.1"),
        ("CNAME", "relative.name"),
        ("CNAME", "two. names."),
        ("MX", "mail.example.test."),
        ("MX", "70000 mail.example.test."),
        ("SRV", "0 5 sip.example.test."),
        ("TXT", '"unterminated'),
        ("TXT", '"' + "x" * 256 + '"'),
        ("TXT", '"bad \\999 escape"'),
        ("TXT", ""),
        ("CAA", "0 issue"),
        ("CAA", '300 issue "x"'),
        ("HINFO", '"cpu" "os"'),
        ("NS", "a" * 64 + ".example.test."),
    ],
)
def test_bad_rdata_is_rejected(rtype: str, value: str) -> None:
    with pytest.raises(ZoneBuildError):
        parse_rdata(rtype, value)


def test_tokenize_quoted_and_escaped() -> None:
    assert tokenize('"a b" c\\ d "\\"" \\065') == [b"a b", b"c d", b'"', b"A"]


def test_names_are_lower_cased_labels() -> None:
    assert name_labels("WwW.Example.TEST.") == (b"www", b"example", b"test")
    assert name_labels(".") == ()


def _with(content: ZoneContent, *extra: RecordSet) -> ZoneContent:
    return ZoneContent(content.origin, content.soa, content.records + extra)


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ([_with(example_zone(), RecordSet(f"alias.{ORIGIN}", "TXT", 60, ('"x"',)))], "coexist"),
        ([_with(example_zone(), RecordSet("www.other.test.", "A", 60, ("192.0.2.1",)))], "outside"),
        ([_with(example_zone(), RecordSet(f"www.{ORIGIN}", "A", 60, ("192.0.2.2",)))], "twice"),
        ([_with(example_zone(), RecordSet(f"x.{ORIGIN}", "HINFO", 60, ('"a" "b"',)))], "HINFO"),
        ([_with(example_zone(), RecordSet(f"drained.{ORIGIN}", "A", 60, ("192.0.2.9",)))], "twice"),
        ([_with(example_zone(), RecordSet(f"x.{ORIGIN}", "A", -1, ("192.0.2.1",)))], "TTL"),
        ([_with(example_zone(), RecordSet(ORIGIN, "CNAME", 60, (f"www.{ORIGIN}",)))], "apex"),
        ([example_zone(), example_zone(serial=2)], "more than once"),
        ([ZoneContent(ORIGIN, soa(ORIGIN, 2**32), ())], "SOA"),
        ([_with(example_zone(), RecordSet(f"*.{ORIGIN}", "NS", 60, (f"ns1.{ORIGIN}",)))], "wild"),
        (
            [
                _with(
                    example_zone(),
                    RecordSet(f"cut.{ORIGIN}", "CNAME", 60, (f"www.{ORIGIN}",)),
                    RecordSet(f"cut.{ORIGIN}", "NS", 60, (f"ns1.{ORIGIN}",)),
                )
            ],
            "coexist",
        ),
    ],
)
def test_zones_that_cannot_be_served(contents: list[ZoneContent], message: str) -> None:
    with pytest.raises(ZoneBuildError, match=message):
        ZoneSnapshot.build(contents)


def test_serials_and_origins() -> None:
    snapshot = example_snapshot(serial=42)
    assert snapshot.serial(ORIGIN) == 42
    assert snapshot.serial("EXAMPLE.test") == 42
    assert snapshot.serial(SUB) == 50
    assert snapshot.serial("other.test.") is None
    assert snapshot.serial("bad..name.") is None
    assert snapshot.origins == ("2.0.192.in-addr.arpa.", ORIGIN, SUB)
    assert ZoneSnapshot.build([]).origins == ()


def test_lookup_uses_the_longest_zone() -> None:
    snapshot = ZoneSnapshot.build([sub_zone(), example_zone()])
    found = snapshot.lookup(name_labels(f"host.{SUB}"), int(QTYPE.A))
    assert [str(rr.rdata) for rr in found.answer] == ["198.51.100.1"]
    assert snapshot.lookup(name_labels("x.invalid."), int(QTYPE.A)).rcode == int(RCODE.REFUSED)


def test_root_zone_is_a_zone_like_any_other() -> None:
    root = zone(".", 3, [("@", "NS", ["a.root-servers.test."])])
    root = dataclasses.replace(root, soa=dataclasses.replace(soa(ORIGIN, 3), mname="a.test."))
    snapshot = ZoneSnapshot.build([root])
    assert snapshot.lookup((b"anything",), int(QTYPE.A)).rcode == int(RCODE.NXDOMAIN)


def test_wildcards_and_delegations_in_the_root_zone() -> None:
    root = zone(
        ".",
        3,
        [
            ("@", "NS", ["a.root-servers.test."]),
            ("*", "TXT", ['"any"']),
            ("test", "NS", ["ns.test.", "a.root-servers.test."]),
            ("ns.test", "A", ["192.0.2.1"]),
            ("a.root-servers.test", "AAAA", ["2001:db8::1"]),
        ],
    )
    root = dataclasses.replace(root, soa=dataclasses.replace(soa(ORIGIN, 3), mname="a.test."))
    snapshot = ZoneSnapshot.build([root])
    wild = snapshot.lookup((b"x", b"anything"), int(QTYPE.TXT))
    assert [str(rr.rname) for rr in wild.answer] == ["x.anything."]
    referral = snapshot.lookup((b"www", b"test"), int(QTYPE.A))
    assert (referral.rcode, referral.authoritative, referral.answer) == (0, False, ())
    assert [str(rr.rdata) for rr in referral.authority] == ["ns.test.", "a.root-servers.test."]
    assert [str(rr.rname) for rr in referral.additional] == ["ns.test.", "a.root-servers.test."]


def test_wildcard_and_referral_replies_are_deterministic() -> None:
    snapshot = ZoneSnapshot.build([wild_zone()])
    for name in (f"Some.{WILD}", f"x.alias.{WILD}", f"www.sub.{WILD}", f"into-sub.{WILD}"):
        request = DNSRecord.question(name, "A")
        assert snapshot.resolve(request).pack() == snapshot.resolve(request).pack()


def test_resolve_is_a_pure_function_of_the_request() -> None:
    snapshot = example_snapshot()
    request = DNSRecord.question(f"WWW.{ORIGIN}", "A")
    first, second = snapshot.resolve(request), snapshot.resolve(request)
    assert first.pack() == second.pack()
    assert str(first.q.qname) == f"WWW.{ORIGIN}"
    assert first.header.aa == 1
    assert first.header.ra == 0
    assert [str(rr.rdata) for rr in first.rr] == ["192.0.2.1"]


_CONFIG = """\
zones:
  cfg.test.:
    provider: embedded
    soa: {mname: ns1.cfg.test., rname: hostmaster.cfg.test.}
    nameservers: [ns1.cfg.test.]
    records:
      ns1: {type: A, values: [192.0.2.53]}
      "*": {type: A, values: [192.0.2.100]}
      "*.wild": {type: CNAME, values: [ns1.cfg.test.]}
      sub: {type: NS, values: [ns.sub.cfg.test.]}
      ns.sub: {type: A, values: [192.0.2.54]}
"""


def test_config_wildcards_and_delegations_are_served() -> None:
    config = loads(_CONFIG)
    content = build_zone("cfg.test.", config.zones["cfg.test."], {}, serial=1)
    snapshot = ZoneSnapshot.build([content])
    wild = snapshot.lookup(name_labels("x.wild.cfg.test."), int(QTYPE.A))
    assert [str(rr.rdata) for rr in wild.answer] == ["ns1.cfg.test.", "192.0.2.53"]
    referral = snapshot.lookup(name_labels("www.sub.cfg.test."), int(QTYPE.A))
    assert not referral.authoritative
    assert [str(rr.rdata) for rr in referral.additional] == ["192.0.2.54"]


def test_config_rejects_a_wildcard_delegation() -> None:
    text = _CONFIG + '      "*.x": {type: NS, values: [ns1.cfg.test.]}\n'
    with pytest.raises(ConfigError, match=r"records\[\"\*\.x\"\]\.type: a wildcard name cannot be"):
        loads(text)
