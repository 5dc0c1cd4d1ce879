"""The signer: pure functions from dnspython RRsets, keys and a clock to RRSIGs.

Built for incremental use: `sign` signs one RRset (a failover re-signs only the RRsets it
changed), `dnskey` makes the signed DNSKEY RRset, `denial.chain` rebuilds the NSEC/NSEC3
chain only when the name set changes, and `sign_zone` puts them together for a whole zone
(tests, and zone transfers later).

Signature windows: the inception is back-dated by `inception_offset` (validators with a
slow clock); the expiry is `now + validity` less a jitter of up to `jitter` of the validity,
fixed per RRset (a hash of its owner and type), so signatures made together expire apart
and re-signing spreads out.  `needs_refresh` says when an RRSIG has less than `refresh` of
its validity left.  ECDSA signatures are deterministic (RFC 6979): the same RRset, key and
window give the same signature on every node.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CDNSKEY
import dns.rdtypes.ANY.CDS
import dns.rrset
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from dnsfailover.dnssec import denial
from dnsfailover.dnssec.keys import KeySet, SigningKey

DAY = 86400
_KSK_SIGNED = (dns.rdatatype.CDS, dns.rdatatype.CDNSKEY)  # RFC 7344 §4.1 (DNSKEY: `dnskey`)


@dataclass(frozen=True, slots=True)
class Policy:
    """How long signatures last and when they are remade (seconds, fractions)."""

    validity: float = 14 * DAY
    refresh: float = 0.25  # re-sign when less than this fraction of `validity` remains
    inception_offset: float = 3600.0
    jitter: float = 0.1  # expiry shortened by up to this fraction of `validity`


def jitter(name: dns.name.Name | bytes, rdtype: int, policy: Policy) -> int:
    """Seconds taken off the expiry of `name`/`rdtype`'s signatures: fixed per RRset, spread
    evenly over [0, jitter * validity).  `name`: a name, or its canonical wire form."""
    owner = name if isinstance(name, bytes) else name.to_digestable()
    digest = hashlib.blake2b(owner + rdtype.to_bytes(2, "big"), digest_size=8).digest()
    return int(int.from_bytes(digest, "big") / 2**64 * policy.jitter * policy.validity)


def window(name: dns.name.Name | bytes, rdtype: int, now: float, policy: Policy) -> tuple[int, int]:
    """(inception, expiration) of a signature made at `now`, as POSIX seconds."""
    inception = int(now - policy.inception_offset)
    expiration = int(now + policy.validity) - jitter(name, rdtype, policy)
    return inception, expiration


def sign(
    rrset: dns.rrset.RRset, keys: Sequence[SigningKey], now: float, policy: Policy
) -> dns.rrset.RRset:
    """The RRSIG RRset of `rrset`: one signature per key, with `rrset`'s TTL.

    The signed data is RFC 4034 §3.1.8.1's, built here rather than by `dns.dnssec.sign`
    (whose rdata handling costs several times the signature itself); the result is the
    same bytes (tests/test_dnssec_sign.py compares them)."""
    name, rdtype, ttl = rrset.name, int(rrset.rdtype), rrset.ttl
    labels = len(name) - 1 - (1 if name.is_wild() else 0)
    rdatas = [r.to_digestable(name) for r in rrset]
    sigs = [
        dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RRSIG, wire, 0, len(wire))
        for wire in sign_wire(name.to_digestable(), labels, rdtype, ttl, rdatas, keys, now, policy)
    ]
    return dns.rrset.from_rdata_list(name, ttl, sigs)


def sign_wire(
    owner: bytes,
    labels: int,
    rdtype: int,
    ttl: int,
    rdatas: Iterable[bytes],
    keys: Sequence[SigningKey],
    now: float,
    policy: Policy,
) -> list[bytes]:
    """The RRSIG rdatas (wire form, one per key) of the RRset `owner`/`rdtype`/`ttl` (class
    IN) whose rdatas, in canonical form (RFC 4034 §6.2: names uncompressed and lower case),
    are `rdatas`; `owner` is the canonical owner name and `labels` its label count without
    the root and a leading `*`.  What the server signs with: it holds records as wire."""
    if not keys:
        raise ValueError("no key to sign with")
    inception, expiration = window(owner, rdtype, now, policy)
    fixed = owner + struct.pack("!HHI", rdtype, 1, ttl)
    records = b"".join(fixed + struct.pack("!H", len(rd)) + rd for rd in sorted(set(rdatas)))
    out = []
    for key in keys:
        head = struct.pack(
            "!HBBIIIH", rdtype, key.algorithm, labels, ttl, expiration, inception, key.tag
        )
        signed_by = head + key.signer
        out.append(signed_by + _signature(key, signed_by + records))
    return out


_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_IS_EC: dict[type, bool] = {}  # isinstance on an ABC costs more than an Ed25519 signature


def _signature(key: SigningKey, data: bytes) -> bytes:
    """RFC 6605's r||s for ECDSA P-256 (deterministic, RFC 6979), RFC 8080's for Ed25519."""
    kind = type(key.private)
    is_ec = _IS_EC.get(kind)
    if is_ec is None:
        is_ec = _IS_EC[kind] = isinstance(key.private, ec.EllipticCurvePrivateKey)
    if is_ec:
        der = key.private.sign(data, _ECDSA)  # type: ignore[call-arg]
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return key.private.sign(data)  # type: ignore[call-arg]


def dnskey(
    keyset: KeySet, ttl: int, now: float, policy: Policy
) -> tuple[dns.rrset.RRset, dns.rrset.RRset]:
    """The apex DNSKEY RRset (every key) and its RRSIGs (by the KSKs or CSKs)."""
    rrset = dns.rrset.from_rdata_list(keyset.zone, ttl, [k.dnskey for k in keyset.keys])
    return rrset, sign(rrset, keyset.ksks, now, policy)


def cds(keyset: KeySet, ttl: int) -> tuple[dns.rrset.RRset, dns.rrset.RRset]:
    """The apex CDS (SHA-256) and CDNSKEY RRsets of the KSKs or CSKs (RFC 7344), which tell
    a parent that polls for them which DS to publish; `sign_zone` signs them with the KSKs,
    as RFC 7344 §4.1 asks.  Not added to a zone by default: some registries act on them
    even for a zone whose DS is not published yet."""
    sets = []
    for ds in (k.ds() for k in keyset.ksks):
        sets.append(
            dns.rdtypes.ANY.CDS.CDS(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN, dns.rdatatype.CDS, ds.key_tag, ds.algorithm, ds.digest_type,
                ds.digest,
            )
        )  # fmt: skip
    keys = [
        dns.rdtypes.ANY.CDNSKEY.CDNSKEY(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, dns.rdatatype.CDNSKEY, k.flags, 3, k.algorithm, k.dnskey.key
        )
        for k in keyset.ksks
    ]
    return (
        dns.rrset.from_rdata_list(keyset.zone, ttl, sets),
        dns.rrset.from_rdata_list(keyset.zone, ttl, keys),
    )


def expiry(rrsig: dns.rrset.RRset) -> int:
    """When the first signature of an RRSIG RRset expires (POSIX seconds)."""
    return min(int(rd.expiration) for rd in rrsig)


def needs_refresh(rrsig: dns.rrset.RRset, now: float, policy: Policy) -> bool:
    """True when a signature of `rrsig` has less than `refresh` of the validity left."""
    return expiry(rrsig) - now < policy.refresh * policy.validity


def refresh_at(rrsig: dns.rrset.RRset, policy: Policy) -> float:
    """When `rrsig` starts to need refreshing (POSIX seconds): a re-signer's next wake-up is
    the earliest of these."""
    return expiry(rrsig) - policy.refresh * policy.validity


@dataclass(frozen=True, slots=True)
class SignedZone:
    """A zone with its signatures: `rrsets` (the data, DNSKEY, the chain) and `rrsigs`, one
    RRSIG RRset per signed RRset, keyed by (owner, covered type)."""

    origin: dns.name.Name
    rrsets: tuple[dns.rrset.RRset, ...]
    rrsigs: dict[tuple[dns.name.Name, int], dns.rrset.RRset]

    def all(self) -> list[dns.rrset.RRset]:
        """Every RRset, each signed one followed by its RRSIGs (zone-file order)."""
        out: list[dns.rrset.RRset] = []
        for rrset in self.rrsets:
            out.append(rrset)
            sig = self.rrsigs.get((rrset.name, int(rrset.rdtype)))
            if sig is not None:
                out.append(sig)
        return out

    def to_text(self) -> str:
        """The signed zone as a master file (SOA first), for `dnssec-verify` and friends."""
        rrsets = sorted(
            self.all(), key=lambda r: r.name != self.origin or r.rdtype != dns.rdatatype.SOA
        )
        return "".join(r.to_text(relativize=False) + "\n" for r in rrsets)


def sign_zone(
    origin: dns.name.Name,
    rrsets: Iterable[dns.rrset.RRset],
    keyset: KeySet,
    now: float,
    policy: Policy,
    method: denial.Denial = "nsec",
    *,
    dnskey_ttl: int = 3600,
    denial_ttl: int | None = None,
) -> SignedZone:
    """Sign a whole zone: `rrsets` (SOA and apex NS included; glue and delegations as they
    are) plus the DNSKEY RRset and the NSEC/NSEC3 chain.  `denial_ttl` defaults to the
    SOA's minimum capped by its TTL (RFC 9077)."""
    data = [r for r in rrsets if len(r)]
    soa = next(r for r in data if r.name == origin and r.rdtype == dns.rdatatype.SOA)
    if denial_ttl is None:
        denial_ttl = min(soa.ttl, soa[0].minimum)
    keys_rrset, keys_sig = dnskey(keyset, dnskey_ttl, now, policy)
    data = [r for r in data if not (r.name == origin and r.rdtype == dns.rdatatype.DNSKEY)]
    data.append(keys_rrset)
    names = denial.authoritative(origin, denial.owner_types(data))
    rrsigs = {(origin, int(dns.rdatatype.DNSKEY)): keys_sig}
    for rrset in data:
        key = (rrset.name, int(rrset.rdtype))
        if key not in rrsigs and denial.signed(origin, rrset.name, int(rrset.rdtype), names):
            by_ksk = rrset.name == origin and rrset.rdtype in _KSK_SIGNED
            rrsigs[key] = sign(rrset, keyset.ksks if by_ksk else keyset.zsks, now, policy)
    chain = denial.chain(origin, names, denial_ttl, method)
    for rrset in chain:
        rrsigs[(rrset.name, int(rrset.rdtype))] = sign(rrset, keyset.zsks, now, policy)
    return SignedZone(origin, (*data, *chain), rrsigs)
