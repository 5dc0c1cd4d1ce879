"""Outgoing zone transfers over TCP: AXFR (RFC 5936) and IXFR (RFC 1995), optionally TSIG-signed.

:class:`TransferHandler` is the DNS server's ``tcp_handler``: it looks at each TCP query,
lets everything but AXFR/IXFR through to the normal answer path, and answers transfers from
the zones' current contents and recent versions.  dnslib has no TSIG, so this module speaks
dnspython throughout: one library parses, verifies, builds, renders and signs.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rrset
import dns.tsig
from dnslib import RR as DnslibRR

from dnsfailover.config.schema import Config
from dnsfailover.model import Key, RecordSet, Soa, ZoneContent
from dnsfailover.rdata import Labels
from dnsfailover.server.lookup import ZoneData
from dnsfailover.server.secure import SIGNER_SETS
from dnsfailover.server.tsig import Keyring, key_name, response_shell, tsig_error
from dnsfailover.server.versions import Delta
from dnsfailover.server.zone import ZoneSnapshot

log = logging.getLogger("dnsfailover.server.xfr")

AXFR = int(dns.rdatatype.AXFR)
IXFR = int(dns.rdatatype.IXFR)
SOA = int(dns.rdatatype.SOA)
CHUNK = 16_000
"""Uncompressed bytes of records per message: well under 65535 with question and TSIG."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RR = tuple[dns.name.Name, int, int, dns.rdata.Rdata]  # name, type, ttl, rdata


class ZoneSource(Protocol):
    """What transfers are served from (:class:`dnsfailover.server.embedded.EmbeddedZones`):
    each zone's content and its recent differences, oldest first, and the snapshot served
    (a signed zone's signatures and denial chain are there)."""

    contents: dict[str, ZoneContent]
    history: dict[str, deque[Delta]]
    snapshot: ZoneSnapshot


@dataclass(frozen=True, slots=True)
class Peer:
    """One `allow_transfer` entry: the address must be in ``network`` and the query signed
    with ``key``, for whichever of the two is given."""

    network: Network | None = None
    key: dns.name.Name | None = None

    def allows(self, address: Address | None, key: dns.name.Name | None) -> bool:
        if self.network is not None and (address is None or address not in self.network):
            return False
        return self.key is None or self.key == key


def wire_qtype(wire: bytes) -> int | None:
    """The question type of a one-question QUERY, read straight off the wire (None: other)."""
    if len(wire) < 17 or (wire[2] >> 3) & 0xF != 0 or wire[4:6] != b"\x00\x01":
        return None
    pos = 12
    while pos < len(wire):
        length = wire[pos]
        if length == 0:
            return int.from_bytes(wire[pos + 1 : pos + 3]) if pos + 3 <= len(wire) else None
        if length & 0xC0:
            return None  # a compressed question name: let the normal path judge it
        pos += length + 1
    return None


@dataclass
class _Rendered:
    """The current zone version as dnspython RRsets (built once per version, for AXFR)."""

    content: ZoneContent
    soa: dns.rrset.RRset
    rrsets: list[dns.rrset.RRset]


def soa_rrset(origin: str, soa: Soa) -> dns.rrset.RRset:
    text = (
        f"{soa.mname} {soa.rname} {soa.serial} {soa.refresh} {soa.retry} {soa.expire} {soa.minimum}"
    )
    return dns.rrset.from_text(origin, soa.ttl, "IN", "SOA", text)


def _rrsets(origin: str, sets: Iterable[RecordSet]) -> list[dns.rrset.RRset]:
    name = dns.name.from_text(origin)
    return [
        dns.rrset.from_text_list(
            rs.name, rs.ttl, "IN", rs.rtype, list(rs.values), origin=name, relativize=False
        )
        for rs in sets
        if rs.values
    ]


def _rrs(rrsets: Iterable[dns.rrset.RRset]) -> frozenset[RR]:
    return frozenset((r.name, int(r.rdtype), r.ttl, rd) for r in rrsets for rd in r)


def _render(content: ZoneContent, zone: ZoneData | None = None) -> _Rendered:
    """The zone as AXFR sends it; with `zone` (the version served, signed), its DNSKEY
    (CDS, CDNSKEY, NSEC3PARAM), every RRSIG and the NSEC/NSEC3 chain too."""
    rrsets = _rrsets(content.origin, content.records)
    if zone is not None and zone.secure is not None:
        rrsets += signed_rrsets(zone)
    return _Rendered(content, soa_rrset(content.origin, content.soa), rrsets)


def _name(labels: Labels) -> dns.name.Name:
    return dns.name.Name((*labels, b""))


def _as_rrset(labels: Labels, rrs: Sequence[DnslibRR]) -> dns.rrset.RRset:
    """dnslib RRs held as wire rdata (the signer's) as a dnspython RRset."""
    rdatas = [
        dns.rdata.from_wire(
            dns.rdataclass.IN,
            dns.rdatatype.RdataType(int(rr.rtype)),
            rr.rdata.data,
            0,
            len(rr.rdata.data),
        )
        for rr in rrs
    ]
    return dns.rrset.from_rdata_list(_name(labels), rrs[0].ttl, rdatas)


def signed_rrsets(zone: ZoneData) -> list[dns.rrset.RRset]:
    """What signing adds to `zone`'s data: the apex DNSKEY (CDS, CDNSKEY, NSEC3PARAM)
    RRsets, the RRSIGs of every authoritative RRset and the denial chain, signed."""
    secure = zone.secure
    assert secure is not None
    out = [
        _as_rrset(zone.origin, zone.rrsets[zone.origin, code])
        for code in SIGNER_SETS
        if (zone.origin, code) in zone.rrsets
    ]
    for (name, _code), signed in sorted(secure.sets.items()):
        if signed.whole:
            out.append(_as_rrset(name, signed.whole))
    for rr, sigs in secure.chain.records.values():
        owner = tuple(bytes(label).lower() for label in rr.rname.label)
        out += [_as_rrset(owner, (rr,)), _as_rrset(owner, sigs)]
    return out


def _group(rrs: Sequence[RR]) -> list[dns.rrset.RRset]:
    """RRs (sorted) as RRsets by name, type and TTL."""
    out: dict[tuple[dns.name.Name, int, int], dns.rrset.RRset] = {}
    for name, rdtype, ttl, rd in rrs:
        rrset = out.get((name, rdtype, ttl))
        if rrset is None:
            rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.RdataType(rdtype))
            out[name, rdtype, ttl] = rrset
            rrset.update_ttl(ttl)
        rrset.add(rd)
    return list(out.values())


def _sorted(rrs: frozenset[RR]) -> list[RR]:
    return sorted(rrs, key=lambda r: (r[0], r[1], r[2], r[3].to_digestable()))


class TransferHandler:
    """Answers AXFR and IXFR queries over TCP for the zones of ``zones``, per ``acl``.

    ``acl`` maps a zone origin to the peers allowed to transfer it; a zone without an entry
    is refused to everyone.  Queries signed with a key of ``keyring`` are verified and every
    reply to them is signed (RFC 8945 §5.3.1 allows fewer; signing all is simplest to check).
    """

    def __init__(
        self,
        zones: ZoneSource,
        acl: Mapping[str, Sequence[Peer]],
        keyring: Keyring | None = None,
        *,
        chunk: int = CHUNK,
    ) -> None:
        self._zones = zones
        self._acl = dict(acl)
        self._keyring: Keyring = dict(keyring or {})
        self._chunk = chunk
        self._cache: dict[str, _Rendered] = {}

    def update(self, acl: Mapping[str, Sequence[Peer]], keyring: Keyring | None) -> None:
        """A reload: new peers and keys apply to the next transfer."""
        self._acl = dict(acl)
        self._keyring = dict(keyring or {})

    def claims(self, wire: bytes) -> bool:
        """Transfers.  Everything else goes to the normal path untouched (which verifies and
        signs a secondary's signed SOA query too: :mod:`dnsfailover.server.signed`)."""
        # (an uncompressed AXFR or IXFR question holds one of these: most frames skip the walk)
        if b"\x00\x00\xfc" not in wire and b"\x00\x00\xfb" not in wire:
            return False
        return wire_qtype(wire) in (AXFR, IXFR)

    def __call__(self, wire: bytes, peer: tuple[str, int]) -> list[bytes] | None:
        if not self.claims(wire):
            return None
        try:
            return self._transfer(wire, peer)
        except Exception:
            log.warning("xfr: failed for %s", peer[0], exc_info=True)
            return self._servfail(wire)

    # -- request checks ---------------------------------------------------------------------

    def _transfer(self, wire: bytes, peer: tuple[str, int]) -> list[bytes] | None:
        try:
            query = dns.message.from_wire(wire, keyring=False)  # structure only, no TSIG check
        except dns.exception.DNSException:
            return None  # malformed: the normal path answers FORMERR
        if len(query.question) != 1 or query.question[0].rdclass != dns.rdataclass.IN:
            return None
        question = query.question[0]
        origin = question.name.to_text().lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        keyname = query.keyname
        if keyname is not None:
            key = self._keyring.get(keyname)
            if key is None or key.algorithm != query.keyalgorithm:
                log.warning("xfr: %s %s from %s: unknown TSIG key", kind, origin, peer[0])
                return [tsig_error(query, dns.rcode.BADKEY)]
            try:
                query = dns.message.from_wire(wire, keyring={keyname: key})
            except dns.tsig.BadTime:
                log.warning("xfr: %s %s from %s: TSIG time out of range", kind, origin, peer[0])
                return [tsig_error(query, dns.rcode.BADTIME)]
            except (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm):
                log.warning("xfr: %s %s from %s: bad TSIG signature", kind, origin, peer[0])
                return [tsig_error(query, dns.rcode.BADSIG)]
        content = self._zones.contents.get(origin)
        try:
            address = ipaddress.ip_address(peer[0].split("%")[0])
        except ValueError:
            address = None
        allowed = any(p.allows(address, keyname) for p in self._acl.get(origin, ()))
        if content is None or not allowed:
            log.info("xfr: %s %s from %s refused", kind, origin, peer[0])
            return [self._reply(query, dns.rcode.REFUSED).to_wire()]
        messages = self._answer(query, content, kind)
        log.info(
            "xfr: %s %s serial %d to %s%s: %d messages",
            kind,
            origin,
            content.soa.serial,
            peer[0],
            f" key {keyname}" if keyname else "",
            len(messages),
        )
        return messages

    def _servfail(self, wire: bytes) -> list[bytes] | None:
        try:
            query = dns.message.from_wire(wire, keyring=False)
        except dns.exception.DNSException:
            return None
        return [response_shell(query, dns.rcode.SERVFAIL).to_wire()]

    @staticmethod
    def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.set_rcode(rcode)
        return reply

    # -- answers ----------------------------------------------------------------------------

    def _signed(self, content: ZoneContent) -> ZoneData | None:
        """The served version of `content`'s zone when it is signed."""
        zone = self._zones.snapshot.zone(content.origin)
        if zone is None or zone.secure is None or zone.serial != content.soa.serial:
            return None
        return zone

    def _current(self, content: ZoneContent) -> _Rendered:
        """The rendered form of the current version (what AXFR sends), made once."""
        found = self._cache.get(content.origin)
        if found is not None and found.content is content:
            return found
        rendered = _render(content, self._signed(content))
        self._cache[content.origin] = rendered
        return rendered

    def _answer(self, query: dns.message.Message, content: ZoneContent, kind: str) -> list[bytes]:
        soa = soa_rrset(content.origin, content.soa)
        sections: list[dns.rrset.RRset]
        # A signed zone's differences are not kept with their signatures: IXFR gets the
        # whole zone (RFC 1995 §4 allows it), unless the client is current.
        signed = self._signed(content) is not None
        chain = self._chain(query, content) if kind == "IXFR" else None
        if signed and chain:
            chain = None
        if chain is None:
            current = self._current(content)
            sections = [current.soa, *current.rrsets, current.soa]
        elif not chain:
            sections = [soa]  # the client is current
        else:
            # One difference sequence per serial since the client's (RFC 1995 §4), made from
            # the differences kept: its cost is that of the changes, not of the zone.
            sections = [soa]
            for step in _steps(chain):
                before, after = _difference(step)
                old = _rrs(_rrsets(content.origin, before))
                new = _rrs(_rrsets(content.origin, after))
                sections.append(soa_rrset(content.origin, step[0].old))
                sections += _group(_sorted(old - new))
                sections.append(soa_rrset(content.origin, step[-1].new))
                sections += _group(_sorted(new - old))
            sections.append(soa)
        return list(self._messages(query, sections))

    def _chain(self, query: dns.message.Message, content: ZoneContent) -> list[Delta] | None:
        """The differences from the client's serial to ``content`` (none when the client is
        current); None when the history does not reach back: send the whole zone."""
        client = _client_serial(query)
        if client is None:
            return None
        if client == content.soa.serial:
            return []
        history = list(self._zones.history.get(content.origin, ()))
        if not history or history[-1].new.serial != content.soa.serial:
            return None
        starts = [i for i, d in enumerate(history) if d.old.serial == client]
        return history[starts[-1] :] if starts else None

    def _messages(
        self, query: dns.message.Message, sections: list[dns.rrset.RRset]
    ) -> Iterator[bytes]:
        """Pack RRsets into messages of at most ~``chunk`` bytes, signed as a sequence."""
        ctx: dns.tsig.HMACTSig | dns.tsig.GSSTSig | None = None
        first = True
        batch: list[dns.rrset.RRset] = []
        size = 0
        for index, rrset in enumerate(sections):
            batch.append(rrset)
            size += _wire_size(rrset)
            last = index == len(sections) - 1
            if not last and size + _wire_size(sections[index + 1]) <= self._chunk:
                continue
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            if not first:
                reply.question = []
            reply.answer = batch
            if query.had_tsig:
                yield reply.to_wire(max_size=65535, multi=True, tsig_ctx=ctx)
                ctx = reply.tsig_ctx
            else:
                yield reply.to_wire(max_size=65535)
            first, batch, size = False, [], 0


def _wire_size(rrset: dns.rrset.RRset) -> int:
    """Uncompressed wire size: an upper bound of what the RRset takes in a message."""
    name = len(rrset.name.to_wire() or b"")
    return sum(name + 10 + len(rd.to_digestable()) for rd in rrset)


def _client_serial(query: dns.message.Message) -> int | None:
    for rrset in query.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            rd = rrset[0]
            assert isinstance(rd, dns.rdtypes.ANY.SOA.SOA)
            return int(rd.serial)
    return None


def transfer_acl(config: Config) -> dict[str, tuple[Peer, ...]]:
    """Each embedded zone's `allow_transfer`, as peers (zones without one: no entry)."""
    return {
        origin: tuple(
            Peer(
                ipaddress.ip_network(p.address) if p.address is not None else None,
                key_name(p.key) if p.key is not None else None,
            )
            for p in zone.allow_transfer
        )
        for origin, zone in config.zones.items()
        if zone.allow_transfer
    }


def _steps(chain: list[Delta]) -> list[list[Delta]]:
    """The chain by serial: a publish that kept its serial joins the next step."""
    steps: list[list[Delta]] = []
    pending: list[Delta] = []
    for delta in chain:
        pending.append(delta)
        if delta.new.serial != delta.old.serial:
            steps.append(pending)
            pending = []
    if pending:
        steps.append(pending)
    return steps


def _difference(deltas: list[Delta]) -> tuple[list[RecordSet], list[RecordSet]]:
    """The sets the differences touched, as they were before them and as they are after."""
    first: dict[Key, RecordSet | None] = {}  # before the first change (None: absent)
    last: dict[Key, RecordSet | None] = {}  # after the last change (None: gone)
    for delta in deltas:
        came = {(rs.name, rs.rtype) for rs in delta.added}
        for rs in delta.removed:
            key = (rs.name, rs.rtype)
            first.setdefault(key, rs)
            if key not in came:
                last[key] = None
        for rs in delta.added:
            key = (rs.name, rs.rtype)
            first.setdefault(key, None)
            last[key] = rs
    before = [rs for rs in first.values() if rs is not None]
    after = [rs for rs in last.values() if rs is not None]
    return before, after
