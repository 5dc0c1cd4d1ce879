"""The embedded server's signed answers, in-process: every kind of answer to a DO query
validates (dnspython's validator, against the zone's DNSKEY), carries the proof RFC 4035
§3.1.3 asks for, and DO=0 answers are the unsigned server's, byte for byte; a failover
re-signs only what it changed; signatures are refreshed when due.  The real validators
(delv, a BIND resolver, dnssec-verify, kzonecheck) run on `serve` in tests/e2e."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from dnslib import DNSRecord
from dnssec_support import NOW, ORIGIN, Clock, config, content, keyset, zone_rrsets

from dnsfailover.config.schema import Config
from dnsfailover.dnssec import denial, sign
from dnsfailover.dnssec.sign import DAY, Policy
from dnsfailover.server.fast import FastTable
from dnsfailover.server.secure import QUANTUM, ZoneSigner
from dnsfailover.server.wire import pack, respond
from dnsfailover.server.zone import ZoneSnapshot

Z = dns.name.from_text(ORIGIN)
RRSIG, NSEC, NSEC3 = dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3


def signer_for(cfg: Config, tmp: Path, clock: Callable[[], float] | None = None) -> ZoneSigner:
    section = cfg.zones[ORIGIN].dnssec
    assert section is not None
    return ZoneSigner(
        keyset(cfg, tmp / "keys"),
        section.policy,
        section.denial == "nsec3",
        clock=clock or Clock(),
    )


def ask(
    snap: ZoneSnapshot, name: str, rtype: str, do: bool = True, tcp: bool = True
) -> dns.message.Message:
    q = dns.message.make_query(name, rtype, want_dnssec=do, use_edns=0, payload=1232)
    wire = respond(snap, q.to_wire(), tcp=tcp)
    assert wire is not None
    return dns.message.from_wire(wire)


def dnskey(snap: ZoneSnapshot) -> dns.rrset.RRset:
    reply = ask(snap, ORIGIN, "DNSKEY")
    found = reply.find_rrset(reply.answer, Z, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    rrsig = reply.find_rrset(reply.answer, Z, dns.rdataclass.IN, RRSIG, dns.rdatatype.DNSKEY)
    dns.dnssec.validate(found, rrsig, {Z: found}, now=NOW)  # self-signed by the KSK/CSK
    return found


def validated(reply: dns.message.Message, keys: dns.rrset.RRset) -> list[tuple[str, str]]:
    """Every RRset of the answer and authority sections, each checked against its RRSIGs
    (a referral's NS and glue are not signed: RFC 4035 §2.2); (name, type) of each."""
    seen = []
    for section in (reply.answer, reply.authority):
        for rrset in section:
            if rrset.rdtype == RRSIG:
                continue
            label = (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype))
            seen.append(label)
            if rrset.rdtype == dns.rdatatype.NS and rrset.name != Z:
                continue
            sigs = [
                s for s in section if s.rdtype == RRSIG and s.name == rrset.name
                and s.covers == rrset.rdtype
            ]  # fmt: skip
            assert sigs, f"{label} has no RRSIG"
            dns.dnssec.validate(rrset, sigs[0], {Z: keys}, now=NOW)
    return seen


CASES = [
    # name, type, rcode, what the authority section must prove it with
    ("www.example.test.", "A", "NOERROR", set()),
    ("api.example.test.", "A", "NOERROR", set()),
    ("nothere.example.test.", "A", "NXDOMAIN", {"denial"}),
    ("www.example.test.", "TXT", "NOERROR", {"denial"}),  # NODATA
    ("deep.er.example.test.", "TXT", "NOERROR", {"denial"}),  # NODATA at an empty non-terminal
    ("x.wild.example.test.", "TXT", "NOERROR", {"denial"}),  # from the wildcard
    ("x.wild.example.test.", "A", "NOERROR", {"denial"}),  # NODATA at the wildcard
    ("alias.example.test.", "A", "NOERROR", set()),  # CNAME, then the target's A
    ("host.sub.example.test.", "A", "NOERROR", {"denial"}),  # referral: no DS proven
    ("sub.example.test.", "DS", "NOERROR", {"denial"}),
    (ORIGIN, "SOA", "NOERROR", set()),
    (ORIGIN, "NS", "NOERROR", set()),
    (ORIGIN, "MX", "NOERROR", set()),
]


@pytest.mark.parametrize("dnssec", ["{}", "{denial: nsec3}", "{algorithm: 15, keys: ksk+zsk}"])
def test_every_kind_of_answer_validates_with_its_proof(tmp_path: Path, dnssec: str) -> None:
    cfg = config(dnssec)
    snap = ZoneSnapshot.build([content(cfg)], {ORIGIN: signer_for(cfg, tmp_path)})
    keys = dnskey(snap)
    proof = NSEC3 if "nsec3" in dnssec else NSEC
    for name, rtype, rcode, needs in CASES:
        reply = ask(snap, name, rtype)
        assert dns.rcode.to_text(reply.rcode()) == rcode, (name, rtype)
        seen = validated(reply, keys)
        assert any(t == rtype or t == "CNAME" for _n, t in seen) or rcode != "NOERROR" or needs
        shown = {rrset.rdtype for rrset in reply.authority}
        if needs:
            assert proof in shown, (name, rtype, seen)
        if name == "x.wild.example.test." and rtype == "TXT":  # synthesised: owner is qname
            (txt,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.TXT]
            assert txt.name == dns.name.from_text(name)


def test_the_denial_chain_is_the_reference_signers(tmp_path: Path) -> None:
    """The NSEC and NSEC3 records served are those `dnssec.denial` makes for the zone's
    data and the signer's apex sets (the reference that dnssec-verify and kzonecheck check
    in tests/test_dnssec_sign.py)."""
    for method in ("nsec", "nsec3"):
        cfg = config(f"{{denial: {method}}}")
        signer = signer_for(cfg, tmp_path)
        snap = ZoneSnapshot.build([content(cfg)], {ORIGIN: signer})
        zone = snap.zone(ORIGIN)
        assert zone is not None
        assert zone.secure is not None
        served = set()
        for rr, _sigs in zone.secure.chain.records.values():
            rdtype = dns.rdatatype.RdataType(int(rr.rtype))
            data = rr.rdata.data
            rd = dns.rdata.from_wire(dns.rdataclass.IN, rdtype, data, 0, len(data))
            served.add((str(rr.rname).lower(), rd.to_text()))
        apex = [sign.dnskey(signer.keys, 3600, NOW, Policy())[0], *sign.cds(signer.keys, 3600)]
        names = denial.authoritative(Z, denial.owner_types([*zone_rrsets(cfg), *apex]))
        chain = denial.chain(Z, names, 30, method)
        reference = {
            (rrset.name.to_text(), rd.to_text())
            for rrset in chain
            if rrset.rdtype in (NSEC, NSEC3)
            for rd in rrset
        }
        assert served == reference


def _cfg(extra: str = "", dnssec: str = "{}") -> Config:
    from dnssec_support import CONFIG

    text = CONFIG.replace(
        "        endpoints: [192.0.2.30, 192.0.2.31]\n",
        "        endpoints: [{address: 192.0.2.30, weight: 3}, {address: 192.0.2.31, weight: 1}]\n"
        + extra,
    )
    return config(dnssec, text)


def test_a_failover_signs_only_what_it_changed_and_a_failback_nothing_new(
    tmp_path: Path,
) -> None:
    cfg = _cfg()
    signer = signer_for(cfg, tmp_path)
    up = content(cfg)
    snap = ZoneSnapshot.build([up], {ORIGIN: signer})
    made = signer.stats.signatures
    down = content(cfg, down=("192.0.2.10", "192.0.2.11"))  # www's primary tier
    down = replace(down, soa=replace(down.soa, serial=up.soa.serial + 1))
    after = snap.update([(up, down)])
    assert signer.stats.signatures - made == 2  # www's new A set, and the SOA
    keys = dnskey(after)
    reply = ask(after, "www.example.test.", "A")
    assert [rd.to_text() for rrset in reply.answer if rrset.rdtype == 1 for rd in rrset] == [
        "192.0.2.20"
    ]
    validated(reply, keys)
    made = signer.stats.signatures
    back = replace(up, soa=replace(up.soa, serial=up.soa.serial + 2))
    again = after.update([(down, back)])
    assert signer.stats.signatures - made == 1  # the SOA: www's first set was signed before
    validated(ask(again, "www.example.test.", "A"), keys)


def test_an_emptied_set_is_nodata_with_its_names_bitmap_remade(tmp_path: Path) -> None:
    cfg = _cfg("        min_healthy: 1\n        all_down: serve_none\n")
    signer = signer_for(cfg, tmp_path)
    up = content(cfg)
    snap = ZoneSnapshot.build([up], {ORIGIN: signer})
    made = signer.stats.signatures
    gone = content(cfg, down=("192.0.2.30", "192.0.2.31"))
    gone = replace(gone, soa=replace(gone.soa, serial=up.soa.serial + 1))
    after = snap.update([(up, gone)])
    assert signer.stats.signatures - made == 2  # the SOA and api's NSEC (no A any more)
    reply = ask(after, "api.example.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.answer
    assert ("api.example.test.", "NSEC") in validated(reply, dnskey(after))
    (nsec,) = [r for r in reply.authority if r.rdtype == NSEC]
    assert dns.rdatatype.A not in denial_types(nsec)
    before = ask(snap, "api.example.test.", "TXT")  # the old snapshot still says A is there
    (nsec,) = [r for r in before.authority if r.rdtype == NSEC]
    assert dns.rdatatype.A in denial_types(nsec)


def denial_types(rrset: dns.rrset.RRset) -> set[int]:
    return {t for window, bits in rrset[0].windows for t in _types(window, bits)}


def _types(window: int, bits: bytes) -> list[int]:
    return [
        window * 256 + i * 8 + j for i, octet in enumerate(bits) for j in range(8)
        if octet & (0x80 >> j)
    ]  # fmt: skip


def test_each_weighted_answer_is_signed_as_served(tmp_path: Path) -> None:
    """A weighted name answers one record per query: that one-record RRset is what a
    validator checks, so each has its own signature."""
    cfg = _cfg()
    snap = ZoneSnapshot.build([content(cfg)], {ORIGIN: signer_for(cfg, tmp_path)})
    keys = dnskey(snap)
    seen = set()
    for _ in range(8):
        reply = ask(snap, "api.example.test.", "A")
        (answer,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.A]
        assert len(answer) == 1
        seen.add(answer[0].to_text())
        validated(reply, keys)
    assert seen == {"192.0.2.30", "192.0.2.31"}


def test_do0_answers_are_the_unsigned_servers(tmp_path: Path) -> None:
    cfg = config()
    zone = content(cfg)
    signed = ZoneSnapshot.build([zone], {ORIGIN: signer_for(cfg, tmp_path)})
    plain = ZoneSnapshot.build([zone])
    for name, rtype, _rcode, _needs in CASES:
        for edns in (None, 0):
            q = dns.message.make_query(name, rtype, use_edns=edns)
            assert respond(signed, q.to_wire(), tcp=False) == respond(plain, q.to_wire(), tcp=False)


def test_signatures_are_refreshed_when_due_and_the_same_on_every_node(tmp_path: Path) -> None:
    cfg = config()
    clock = Clock()
    one, two = signer_for(cfg, tmp_path, clock), signer_for(cfg, tmp_path, Clock(NOW + 1))
    zone = content(cfg)
    first = ZoneSnapshot.build([zone], {ORIGIN: one})
    other = ZoneSnapshot.build([zone], {ORIGIN: two})
    q = dns.message.make_query("www.example.test.", "A", want_dnssec=True).to_wire()
    if (NOW + 1) // QUANTUM == NOW // QUANTUM:  # same signing time: byte-identical answers
        assert respond(first, q, tcp=True) == respond(other, q, tcp=True)
    secure = first.secured()[ORIGIN]
    assert secure.refresh_at > NOW + 9 * DAY  # 14 days, less 10 % jitter, 25 % refresh
    clock.now = secure.refresh_at + 1
    made = one.stats.signatures
    later = replace(zone, soa=replace(zone.soa, serial=zone.soa.serial + 1))
    refreshed = first.update([(zone, later)])
    assert refreshed.refreshed
    renewed = refreshed.secured()[ORIGIN]
    assert renewed.refresh_at > secure.refresh_at + 3 * DAY
    assert one.stats.signatures - made > 10  # not only the SOA
    reply = dns.message.from_wire(respond(refreshed, q, tcp=True) or b"")
    expiry = [rd.expiration for r in reply.answer if r.rdtype == RRSIG for rd in r]
    assert min(expiry) > clock.now + 9 * DAY


def test_the_fast_path_replays_signed_answers_exactly(tmp_path: Path) -> None:
    cfg = config()
    snap = ZoneSnapshot.build([content(cfg)], {ORIGIN: signer_for(cfg, tmp_path)})
    table = FastTable(snap)
    long = ("a" * 60 + ".") * 3 + "nothere.example.test."  # its NXDOMAIN: over 512 bytes
    asked = [*((n, t) for n, t, *_ in CASES), (long, "A"), (long, "AAAA")]
    for name, rtype in asked:
        q = dns.message.make_query(name, rtype, want_dnssec=True, payload=1232)
        q.id = 4242
        q.flags &= ~dns.flags.RD
        wire = q.to_wire()
        full = respond(snap, wire, tcp=False)
        answers = [table.answer(wire, tcp=False) for _ in range(3)]
        assert answers == [full] * 3
        assert table.lookup(wire, tcp=False) in (full, None)
    assert len(respond(snap, ask_wire(long), tcp=False) or b"") > 512
    hits = sum(
        1
        for name, rtype in asked
        if table.lookup(
            dns.message.make_query(name, rtype, want_dnssec=True, payload=1232).to_wire(),
            tcp=False,
        )
    )
    # every answer: the query's payload is the server's (1232), so a reply of any size that
    # fits is replayed, proofs and all
    assert hits == len(asked)


def ask_wire(name: str) -> bytes:
    return dns.message.make_query(name, "A", want_dnssec=True, payload=1232).to_wire()


class _In:
    """Places every client of a steered name in one location group (the server's
    `Placer` protocol; the geo lookup itself is tested in tests/test_server_steering.py)."""

    def __init__(self, group: str) -> None:
        self.group = group

    def place(self, name: str) -> str | None:
        return self.group


def test_each_location_group_has_its_own_signed_answer(tmp_path: Path) -> None:
    from dnsfailover.model import RecordSet, SteeredSet

    cfg = config()
    zone = content(cfg)
    key = ("www.example.test.", "A")
    default = zone.managed[key]
    eu = RecordSet(default.name, "A", default.ttl, ("192.0.2.77",))
    steered = SteeredSet(default.name, "A", "us", {"us": default, "eu": eu})
    zone = replace(zone, steered={key: steered})
    signer = signer_for(cfg, tmp_path)
    snap = ZoneSnapshot.build([zone], {ORIGIN: signer})
    keys = dnskey(snap)
    for group, want in (("eu", ["192.0.2.77"]), ("us", sorted(default.values))):
        q = dns.message.make_query("www.example.test.", "A", want_dnssec=True)
        request = DNSRecord.parse(q.to_wire())
        reply = dns.message.from_wire(pack(snap.resolve(request, _In(group), do=True)))
        served = [r for r in reply.answer if r.rdtype == dns.rdatatype.A]
        assert sorted(rd.to_text() for r in served for rd in r) == want
        validated(reply, keys)
    made = signer.stats.signatures
    moved = RecordSet(default.name, "A", default.ttl, ("192.0.2.78",))
    later = replace(
        zone,
        soa=replace(zone.soa, serial=zone.soa.serial + 1),
        steered={key: SteeredSet(default.name, "A", "us", {"us": default, "eu": moved})},
    )
    snap.update([(zone, later)])
    assert signer.stats.signatures - made == 2  # the eu group's new answer, and the SOA
