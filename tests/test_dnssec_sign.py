"""The signer, judged by real validators: a zone built from a config by the engine, signed
by us, written as a zone file, must pass BIND's `dnssec-verify` and Knot's `kzonecheck
--dnssec on` for every algorithm, denial method and key layout, and must fail them once a
signature is broken or an RRset changes without being re-signed; a failover re-signs only
the RRsets it changed and keeps the chain."""

from __future__ import annotations

import base64
from pathlib import Path

import dns.dnssec
import dns.name
import dns.node
import dns.rdataset
import dns.rdatatype
import dns.rrset
import pytest
from dnssec_support import NOW, ORIGIN, config, keyset, kzonecheck, signed, verify, zone_rrsets

from dnsfailover.dnssec import denial, sign

MATRIX = [
    (algorithm, method, mode)
    for algorithm in (13, 15)
    for method in ("nsec", "nsec3")
    for mode in ("csk", "ksk+zsk")
]


@pytest.mark.parametrize(("algorithm", "method", "mode"), MATRIX)
def test_bind_and_knot_validate_the_signed_zone(
    tmp_path: Path, algorithm: int, method: str, mode: str
) -> None:
    cfg = config(f"{{algorithm: {algorithm}, denial: {method}, keys: {mode}}}")
    zone = signed(cfg, tmp_path / "keys")
    path = tmp_path / "signed.zone"
    path.write_text(zone.to_text())
    done = verify(path, csk=mode == "csk")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Zone fully signed" in done.stdout + done.stderr
    knot = kzonecheck(path)
    assert knot.returncode == 0, knot.stdout + knot.stderr
    text = zone.to_text()
    assert (" NSEC3 " in text) == (method == "nsec3")
    assert " NSEC3PARAM 1 0 0 -" in text if method == "nsec3" else " NSEC " in text


def _rrsig_of(zone: sign.SignedZone, name: str, rdtype: str) -> dns.rrset.RRset:
    return zone.rrsigs[(dns.name.from_text(name), int(dns.rdatatype.from_text(rdtype)))]


@pytest.mark.parametrize("method", ["nsec", "nsec3"])
def test_a_broken_signature_fails_validation(tmp_path: Path, method: str) -> None:
    zone = signed(config(f"{{denial: {method}}}"), tmp_path / "keys")
    rrsig = _rrsig_of(zone, f"www.{ORIGIN}", "A")
    good = rrsig[0]
    broken = bytearray(good.signature)
    broken[10] ^= 0xFF
    zone.rrsigs[(rrsig.name, int(dns.rdatatype.A))] = dns.rrset.from_rdata(
        rrsig.name, rrsig.ttl, good.replace(signature=bytes(broken))
    )
    path = tmp_path / "broken.zone"
    path.write_text(zone.to_text())
    assert verify(path, csk=True).returncode != 0
    assert kzonecheck(path).returncode != 0


def test_a_changed_rrset_fails_until_it_is_re_signed(tmp_path: Path) -> None:
    """A failover, done as the node will: only the RRsets whose data changed get new
    signatures; the chain (same names, same types) is kept as it was."""
    cfg = config("{denial: nsec3}")
    before = signed(cfg, tmp_path / "keys")
    after = {(r.name, r.rdtype): r for r in zone_rrsets(cfg, down=("192.0.2.10", "192.0.2.11"))}
    changed = [
        r for r in before.rrsets if (r.name, r.rdtype) in after and after[r.name, r.rdtype] != r
    ]
    assert [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in changed] == [
        (f"www.{ORIGIN}", "A")
    ]
    www = after[changed[0].name, changed[0].rdtype]
    assert sorted(rd.to_text() for rd in www) == ["192.0.2.20"]
    stale = sign.SignedZone(
        before.origin,
        tuple(www if r is changed[0] else r for r in before.rrsets),
        dict(before.rrsigs),
    )
    path = tmp_path / "stale.zone"
    path.write_text(stale.to_text())
    assert verify(path, csk=True).returncode != 0, "a stale signature must not validate"
    assert kzonecheck(path).returncode != 0

    keys = keyset(cfg, tmp_path / "keys")
    policy = cfg.zones[ORIGIN].dnssec.policy  # type: ignore[union-attr]
    fresh = dict(stale.rrsigs)
    fresh[(www.name, int(www.rdtype))] = sign.sign(www, keys.zsks, NOW + 60, policy)
    path.write_text(sign.SignedZone(stale.origin, stale.rrsets, fresh).to_text())
    done = verify(path, csk=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert kzonecheck(path).returncode == 0
    # the names and their types did not move: the chain signed before still proves denial
    assert denial.owner_types(zone_rrsets(cfg)) == denial.owner_types(after.values())


def test_a_secure_delegation_signs_its_ds_and_leaves_glue_unsigned(tmp_path: Path) -> None:
    cfg = config("{keys: ksk+zsk, algorithm: 15}")
    rrsets = zone_rrsets(cfg)
    ds = dns.rrset.from_text(f"sub.{ORIGIN}", 3600, "IN", "DS", "12345 13 2 " + "ab" * 32)
    zone = sign.sign_zone(
        dns.name.from_text(ORIGIN), [*rrsets, ds], keyset(cfg, tmp_path / "k"), NOW, sign.Policy()
    )
    sub, glue = dns.name.from_text(f"sub.{ORIGIN}"), dns.name.from_text(f"ns.sub.{ORIGIN}")
    assert (sub, int(dns.rdatatype.DS)) in zone.rrsigs
    assert (sub, int(dns.rdatatype.NS)) not in zone.rrsigs
    assert all(name != glue for name, _ in zone.rrsigs)
    nsec = next(r for r in zone.rrsets if r.name == sub and r.rdtype == dns.rdatatype.NSEC)
    assert nsec[0].to_text().split()[1:] == ["NS", "DS", "RRSIG", "NSEC"]
    path = tmp_path / "delegated.zone"
    path.write_text(zone.to_text())
    done = verify(path, csk=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert kzonecheck(path).returncode == 0


def test_windows_are_back_dated_jittered_and_deterministic() -> None:
    policy = sign.Policy(validity=14 * 86400, inception_offset=3600, refresh=0.25)
    names = [dns.name.from_text(f"n{i}.{ORIGIN}") for i in range(500)]
    windows = [sign.window(n, 1, NOW, policy) for n in names]
    assert all(inception == int(NOW - 3600) for inception, _ in windows)
    expiries = [expiration - NOW for _, expiration in windows]
    assert all(0.9 * policy.validity <= e <= policy.validity for e in expiries)
    assert len(set(expiries)) > 450, "the jitter spreads expiries out"
    assert max(expiries) - min(expiries) > 0.08 * policy.validity
    assert windows == [sign.window(n, 1, NOW, policy) for n in names]
    assert sign.window(names[0], 1, NOW, policy) != sign.window(names[0], 28, NOW, policy)


def test_a_signature_is_refreshed_once_less_than_the_fraction_remains(tmp_path: Path) -> None:
    cfg = config("{signature_validity: 10d, refresh: 0.25}")
    policy = cfg.zones[ORIGIN].dnssec.policy  # type: ignore[union-attr]
    rrset = dns.rrset.from_text(f"www.{ORIGIN}", 30, "IN", "A", "192.0.2.10")
    rrsig = sign.sign(rrset, keyset(cfg, tmp_path / "k").zsks, NOW, policy)
    expiry = sign.expiry(rrsig)
    assert rrsig.ttl == 30
    assert not sign.needs_refresh(rrsig, NOW, policy)
    assert not sign.needs_refresh(rrsig, expiry - 2.5 * 86400 - 1, policy)
    assert sign.needs_refresh(rrsig, expiry - 2.5 * 86400 + 1, policy)


def test_the_nsec3_chain_covers_empty_non_terminals_and_skips_glue() -> None:
    origin = dns.name.from_text(ORIGIN)
    names = denial.authoritative(origin, denial.owner_types(zone_rrsets(config())))
    full = denial.nsec3_names(origin, names)
    assert dns.name.from_text(f"deep.er.{ORIGIN}") in full
    assert full[dns.name.from_text(f"er.{ORIGIN}")] == frozenset()
    assert dns.name.from_text(f"ns.sub.{ORIGIN}") not in full
    chain = denial.nsec3_chain(origin, names, 30)
    assert len(chain) == len(full)
    owners = sorted(c.name for c in chain)
    # each points at the next hash, the last back to the first
    nxt = {c.name: c[0].next for c in chain}
    labels = [o.labels[0] for o in owners]
    assert [nxt[o] for o in owners] == [
        base64.b32hexdecode(label.upper()) for label in labels[1:] + labels[:1]
    ]


@pytest.mark.parametrize(("algorithm", "mode"), [(13, "csk"), (15, "ksk+zsk")])
def test_our_signatures_are_the_bytes_dnspython_makes(
    tmp_path: Path, algorithm: int, mode: str
) -> None:
    """The fast path builds RFC 4034's signed data itself: ECDSA (RFC 6979) and Ed25519 are
    deterministic, so dnspython's own `dns.dnssec.sign` must give the very same RRSIGs, and
    dnspython's validator must accept them (a wildcard owner, names in rdata, several RRs)."""
    cfg = config(f"{{algorithm: {algorithm}, keys: {mode}}}")
    found = keyset(cfg, tmp_path / "k")
    policy = sign.Policy()
    samples = [
        dns.rrset.from_text(f"*.wild.{ORIGIN}", 30, "IN", "TXT", "wildcard"),
        dns.rrset.from_text(
            ORIGIN, 3600, "IN", "MX", "20 B.example.test.", "10 mail.Example.test."
        ),
        dns.rrset.from_text(f"www.{ORIGIN}", 30, "IN", "A", "192.0.2.11", "192.0.2.10"),
    ]
    for rrset in samples:
        ours = sign.sign(rrset, found.zsks, NOW, policy)
        inception, expiration = sign.window(rrset.name, int(rrset.rdtype), NOW, policy)
        theirs = [
            dns.dnssec.sign(
                rrset, k.private, k.zone, k.dnskey, inception=inception, expiration=expiration
            )
            for k in found.zsks
        ]
        assert sorted(rd.to_text() for rd in ours) == sorted(rd.to_text() for rd in theirs)
        dnskeys = dns.rrset.from_rdata_list(found.zone, 3600, [k.dnskey for k in found.keys])
        keyring: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {found.zone: dnskeys}
        dns.dnssec.validate(rrset, ours, keyring, now=NOW)  # raises when invalid


@pytest.mark.parametrize("mode", ["csk", "ksk+zsk"])
def test_cds_and_cdnskey_match_the_ksk_and_are_signed_by_it(tmp_path: Path, mode: str) -> None:
    """kzonecheck checks CDS/CDNSKEY against the DNSKEY RRset; dnssec-verify the signatures."""
    cfg = config(f"{{keys: {mode}}}")
    found = keyset(cfg, tmp_path / "k")
    cds, cdnskey = sign.cds(found, 3600)
    assert [rd.to_text() for rd in cds] == [k.ds().to_text() for k in found.ksks]
    zone = sign.sign_zone(
        dns.name.from_text(ORIGIN), [*zone_rrsets(cfg), cds, cdnskey], found, NOW, sign.Policy()
    )
    (ksk,) = found.ksks
    for rdtype in ("CDS", "CDNSKEY"):
        assert [rd.key_tag for rd in _rrsig_of(zone, ORIGIN, rdtype)] == [ksk.tag]
    path = tmp_path / "cds.zone"
    path.write_text(zone.to_text())
    done = verify(path, csk=mode == "csk")
    assert done.returncode == 0, done.stdout + done.stderr
    knot = kzonecheck(path)
    assert knot.returncode == 0, knot.stdout + knot.stderr
    # a CDS that names no key of the zone is what kzonecheck must catch
    wrong = dns.rrset.from_text(ORIGIN, 3600, "IN", "CDS", "1 13 2 " + "cd" * 32)
    bad = sign.sign_zone(
        dns.name.from_text(ORIGIN), [*zone_rrsets(cfg), wrong, cdnskey], found, NOW, sign.Policy()
    )
    path.write_text(bad.to_text())
    assert kzonecheck(path).returncode != 0


def test_refresh_at_is_the_earliest_moment_needs_refresh_turns_true(tmp_path: Path) -> None:
    policy = sign.Policy(validity=86400, refresh=0.5)
    rrset = dns.rrset.from_text(f"api.{ORIGIN}", 30, "IN", "A", "192.0.2.30")
    rrsig = sign.sign(rrset, keyset(config(), tmp_path / "k").zsks, NOW, policy)
    at = sign.refresh_at(rrsig, policy)
    assert NOW < at < NOW + policy.validity
    assert not sign.needs_refresh(rrsig, at - 1, policy)
    assert sign.needs_refresh(rrsig, at + 1, policy)
