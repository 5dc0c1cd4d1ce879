"""End to end: `dnsfailover serve` signs a zone and real validators accept what it answers.

Not our own code judges the signatures: BIND's `delv`, with our key as its trust anchor,
validates each answer straight from the server (positive, NXDOMAIN, NODATA at a name, at an
empty non-terminal and at a wildcard-expanded name, the wildcard answer, the DS at a secure
delegation and the proof of no DS at an insecure one), before and after a failover, for NSEC
and NSEC3 and for algorithms 13 and 15.  Then a real BIND 9 validating resolver, whose only
trust anchor is a local root's key, resolves our names through the chain root -> test. ->
example.test. (the DS our `dnssec ds` prints is in the parent) and sets AD, also right after
a failover.  Negative controls show that the same harness fails on a key it must not trust.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import pytest
from dnssec_world import (
    Delv,
    Named,
    NetNs,
    ServeIn,
    ad,
    anchor_file,
    authoritative,
    delv,
    dnskey_of,
    dsfromkey,
    keygen,
    rcode,
    resolver,
    signed_zone,
    values,
    zone_file,
)
from support import Server, TcpListener, run_cli, wait_for

pytestmark = pytest.mark.e2e

ZONE = "example.test."
INTERVAL, FALL, RISE, TIMEOUT = 0.2, 3, 2, 0.15
DETECTION = INTERVAL * FALL + TIMEOUT
PRIMARY, BACKUP = "127.0.0.21", "127.0.0.31"
VALID = "fully validated"
NEGATIVE = "negative response, fully validated"


def config(
    dnssec: str,
    listeners: tuple[TcpListener, TcpListener],
    *,
    ns: str,
    child: str,
    secure_ds: str,
    extra_zone: str = "",
) -> str:
    """Our zone: a health-checked active-passive name (TTL 1), a static name, a wildcard, an
    empty non-terminal (er. and deep.er. above txt.deep.er.), a delegation with a DS
    (secure.sub) and one without (insecure.sub), both served by `child`."""
    primary, backup = listeners
    return f"""\
checks:
  web:
    type: tcp
    port: 9
    interval: {int(INTERVAL * 1000)}ms
    timeout: {int(TIMEOUT * 1000)}ms
    rise: {RISE}
    fall: {FALL}
zones:
  {ZONE}:
    soa: {{mname: ns1.{ZONE}, rname: hostmaster.{ZONE}, minimum: 30}}
    nameservers: [ns1.{ZONE}]
    records:
      ns1: {{type: A, value: {ns}}}
      static: {{type: A, value: 192.0.2.80}}
      "*.wild": {{type: TXT, value: "wildcard"}}
      txt.deep.er: {{type: TXT, value: "an empty non-terminal above"}}
      secure.sub:
        - {{type: NS, value: ns.secure.sub.{ZONE}}}
        - {{type: DS, value: "{secure_ds}"}}
      ns.secure.sub: {{type: A, value: {child}}}
      insecure.sub: {{type: NS, value: ns.insecure.sub.{ZONE}}}
      ns.insecure.sub: {{type: A, value: {child}}}
    failover:
      api:
        policy: active-passive
        check: web
        ttl: 1
        tiers:
          - {{name: primary, endpoints: [{{address: {PRIMARY}, check_port: {primary.port}}}]}}
          - {{name: backup, endpoints: [{{address: {BACKUP}, check_port: {backup.port}}}]}}
    dnssec: {dnssec}
{extra_zone}"""


def ds_rdata(key: Path) -> str:
    """The DS rdata (tag algorithm digest-type digest) of a BIND .key file."""
    return dsfromkey(key).split(" DS ", 1)[1]


def our_key(state: Path, zone: str = ZONE) -> Path:
    """The one CSK serve generated for `zone` beside its state file."""
    (key,) = (state.parent / f"{state.name}.keys" / zone.rstrip(".")).glob("K*.key")
    return key


# -- delv straight at serve ------------------------------------------------------------------


@dataclass
class Direct:
    """serve on 127.0.0.1 (port 0) with a signed zone, and delv with our CSK as its anchor."""

    server: Server
    anchors: Path
    primary: TcpListener
    algorithm: int
    denial: str

    def delv(self, name: str, rtype: str = "A", anchors: Path | None = None) -> Delv:
        return delv(
            "127.0.0.1", self.server.port, anchors or self.anchors, ZONE, name + ZONE, rtype
        )


PARAMS = [
    pytest.param((13, "nsec"), id="13-nsec"),
    pytest.param((13, "nsec3"), id="13-nsec3"),
    pytest.param((15, "nsec"), id="15-nsec"),
    pytest.param((15, "nsec3"), id="15-nsec3"),
]


@pytest.fixture(scope="module", params=PARAMS)
def direct(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Direct]:
    tmp = tmp_path_factory.mktemp("direct")
    algorithm, denial = request.param
    listeners = (TcpListener(PRIMARY), TcpListener(BACKUP))
    child_key = keygen(tmp, f"secure.sub.{ZONE}")
    cfg = tmp / "c.yaml"
    dnssec = f"{{algorithm: {algorithm}, denial: {denial}}}"
    cfg.write_text(
        config(dnssec, listeners, ns="127.0.0.1", child="192.0.2.53", secure_ds=ds_rdata(child_key))
    )
    state = tmp / "state.db"
    server = Server(cfg, state)  # generates the zone's CSK at start
    try:
        anchors = anchor_file(tmp / "anchors.conf", ZONE, dnskey_of(our_key(state)))
        yield Direct(server, anchors, listeners[0], algorithm, denial)
    finally:
        server.stop()
        for listener in listeners:
            listener.close()


def test_positive_answers_validate(direct: Direct) -> None:
    api = direct.delv("api.")
    assert api.verdict == VALID, api.out
    assert api.values("A") == (PRIMARY,)
    assert f"RRSIG\tA {direct.algorithm} 3 1 " in api.out, api.out  # the zone's algorithm
    static = direct.delv("static.")
    assert static.verdict == VALID, static.out
    assert static.values("A") == ("192.0.2.80",)
    for rtype in ("SOA", "NS", "DNSKEY"):
        apex = direct.delv("", rtype)
        assert apex.verdict == VALID, apex.out
    # a wildcard-expanded answer: signed for *.wild, valid for the name asked
    wild = direct.delv("host.wild.", "TXT")
    assert wild.verdict == VALID, wild.out
    assert wild.values("TXT") == ('"wildcard"',)
    # the DS at a secure delegation is the parent's (ours), signed
    ds = direct.delv("secure.sub.", "DS")
    assert ds.verdict == VALID, ds.out
    assert len(ds.values("DS")) == 1


@pytest.mark.parametrize(
    ("name", "rtype", "kind"),
    [
        ("nothing.", "A", "NXDOMAIN"),
        ("deeper.nothing.", "A", "NXDOMAIN"),
        # with NSEC3, the proof of no wildcard is its own record for these two (for nothing.
        # the record covering the next closer name happens to cover *.example.test. too)
        ("x.static.", "A", "NXDOMAIN"),
        ("nothing.deep.er.", "A", "NXDOMAIN"),  # below an empty non-terminal
        ("api.", "TXT", "NXRRSET"),  # NODATA at a name that has other data
        ("er.", "A", "NXRRSET"),  # NODATA at an empty non-terminal
        ("deep.er.", "TXT", "NXRRSET"),
        ("host.wild.", "A", "NXRRSET"),  # NODATA at a wildcard-expanded name
        ("insecure.sub.", "DS", "NXRRSET"),  # an insecure delegation: no DS, proven
        ("static.", "DS", "NXRRSET"),
    ],
)
def test_denials_validate(direct: Direct, name: str, rtype: str, kind: str) -> None:
    got = direct.delv(name, rtype)
    assert got.verdict == NEGATIVE, got.out
    assert f";-${kind}" in got.out, got.out
    # the proof is the configured kind; NSEC3 with RFC 9276's parameters (SHA-1, no opt-out,
    # 0 extra iterations, no salt)
    if direct.denial == "nsec3":
        assert " NSEC3 1 0 0 - " in got.out, got.out
    else:
        assert " NSEC " in got.out, got.out
        assert " NSEC3 " not in got.out, got.out


def test_a_key_we_do_not_serve_is_refused(direct: Direct, tmp_path: Path) -> None:
    """The negative control: the same queries with another key as the anchor fail, so the
    tests above cannot pass without our signatures."""
    other = anchor_file(tmp_path / "other.conf", ZONE, dnskey_of(keygen(tmp_path, ZONE)))
    for name, rtype in (("api.", "A"), ("nothing.", "A"), ("host.wild.", "TXT")):
        got = direct.delv(name, rtype, anchors=other)
        assert got.verdict.startswith("resolution failed"), got.out
        assert "validated" not in got.out, got.out


def test_failover_answer_validates(direct: Direct) -> None:
    """Last for its server: the primary goes away for good."""
    before = direct.delv("api.")
    assert (before.verdict, before.values("A")) == (VALID, (PRIMARY,)), before.out
    direct.primary.close()
    wait_for(lambda: direct.server.answer("api." + ZONE) == (BACKUP,), 5 * DETECTION)
    after = direct.delv("api.")
    assert after.verdict == VALID, after.out
    assert after.values("A") == (BACKUP,)
    assert after.signed_by() == before.signed_by()
    denial = direct.delv("api.", "TXT")
    assert denial.verdict == NEGATIVE, denial.out


# -- a validating BIND resolver, through a local root and a signed parent -----------------------

AUTH, OURS, RESOLVER = "127.0.0.2", "127.0.0.4", "127.0.0.9"
WRONG_ZONE = f"""\
  wrong.test.:
    soa: {{mname: ns1.wrong.test., rname: hostmaster.wrong.test.}}
    nameservers: [ns1.wrong.test.]
    records:
      ns1: {{type: A, value: {OURS}}}
      www: {{type: A, value: 192.0.2.99}}
    dnssec: {{}}
"""


@dataclass
class Chain:
    """In a private network namespace: BIND on AUTH:53 serving the root, test. (which
    delegates example.test. and wrong.test. to us) and our two child zones; serve on
    OURS:53; a validating BIND resolver on RESOLVER:53 that trusts the root's key only."""

    netns: NetNs
    root_anchors: Path
    primary: TcpListener

    def query(self, name: str, rtype: str = "A", *, cd: bool = False) -> dns.message.Message:
        return self.netns.query(name, rtype, RESOLVER, cd=cd)

    def delv(self, name: str, rtype: str = "A") -> Delv:
        return delv(RESOLVER, 53, self.root_anchors, ".", name, rtype, netns=self.netns)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("chain")
    auth = tmp / "auth"
    auth.mkdir()
    netns = NetNs()
    running: list[Named | ServeIn] = []
    listeners: list[TcpListener] = []
    try:
        listeners = [
            netns.call(lambda: TcpListener(PRIMARY)),
            netns.call(lambda: TcpListener(BACKUP)),
        ]
        secure, secure_key = signed_zone(
            auth, f"secure.sub.{ZONE}", f"@ NS ns\nns A {AUTH}\nhost A 192.0.2.53"
        )
        insecure = zone_file(
            auth, f"insecure.sub.{ZONE}", f"@ NS ns\nns A {AUTH}\nhost A 192.0.2.54"
        )
        cfg = tmp / "c.yaml"
        cfg.write_text(
            config(
                "{}",
                (listeners[0], listeners[1]),
                ns=OURS,
                child=AUTH,
                secure_ds=ds_rdata(secure_key),
                extra_zone=WRONG_ZONE,
            )
        )
        state = tmp / "state.db"
        ds = run_cli("dnssec", "ds", str(cfg), ZONE, "--state", str(state))
        assert ds.returncode == 0, ds.stderr
        # wrong.test.'s DS is of a key serve does not have: its answers must not validate
        wrong_ds = dsfromkey(keygen(auth, "wrong.test."))
        test, test_key = signed_zone(
            auth,
            "test.",
            f"@ NS ns\nns A {AUTH}\n"
            f"example NS ns1.example\nns1.example A {OURS}\n{ds.stdout}\n"
            f"wrong NS ns1.wrong\nns1.wrong A {OURS}\n{wrong_ds}",
        )
        root, root_key = signed_zone(
            auth, ".", f"@ NS ns.test.\ntest. NS ns.test.\nns.test. A {AUTH}\n{dsfromkey(test_key)}"
        )
        zones = {
            ".": root,
            "test.": test,
            f"secure.sub.{ZONE}": secure,
            f"insecure.sub.{ZONE}": insecure,
        }
        running.append(authoritative(netns, auth, [AUTH], zones))
        running.append(ServeIn(netns, cfg, state, OURS))
        running.append(resolver(netns, tmp / "resolver", RESOLVER, AUTH, root_key))
        anchors = anchor_file(tmp / "root-anchor.conf", ".", dnskey_of(root_key))
        yield Chain(netns, anchors, listeners[0])
    finally:
        for process in reversed(running):
            process.stop()
        for listener in listeners:
            listener.close()
        netns.close()


def test_resolver_validates_our_answers(chain: Chain) -> None:
    cases = [
        ("api.", "A", "NOERROR", (PRIMARY,)),
        ("static.", "A", "NOERROR", ("192.0.2.80",)),
        ("host.wild.", "TXT", "NOERROR", ('"wildcard"',)),
        ("nothing.", "A", "NXDOMAIN", ()),
        ("x.static.", "A", "NXDOMAIN", ()),
        ("api.", "TXT", "NOERROR", ()),
        ("er.", "A", "NOERROR", ()),
        ("host.wild.", "A", "NOERROR", ()),
        # below our secure delegation: BIND's child, trusted through the DS in our zone
        ("host.secure.sub.", "A", "NOERROR", ("192.0.2.53",)),
    ]
    for name, rtype, code, expected in cases:
        r = chain.query(name + ZONE, rtype)
        assert (rcode(r), values(r, rtype), ad(r)) == (code, expected, True), (name, rtype, r)
    # below the insecure delegation: answered, and provably unsigned (no AD, no SERVFAIL)
    r = chain.query(f"host.insecure.sub.{ZONE}")
    assert (rcode(r), values(r, "A"), ad(r)) == ("NOERROR", ("192.0.2.54",), False), r


def test_delv_through_the_resolver_from_the_root(chain: Chain) -> None:
    """delv validates the whole chain itself, from the root key: our zone is secure, the
    zone below our DS-less delegation is insecure (not bogus)."""
    got = chain.delv(f"api.{ZONE}")
    assert (got.verdict, got.values("A")) == (VALID, (PRIMARY,)), got.out
    got = chain.delv(f"nothing.{ZONE}")
    assert got.verdict == NEGATIVE, got.out
    got = chain.delv(f"host.secure.sub.{ZONE}")
    assert got.verdict == VALID, got.out
    got = chain.delv(f"host.insecure.sub.{ZONE}")
    assert (got.verdict, got.values("A")) == ("unsigned answer", ("192.0.2.54",)), got.out


def test_resolver_refuses_a_zone_whose_ds_is_not_our_key(chain: Chain) -> None:
    """The negative control: wrong.test. is served by the same serve with the same signer,
    but the parent's DS names another key, so the resolver must call it bogus."""
    r = chain.query("www.wrong.test.")
    assert rcode(r) == "SERVFAIL", r
    # the data is there (checking disabled): it is the validation that fails
    r = chain.query("www.wrong.test.", cd=True)
    assert (rcode(r), values(r, "A"), ad(r)) == ("NOERROR", ("192.0.2.99",), False), r
    got = chain.delv("www.wrong.test.")
    assert got.verdict.startswith("resolution failed"), got.out


def test_resolver_validates_the_answer_after_a_failover(chain: Chain) -> None:
    """Last of the chain's tests: the primary goes away for good."""
    r = chain.query(f"api.{ZONE}")
    assert (values(r, "A"), ad(r)) == ((PRIMARY,), True), r
    chain.primary.close()
    # the name's TTL is 1 s: the resolver asks again within a second of serve's failover
    wait_for(lambda: values(chain.query(f"api.{ZONE}"), "A") == (BACKUP,), 5 * DETECTION + 2)
    r = chain.query(f"api.{ZONE}")
    assert (rcode(r), values(r, "A"), ad(r)) == ("NOERROR", (BACKUP,), True), r
    got = chain.delv(f"api.{ZONE}")
    assert (got.verdict, got.values("A")) == (VALID, (BACKUP,)), got.out


def test_a_ds_record_belongs_at_a_delegation(tmp_path: Path) -> None:
    """DS records in a zone's config (a signed delegation): only at a name with NS, never at
    the apex, with a hex digest; `validate` says where."""
    digest = "AB" * 32  # SHA-256
    cfg = tmp_path / "ds.yaml"
    cfg.write_text(
        f"""\
zones:
  {ZONE}:
    soa: {{mname: ns1.{ZONE}, rname: hostmaster.{ZONE}}}
    nameservers: [ns1.{ZONE}]
    records:
      ns1: {{type: A, value: 192.0.2.1}}
      "@": {{type: DS, value: "1 13 2 {digest}"}}
      lonely: {{type: DS, value: "1 13 2 {digest}"}}
      bad: [{{type: NS, value: ns.bad.{ZONE}}}, {{type: DS, value: "1 13 2 xyz"}}]
      good: [{{type: NS, value: ns.good.{ZONE}}}, {{type: DS, value: "2 13 2 {digest}"}}]
"""
    )
    done = run_cli("validate", str(cfg))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[:2] == [
        f'{cfg}:7: zones["{ZONE}"].records["@"].type: the apex DS belongs in the parent zone '
        "(dnsfailover dnssec ds prints it)",
        f'{cfg}:8: zones["{ZONE}"].records.lonely: a DS belongs at a delegation: '
        "add NS at this name",
    ], done.stderr
    assert len(lines) == 3, done.stderr
    assert lines[2].startswith(f'{cfg}:9: zones["{ZONE}"].records.bad[1].value: DS value '), lines
