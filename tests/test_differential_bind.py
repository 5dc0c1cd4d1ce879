"""Differential test: the same zone served by real BIND 9 and by us, a few thousand queries.

Both servers get the same seeded, generated queries (names with random case and 8-bit
octets, many types, classes, header flags, EDNS on and off with options and buffer sizes,
TSIG with a shared key, an unknown key and a wrong secret, UDP and TCP, and malformed
packets) and their replies are compared: rcode, opcode, flags,
the question echoed, OPT presence, version, DO bit and options, whether the reply is
signed and its TSIG error, and the answer, authority
and additional sections as sets of RRs (owner compared without case, TTL included).

Every difference is either fixed or listed in :data:`ALLOWED` with its RFC reason; a new
one fails the test with a few examples.  BIND runs with `minimal-responses yes` (we never
add NS/glue to positive answers, RFC 2181 §9 lets a server leave them out) and
`answer-cookie no` (we do not do DNS cookies, RFC 7873 §5.2 lets a server ignore them).
"""

from __future__ import annotations

import base64
import random
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import pytest
from dns_exchange import exchange, summary

from dnsfailover.model import RecordSet, Soa, ZoneContent
from dnsfailover.server import DnsServer, ZoneSnapshot

NAMED = Path("/usr/sbin/named")
HOST = "127.0.0.1"
ORIGIN = "diff.test."
IDENTITY = "diff-ident"
QUERIES = 3000
SEED = 15

# (relative name, type, values); TTL 300.  Failover names are pinned: our side serves them
# as managed sets (what a decision publishes), BIND as plain records.
STATIC: list[tuple[str, str, list[str]]] = [
    ("@", "NS", [f"ns1.{ORIGIN}", f"ns2.{ORIGIN}"]),
    ("@", "MX", [f"10 mail.{ORIGIN}", f"20 mx2.{ORIGIN}"]),
    ("@", "TXT", ['"v=spf1 -all"']),
    ("@", "CAA", ['0 issue "letsencrypt.org"']),
    ("ns1", "A", ["192.0.2.53"]),
    ("ns2", "A", ["192.0.2.54"]),
    ("ns2", "AAAA", ["2001:db8::54"]),
    ("mail", "A", ["192.0.2.25"]),
    ("www", "A", ["192.0.2.1", "192.0.2.2"]),
    ("www", "AAAA", ["2001:db8::1"]),
    ("txt", "TXT", ['"hello world"', '"a\\"quote" "two strings"', "\\255bin"]),
    ("alias", "CNAME", [f"www.{ORIGIN}"]),
    ("chain", "CNAME", [f"alias.{ORIGIN}"]),
    ("external", "CNAME", ["www.elsewhere.invalid."]),
    ("dangling", "CNAME", [f"missing.{ORIGIN}"]),
    ("*.wild", "A", ["192.0.2.100"]),
    ("*.wild", "TXT", ['"wild"']),
    ("host.wild", "A", ["192.0.2.101"]),
    ("*.walias", "CNAME", [f"www.{ORIGIN}"]),
    ("a.ent", "TXT", ['"under an empty non-terminal"']),
    ("sub", "NS", [f"ns.sub.{ORIGIN}", "ns.elsewhere.invalid."]),
    ("ns.sub", "A", ["192.0.2.60"]),
    ("into-sub", "CNAME", [f"www.sub.{ORIGIN}"]),
    ("_sip._udp", "SRV", [f"0 5 5060 www.{ORIGIN}"]),
    ("ptr", "PTR", [f"www.{ORIGIN}"]),
    ("big", "A", [f"10.0.0.{i}" for i in range(1, 61)]),
    ("drained", "TXT", ['"the A set is drained"']),  # BIND has no empty RRsets: name exists
]
PINNED: list[tuple[str, str, list[str]]] = [
    ("fo", "A", ["192.0.2.11", "192.0.2.12"]),
    ("fo6", "AAAA", ["2001:db8::11"]),
    ("drained", "A", []),  # all_down=serve_none: the name exists, NODATA
    ("passive", "A", ["192.0.2.41"]),
]
SECRET = base64.b64encode(b"differential-test-secret-32bytes").decode()
KEY = dns.tsig.Key("diff-key.", SECRET, dns.tsig.HMAC_SHA256)
STRANGER = dns.tsig.Key("stranger-key.", SECRET, dns.tsig.HMAC_SHA256)
FORGED = dns.tsig.Key("diff-key.", base64.b64encode(b"x" * 32).decode(), dns.tsig.HMAC_SHA256)
SOA_TEXT = f"ns1.{ORIGIN} hostmaster.{ORIGIN} 2026120201 7200 900 1209600 300"

NAMES = [
    "@", "www", "mail", "ns1", "ns2", "txt", "alias", "chain", "external", "dangling",
    "x.wild", "a.b.wild", "host.wild", "wild", "y.walias", "a.ent", "ent", "sub", "www.sub",
    "ns.sub", "deep.er.sub", "into-sub", "_sip._udp", "_udp", "ptr", "big", "fo", "fo6",
    "drained", "passive", "nope", "x.nope", "*.wild",
]  # fmt: skip
TYPES = [
    "A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "SRV", "CAA", "PTR", "ANY", "DS",
    "TYPE666", "DNSKEY", "HINFO",
]  # fmt: skip

ALLOWED: dict[str, str] = {
    "any": "QTYPE ANY gets one RRset, which RFC 8482 §4.2 allows; BIND gives every RRset",
    "nsid": "NSID (RFC 5001) is optional; BIND answers it (server-id is set), we do not",
    "opcode": "other opcodes get NOTIMP with the question and RD/CD echoed (RFC 1035 §4.1.1 "
    "leaves the echo open; we accept no NOTIFY or UPDATE: a primary); BIND leaves both "
    "out, answers NOTIFY for its zone FORMERR and checks a message's format first",
    "qclass-any": "QCLASS * (ANY): BIND answers FORMERR, we REFUSE it as any class but IN "
    "(RFC 6895 §3.2 leaves QCLASS * queries to the server)",
    "chaos-rrl": "BIND's built-in _bind view rate-limits CH answers (3/s, slip 0): over UDP "
    "most of them get no reply from BIND",
    "ede": "BIND adds an Extended DNS Error option (RFC 8914, optional) to some refusals",
    "no-question": "a query without a question: FORMERR (RFC 1035 §4.1.2); BIND 9.18 "
    "answers SERVFAIL when it has an OPT (it serves COOKIE-only queries, RFC 7873 §5.4)",
    "tc-partial": "a truncated UDP answer carries no records, which RFC 2181 §9 allows (the "
    "client retries over TCP and must not use a partial RRset); BIND sends what fits",
    "class-tsig": "a signed query of a class other than IN and CH: BIND has no view for the "
    "class, so it knows no key there and refuses it with TSIG error BADKEY; we check the "
    "TSIG against our keys first (RFC 8945 §5.2) and sign the refusal of a valid one",
    "tc-ad": "BIND leaves the query's AD bit on some truncated replies; we never set AD on "
    "data we do not authenticate (RFC 6840 §5.8)",
    "ns-additional": "the in-zone addresses of an NS answer's nameservers are optional "
    "additional data (RFC 1034 §4.3.2 step 6); BIND leaves them out when the client's "
    "buffer is 512 bytes or less, we add them while they fit",
    "formerr-question": "a message refused before it is parsed (records in the answer or "
    "authority section) gets a header-only FORMERR (RFC 1035 does not say what a FORMERR "
    "carries); BIND echoes the question",
}
"""Known, accepted differences and their reason; `classify` tags each difference."""


def _allowed(kind: str) -> bool:
    return bool(kind) and all(tag in ALLOWED for tag in kind.split("+"))


# --- the two servers ---------------------------------------------------------------------


def _rel(name: str) -> str:
    return ORIGIN if name == "@" else f"{name}.{ORIGIN}"


def our_zone() -> ZoneContent:
    soa = Soa(f"ns1.{ORIGIN}", f"hostmaster.{ORIGIN}", 2026120201, 7200, 900, 1209600, 300, 300)
    static = tuple(
        sorted(
            (RecordSet(_rel(n), t, 300, tuple(v)) for n, t, v in STATIC),
            key=lambda r: (r.name, r.rtype),
        )
    )
    managed = {(_rel(n), t): RecordSet(_rel(n), t, 300, tuple(v)) for n, t, v in PINNED}
    return ZoneContent(ORIGIN, soa, static=static, managed=managed)


def bind_zone_file() -> str:
    lines = [f"$ORIGIN {ORIGIN}", f"@ 300 IN SOA {SOA_TEXT}"]
    for name, rtype, values in STATIC + PINNED:
        lines += [f"{name} 300 IN {rtype} {value}" for value in values]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 now (named binds both)."""
    for _ in range(20):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


@pytest.fixture
def named(tmp_path: Path) -> Iterator[int]:
    """BIND 9 serving the zone on 127.0.0.1; yields its port."""
    if not NAMED.exists():
        pytest.fail("BIND 9 is not installed: apt-get install bind9 (.ci/run does)")
    directory = tmp_path / "named"
    directory.mkdir()
    (directory / "zone.db").write_text(bind_zone_file())
    port = free_port()
    (directory / "named.conf").write_text(
        f"""\
key "diff-key" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    listen-on port {port} {{ {HOST}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    minimal-responses yes;
    answer-cookie no;
    server-id "{IDENTITY}";
    hostname "{IDENTITY}";
}};
zone "{ORIGIN}" {{ type primary; file "{directory}/zone.db"; }};
"""
    )
    log = directory / "named.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(NAMED), "-4", "-g", "-c", str(directory / "named.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while b"running" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"named did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def ours() -> AsyncIterator[int]:
    snapshot = ZoneSnapshot.build([our_zone()])
    # UDP on its own thread (recvmmsg batches), as `serve` runs it
    async with DnsServer(snapshot, port=0, identity=IDENTITY, udp_thread=True) as srv:
        assert srv.address is not None
        srv.keyring = {KEY.name: KEY}
        yield srv.address[1]


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    wire: bytes
    tcp: bool
    what: str  # for failure messages
    malformed: bool = False
    nsid: bool = False
    rdclass: int = dns.rdataclass.IN
    rdtype: int = dns.rdatatype.A

    @property
    def opcode(self) -> int:
        return (self.wire[2] >> 3) & 0xF if len(self.wire) > 2 else 0


def _mixed_case(rng: random.Random, label: bytes) -> bytes:
    return bytes(c ^ 0x20 if 97 <= (c | 0x20) <= 122 and rng.random() < 0.3 else c for c in label)


def _name(rng: random.Random) -> dns.name.Name:
    roll = rng.random()
    if roll < 0.08:  # outside every zone served
        base = dns.name.from_text(rng.choice(["example.org.", "test.", ".", "diff.test.org."]))
    elif roll < 0.25:  # a random label, often with 8-bit octets (RFC 2181 §11)
        length = rng.randint(1, 20)
        label = bytes(rng.choice(b"abcxyz-_09\x00\x80\xe9\xff\x2e\x20") for _ in range(length))
        parent = dns.name.from_text(_rel(rng.choice(["@", "wild", "sub", "nope", "walias"])))
        base = dns.name.Name([label, *parent.labels])
    else:
        base = dns.name.from_text(_rel(rng.choice(NAMES)))
    return dns.name.Name([_mixed_case(rng, label) for label in base.labels])


def _well_formed(rng: random.Random, qid: int) -> Query:
    name = _name(rng)
    rdclass = dns.rdataclass.IN
    rdtype = dns.rdatatype.from_text(rng.choice(TYPES))
    roll = rng.random()
    if roll < 0.05:
        name = dns.name.from_text(rng.choice(["id.server.", "hostname.bind.", "ID.Server."]))
        rdclass, rdtype = dns.rdataclass.CH, dns.rdatatype.TXT
    elif roll < 0.08:
        rdclass = rng.choice([dns.rdataclass.CH, dns.rdataclass.HS, dns.rdataclass.ANY])
    edns: int | bool = False
    payload, options, ednsflags = 1232, list[dns.edns.Option](), 0
    if rng.random() < 0.7:
        edns = 1 if rng.random() < 0.05 else 0
        payload = rng.choice([0, 100, 512, 600, 1232, 1400, 4096, 65535])
        ednsflags = dns.flags.DO if rng.random() < 0.3 else 0
        if rng.random() < 0.2:
            code = rng.choice([65001, 12, 3])  # an unknown option, padding, NSID
            data = b"" if code == 3 else b"\0" * 4
            options.append(dns.edns.GenericOption(dns.edns.OptionType.make(code), data))
    query = dns.message.make_query(
        name,
        rdtype,
        rdclass,
        use_edns=edns,
        payload=payload,
        ednsflags=ednsflags,
        options=options,
        id=qid,
    )
    query.flags = 0
    for flag in (dns.flags.RD, dns.flags.CD, dns.flags.AD):
        if rng.random() < 0.4:
            query.flags |= flag
    signed = rng.random()
    if signed < 0.06:  # TSIG (RFC 8945): the shared key, a key neither has, a wrong secret
        query.use_tsig([KEY, STRANGER, FORGED][int(signed / 0.02)])
    if rng.random() < 0.03:
        query.set_opcode(rng.choice([dns.opcode.NOTIFY, dns.opcode.STATUS, dns.opcode.IQUERY]))
    tcp = rng.random() < 0.2
    text = f"{name} {dns.rdataclass.to_text(rdclass)} {dns.rdatatype.to_text(rdtype)}"
    opcode = dns.opcode.to_text(query.opcode())
    what = f"{opcode} {text} flags={dns.flags.to_text(query.flags)} edns={edns} payload={payload}"
    codes = [o.otype for o in options]
    what = f"{'tcp' if tcp else 'udp'} {what} opts={codes}"
    return Query(query.to_wire(), tcp, what, False, 3 in codes, rdclass, rdtype)


def _malformed(rng: random.Random, qid: int) -> Query:
    base = _well_formed(rng, qid)
    good = bytearray(base.wire)
    kind = rng.choice(["cut", "qdcount", "ancount", "pointer", "garbage", "qr", "label"])
    if kind == "cut":
        good = good[: rng.randint(12, max(12, len(good) - 1))]
    elif kind == "qdcount":
        good[4:6] = struct.pack("!H", rng.choice([0, 2, 9]))
    elif kind == "ancount":
        good[6:8] = struct.pack("!H", 1)
    elif kind == "pointer":
        good[12:14] = b"\xc0\x0c"  # the question's name points at itself
    elif kind == "garbage":
        good += bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
    elif kind == "qr":
        good[2] |= 0x80
    else:
        good[12] = rng.choice([0x40, 0x80, 64])  # reserved label types, a 64-octet label
    what = f"malformed {kind} ({base.what}): {bytes(good).hex()}"
    return Query(bytes(good), rng.random() < 0.2, what, True, base.nsid, base.rdclass, base.rdtype)


def queries(count: int, seed: int) -> list[Query]:
    rng = random.Random(seed)
    return [
        (_malformed if rng.random() < 0.04 else _well_formed)(rng, index & 0xFFFF)
        for index in range(count)
    ]


def classify(query: Query, bind: dict[str, object], ours: dict[str, object]) -> str:
    """A name for how two replies differ: the tags of :data:`ALLOWED` that explain it all,
    or else the fields that still differ (never allowed)."""
    a, b = dict(bind), dict(ours)
    tags: list[str] = []

    def explained(tag: str, **bind_fields: object) -> None:
        tags.append(tag)
        a.update(bind_fields)

    for code, tag in ((dns.edns.OptionType.NSID, "nsid"), (dns.edns.OptionType.EDE, "ede")):
        theirs_options, our_options = a.get("options"), b.get("options")
        if (
            isinstance(theirs_options, list)
            and isinstance(our_options, list)
            and code in theirs_options
            and code not in our_options
        ):
            explained(tag, options=[o for o in theirs_options if o != code])
    if query.opcode != dns.opcode.QUERY and a.get("reply", True) and b.get("reply", True):
        fields = ("rcode", "flags", "question", "edns", "do", "payload")
        explained("opcode", **{k: b.get(k) for k in fields})
    rcodes = (a.get("rcode"), b.get("rcode"))
    if query.rdclass == dns.rdataclass.ANY and rcodes in {
        ("FORMERR", "REFUSED"),
        ("FORMERR", "NOTAUTH"),
    }:
        explained("qclass-any", rcode=b.get("rcode"), tsig=b.get("tsig"))
    other_class = query.rdclass not in (dns.rdataclass.IN, dns.rdataclass.CH)
    signed = query.wire.find(b"\x00\xfa\x00\xff") > 0  # a TSIG record (type 250, ANY)
    if other_class and signed and rcodes[0] == "REFUSED":
        explained("class-tsig", rcode=b.get("rcode"), tsig=b.get("tsig"))
    if a == {"reply": None} and not query.tcp and query.rdclass == dns.rdataclass.CH:
        return "chaos-rrl"
    if query.malformed and b.get("question") == [] and a.get("rcode") == b.get("rcode"):
        explained("formerr-question", question=[])
    if query.wire[4:6] == b"\0\0" and (a.get("rcode"), b.get("rcode")) == ("SERVFAIL", "FORMERR"):
        explained("no-question", rcode="FORMERR")
    truncated = "TC" in str(a.get("flags", "")).split() and "TC" in str(b.get("flags", "")).split()
    if truncated and b.get("answer") == frozenset():
        explained("tc-partial", answer=frozenset(), authority=frozenset(), additional=frozenset())
        if set(str(a.get("flags")).split()) == {*str(b.get("flags")).split(), "AD"}:
            explained("tc-ad", flags=b.get("flags"))
    extra, ours_extra = a.get("additional"), b.get("additional")
    if (
        query.rdtype == dns.rdatatype.NS
        and isinstance(extra, frozenset)
        and isinstance(ours_extra, frozenset)
        and extra < ours_extra
    ):
        explained("ns-additional", additional=ours_extra)
    theirs, mine = a.get("answer"), b.get("answer")
    if (
        query.rdtype == dns.rdatatype.ANY
        and isinstance(theirs, frozenset)
        and isinstance(mine, frozenset)
        and mine
        and mine <= theirs
    ):
        explained("any", answer=mine)
    left = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ",".join(left) if left else "+".join(tags)


async def test_bind_and_we_answer_alike(named: int, ours: int) -> None:
    batch = queries(QUERIES, SEED)
    started = time.monotonic()
    wires = [(q.wire, q.tcp) for q in batch]
    theirs_replies = await exchange(named, wires)
    our_replies = await exchange(ours, wires)
    elapsed = time.monotonic() - started
    kinds: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for query, theirs, mine in zip(batch, theirs_replies, our_replies, strict=True):
        a, b = summary(theirs), summary(mine)
        if a == b:
            continue
        kind = classify(query, a, b)
        kinds[kind] += 1
        if not _allowed(kind) and len(examples.setdefault(kind, [])) < 3:
            diff = {k: (a.get(k), b.get(k)) for k in kind.split(",")}
            examples[kind].append(f"{query.what}\n    bind, ours: {diff}")
    print(f"differential: {len(batch)} queries in {elapsed:.1f}s, allowed: {dict(kinds)}")
    unexpected = {k: n for k, n in kinds.items() if not _allowed(k)}
    report = "\n".join(f"{n} x {k}:\n  " + "\n  ".join(examples[k]) for k, n in unexpected.items())
    assert not unexpected, f"{sum(unexpected.values())} unexplained differences:\n{report}"
    assert elapsed < 60, f"{len(batch)} queries took {elapsed:.1f}s"
