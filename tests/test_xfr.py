"""Zone transfers (AXFR/IXFR, TSIG) from a real DnsServer on 127.0.0.1:0, read by dnspython."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.tsig
import dns.xfr
import dns.zone
import pytest
from conftest_server import ORIGIN, SUB, example_zone, sub_zone, zone

from dnsfailover.config.load import loads
from dnsfailover.errors import ConfigError
from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.tsig import key_name
from dnsfailover.server.xfr import Peer, TransferHandler, wire_qtype

OTHER = "other.test."
BIG = "big.test."
KEY = key_name("xfr-key")
SECRET = b"0123456789abcdef0123456789abcdef"
KEYRING = {KEY: dns.tsig.Key(KEY, SECRET, dns.tsig.HMAC_SHA256)}
WRONG = {KEY: dns.tsig.Key(KEY, b"not the secret, not at all......", dns.tsig.HMAC_SHA256)}


@dataclass
class Served:
    zones: EmbeddedZones
    port: int

    async def xfr(self, origin: str, **kw: Any) -> list[dns.message.Message]:
        """Every message of one transfer (dnspython's blocking client, off the loop)."""

        def run() -> list[dns.message.Message]:
            return list(
                dns.query.xfr(
                    "127.0.0.1", origin, port=self.port, lifetime=10, relativize=False, **kw
                )
            )

        return await asyncio.to_thread(run)

    async def zone(self, origin: str, **kw: Any) -> dns.zone.Zone:
        messages = await self.xfr(origin, **kw)
        return dns.zone.from_xfr(iter(messages), relativize=False)


def big_zone(serial: int, count: int = 5000) -> ZoneContent:
    return zone(
        BIG,
        serial,
        [("@", "NS", [f"ns1.{BIG}"])]
        + [(f"h{i}", "A", [f"10.{i // 256}.{i % 256}.1"]) for i in range(count)],
    )


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    zones = EmbeddedZones()
    zones.put([example_zone(1), sub_zone(50), zone(OTHER, 7, [("@", "NS", [f"ns1.{OTHER}"])])])
    zones.put([big_zone(1)])
    acl = {
        ORIGIN: (Peer(ipaddress.ip_network("127.0.0.1/32")),),
        SUB: (Peer(key=KEY),),
        OTHER: (Peer(ipaddress.ip_network("127.0.0.2/32")),),
        BIG: (Peer(ipaddress.ip_network("127.0.0.0/8"), KEY),),
    }
    server = DnsServer(
        zones.snapshot, "127.0.0.1", 0, tcp_handler=TransferHandler(zones, acl, KEYRING)
    )
    _, port = await server.start()
    zones.attach(server)
    yield Served(zones, port)
    await server.stop()


def rrs(z: dns.zone.Zone) -> set[tuple[str, str, int, str]]:
    return {
        (name.to_text(), dns.rdatatype.to_text(rds.rdtype), rds.ttl, rd.to_text())
        for name, rds in z.iterate_rdatasets()
        for rd in rds
    }


def expected(content: ZoneContent) -> set[tuple[str, str, int, str]]:
    z = dns.zone.Zone(content.origin, relativize=False)
    with z.writer() as txn:
        soa = content.soa
        txn.add(
            content.origin,
            soa.ttl,
            dns.rdata.from_text(
                "IN",
                "SOA",
                f"{soa.mname} {soa.rname} {soa.serial} "
                f"{soa.refresh} {soa.retry} {soa.expire} {soa.minimum}",
            ),
        )
        for rs in content.records:
            for value in rs.values:
                txn.add(rs.name, rs.ttl, dns.rdata.from_text("IN", rs.rtype, value))
    return rrs(z)


def serial_of(rrset: Any) -> int:
    rd = rrset[0]
    assert isinstance(rd, dns.rdtypes.ANY.SOA.SOA)
    return int(rd.serial)


def answers(messages: Iterable[dns.message.Message]) -> list[Any]:
    return [rrset for m in messages for rrset in m.answer]


# -- AXFR --------------------------------------------------------------------------------------


async def test_axfr_streams_the_whole_zone_between_two_soas(served: Served) -> None:
    messages = await served.xfr(ORIGIN)
    sets = answers(messages)
    assert sets[0].rdtype == sets[-1].rdtype == dns.rdatatype.SOA
    assert serial_of(sets[0]) == serial_of(sets[-1]) == 1
    assert all(m.rcode() == dns.rcode.NOERROR for m in messages)
    z = dns.zone.from_xfr(iter(messages), relativize=False)
    assert rrs(z) == expected(example_zone(1))


async def test_axfr_refused_outside_the_acl(served: Served) -> None:
    with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
        await served.xfr(OTHER)  # only 127.0.0.2 may
    with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
        await served.xfr(ORIGIN, source="127.0.0.3")  # only 127.0.0.1 may
    with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
        await served.xfr("unknown.test.")


async def test_axfr_with_tsig(served: Served) -> None:
    signed = await served.zone(SUB, keyring=KEYRING, keyname=KEY)
    assert rrs(signed) == expected(sub_zone(50))
    with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
        await served.xfr(SUB)  # unsigned
    with pytest.raises(dns.tsig.PeerBadSignature):
        await served.xfr(SUB, keyring=WRONG, keyname=KEY)
    stranger = key_name("stranger")
    with pytest.raises(dns.tsig.PeerBadKey):
        await served.xfr(SUB, keyring={stranger: SECRET}, keyname=stranger)


async def test_a_large_zone_spans_several_signed_messages(served: Served) -> None:
    messages = await served.xfr(BIG, keyring=KEYRING, keyname=KEY)
    assert len(messages) > 3
    assert all(len(m.to_wire()) <= 65535 for m in messages)
    assert all(m.had_tsig for m in messages)
    z = dns.zone.from_xfr(iter(messages), relativize=False)
    assert len(rrs(z)) == 5002  # SOA, NS and 5,000 A
    with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
        await served.xfr(BIG)  # both the address and the key are required


# -- IXFR --------------------------------------------------------------------------------------


def changed(content: ZoneContent, serial: int, www: str, extra: str | None) -> ZoneContent:
    records = [r for r in content.records if r.name != f"mail.{ORIGIN}"]
    records = [
        replace(r, values=(www,)) if r.name == f"www.{ORIGIN}" and r.rtype == "A" else r
        for r in records
    ]
    if extra is not None:
        records.append(RecordSet(f"{extra}.{ORIGIN}", "TXT", 60, (f'"{extra}"',)))
    content = ZoneContent(
        content.origin, content.soa, tuple(sorted(records, key=lambda r: (r.name, r.rtype)))
    )
    return replace(content, soa=replace(content.soa, serial=serial))


async def test_ixfr_sends_the_steps_since_the_clients_serial(served: Served) -> None:
    v1 = served.zones.contents[ORIGIN]
    v2 = changed(v1, 2, "192.0.2.2", "new")
    v3 = changed(v2, 3, "192.0.2.3", None)
    served.zones.put([v2])
    served.zones.put([v3])
    messages = await served.xfr(ORIGIN, rdtype=dns.rdatatype.IXFR, serial=1)
    sets = answers(messages)
    soas = [serial_of(s) for s in sets if s.rdtype == dns.rdatatype.SOA]
    assert soas == [3, 1, 2, 2, 3, 3]
    # split into [SOA, RRsets...] runs: new, (old, deleted, next, added)...
    runs: list[list[Any]] = []
    for rrset in sets:
        if rrset.rdtype == dns.rdatatype.SOA:
            runs.append([])
        else:
            runs[-1].append((rrset.name.to_text(), sorted(rd.to_text() for rd in rrset)))
    assert runs[0] == runs[-1] == []
    deleted_1, added_2, deleted_2, added_3 = runs[1:5]
    assert sorted(deleted_1) == [
        (f"mail.{ORIGIN}", ["192.0.2.25"]),
        (f"www.{ORIGIN}", ["192.0.2.1"]),
    ]
    assert sorted(added_2) == [(f"new.{ORIGIN}", ['"new"']), (f"www.{ORIGIN}", ["192.0.2.2"])]
    assert deleted_2 == [(f"www.{ORIGIN}", ["192.0.2.2"])]
    assert added_3 == [(f"www.{ORIGIN}", ["192.0.2.3"])]


async def test_ixfr_applied_by_dnspython(served: Served) -> None:
    copy = await served.zone(ORIGIN)
    served.zones.put([changed(served.zones.contents[ORIGIN], 2, "192.0.2.2", "new")])
    served.zones.put([v3 := changed(served.zones.contents[ORIGIN], 3, "192.0.2.3", None)])
    query, serial = dns.xfr.make_query(copy)
    assert serial == 1

    def pull() -> None:
        dns.query.inbound_xfr("127.0.0.1", copy, query, port=served.port, lifetime=10)

    await asyncio.to_thread(pull)
    assert rrs(copy) == expected(v3)


async def test_ixfr_when_current_or_when_history_is_short(served: Served) -> None:
    current = answers(await served.xfr(ORIGIN, rdtype=dns.rdatatype.IXFR, serial=1))
    assert len(current) == 1
    assert serial_of(current[0]) == 1
    # not in the history: the whole zone, AXFR-style (RFC 1995 §4)
    v5 = changed(served.zones.contents[ORIGIN], 5, "192.0.2.5", None)
    served.zones.put([v5])
    full = answers(await served.xfr(ORIGIN, rdtype=dns.rdatatype.IXFR, serial=3))
    assert [serial_of(full[0]), serial_of(full[-1])] == [5, 5]
    assert all(rrset.rdtype != dns.rdatatype.SOA for rrset in full[1:-1])
    assert sum(len(rrset) for rrset in full) == sum(len(r.values) for r in v5.records) + 2


def test_only_transfer_queries_are_taken() -> None:
    query = dns.message.make_query(ORIGIN, "A").to_wire()
    assert wire_qtype(query) == dns.rdatatype.A
    assert wire_qtype(dns.message.make_query(ORIGIN, "AXFR").to_wire()) == dns.rdatatype.AXFR
    handler = TransferHandler(EmbeddedZones(), {})
    assert handler(query, ("127.0.0.1", 1)) is None
    assert handler(b"\x00" * 5, ("127.0.0.1", 1)) is None


# -- config ------------------------------------------------------------------------------------

CONFIG = """\
tsig_keys:
  xfr-key: {{algorithm: hmac-sha256, {source}}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, value: 127.0.0.1}}
    allow_transfer: [127.0.0.1, {{key: xfr-key}}, {{address: 10.0.0.0/8, key: {key}}}]
    also_notify: ["127.0.0.1:5300", {{address: "::1", port: 53, key: xfr-key}}]
"""


def test_config_reads_the_secret_and_checks_key_names(tmp_path: Path) -> None:
    secret = tmp_path / "xfr.key"
    secret.write_text(
        'key "xfr-key" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0c2VjcmV0";\n};\n'
    )
    config = loads(CONFIG.format(source=f"secret_file: {secret}", key="xfr-key"))
    zone_config = config.zones[ORIGIN]
    assert [p.address for p in zone_config.allow_transfer] == ["127.0.0.1/32", None, "10.0.0.0/8"]
    assert [(t.address, t.port) for t in zone_config.also_notify] == [
        ("127.0.0.1", 5300),
        ("::1", 53),
    ]

    with pytest.raises(ConfigError) as e:
        loads(CONFIG.format(source=f"secret_file: {secret}", key="nope"))
    assert (
        "<string>:9: zones[\"example.test.\"].allow_transfer[2].key: unknown TSIG key 'nope'"
        in str(e.value)
    )


def test_config_secret_errors_name_the_key_never_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as e:
        loads(CONFIG.format(source=f"secret_file: {tmp_path / 'missing'}", key="xfr-key"))
    assert "<string>:2: tsig_keys.xfr-key.secret_file: TSIG key xfr-key: cannot read" in str(
        e.value
    )
    monkeypatch.setenv("XFR_SECRET", "not base64 !!! hunter2")
    with pytest.raises(ConfigError) as e:
        loads(CONFIG.format(source="secret_env: XFR_SECRET", key="xfr-key"))
    assert "secret_env XFR_SECRET does not hold a base64 secret" in str(e.value)
    assert "hunter2" not in str(e.value)
    monkeypatch.delenv("XFR_SECRET")
    with pytest.raises(ConfigError, match="environment variable XFR_SECRET is not set"):
        loads(CONFIG.format(source="secret_env: XFR_SECRET", key="xfr-key"))
