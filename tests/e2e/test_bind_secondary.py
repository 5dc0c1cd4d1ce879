"""End to end: a real BIND 9 secondary pulls our zones by AXFR/IXFR with TSIG after NOTIFY."""

from __future__ import annotations

import base64
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.zone
import pytest
from support import HttpEndpoints, Server, free_port, wait_for

pytestmark = pytest.mark.e2e

NAMED = Path("/usr/sbin/named")
ZONE = "example.test."
WWW = "www.example.test."
A, B = "127.0.0.21", "127.0.0.22"
Serve = Callable[..., Server]


@dataclass
class Bind:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, name: str, rtype: str) -> dns.message.Message:
        q = dns.message.make_query(name, rtype)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=1)

    def answer(self, name: str, rtype: str = "A") -> tuple[str, ...]:
        return answer_of(self.query(name, rtype), rtype)

    def serial(self) -> int | None:
        try:
            r = self.query(ZONE, "SOA")
        except (dns.exception.Timeout, OSError):
            return None
        return int(r.answer[0][0].serial) if r.answer else None


def answer_of(r: dns.message.Message, rtype: str) -> tuple[str, ...]:
    code = dns.rdatatype.from_text(rtype)
    return tuple(sorted(rd.to_text() for rrset in r.answer if rrset.rdtype == code for rd in rrset))


def named_conf(directory: Path, port: int, primary: int, secret: str) -> Path:
    conf = directory / "named.conf"
    conf.write_text(
        f"""\
key "xfr-key" {{ algorithm hmac-sha256; secret "{secret}"; }};
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    min-refresh-time 1;
    min-retry-time 1;
    notify no;
}};
zone "{ZONE}" {{
    type secondary;
    file "{directory}/example.test.db";
    primaries {{ 127.0.0.1 port {primary} key "xfr-key"; }};
    allow-notify {{ 127.0.0.1; }};
}};
"""
    )
    return conf


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Callable[[int, int, str], Bind]]:
    """Start `named` in the foreground as the current user (no -u: the directory is ours)."""
    if not NAMED.exists():
        pytest.fail("BIND 9 is not installed: apt-get install bind9 (.ci/run does)")
    started: list[Bind] = []

    def start(port: int, primary: int, secret: str) -> Bind:
        directory = tmp_path / "named"
        directory.mkdir()
        conf = named_conf(directory, port, primary, secret)
        log = directory / "named.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(NAMED), "-4", "-g", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        started.append(b := Bind(port, proc, log))
        return b

    yield start
    for b in started:
        b.proc.terminate()
        try:
            b.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait()


def _primary(
    tmp_path: Path, http_endpoints: HttpEndpoints, zone: str = "", records: str = ""
) -> tuple[Path, str, int]:
    """Our config as a hidden primary for BIND (TSIG, NOTIFY), with `www` over A and B; and
    the TSIG secret and the port BIND is to listen on.  `zone`, `records`: lines to add."""
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    (key_file := tmp_path / "xfr.key").write_text(secret + "\n")
    key_file.chmod(0o600)
    bind_port = free_port()
    endpoints = ", ".join(
        f"{{address: {a}, check_port: {http_endpoints.start(a)}}}" for a in (A, B)
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""\
tsig_keys:
  xfr-key: {{algorithm: hmac-sha256, secret_file: {key_file}}}
checks:
  web: {{type: http, path: /healthz, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}}
zones:
  {ZONE}:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test., refresh: 3600}}
    nameservers: [ns1.example.test.]
{zone}    allow_transfer: [{{address: 127.0.0.1, key: xfr-key}}]
    also_notify: [{{address: 127.0.0.1, port: {bind_port}, key: xfr-key}}]
    records:
      ns1: {{type: A, value: 127.0.0.1}}
{records}    failover:
      www: {{policy: active-active, check: web, endpoints: [{endpoints}]}}
"""
    )
    return config, secret, bind_port


def test_bind_secondary_follows_a_failover(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Serve,
    bind: Callable[[int, int, str], Bind],
) -> None:
    config, secret, bind_port = _primary(tmp_path, http_endpoints)
    ours = serve(config)
    secondary = bind(bind_port, ours.port, secret)

    # start-up: BIND transfers the zone (AXFR) and answers like us
    wait_for(lambda: secondary.serial() == ours.serial(ZONE), timeout=10)
    assert secondary.answer(WWW) == ours.answer(WWW) == (A, B)
    assert secondary.answer("ns1.example.test.") == ("127.0.0.1",)

    # failover: our answer changes, NOTIFY → SOA → IXFR, BIND follows
    http_endpoints.stop(B)
    wait_for(lambda: ours.answer(WWW) == (A,), timeout=10, every=0.005)
    changed_at = time.monotonic()
    wait_for(lambda: secondary.answer(WWW) == (A,), timeout=5, every=0.005)
    delay = time.monotonic() - changed_at
    assert secondary.serial() == ours.serial(ZONE)
    print(f"\nBIND secondary followed our answer change in {delay * 1000:.0f} ms")
    assert delay < 5.0

    bind_log = secondary.log.read_text(errors="replace")
    assert "notify from 127.0.0.1#" in bind_log
    assert bind_log.count("Transfer status: success") >= 2
    our_log = ours.log.read_text(errors="replace")
    assert f"xfr: AXFR {ZONE} serial" in our_log
    assert f"xfr: IXFR {ZONE} serial {ours.serial(ZONE)}" in our_log
    assert f"acknowledged by 127.0.0.1:{bind_port}" in our_log
    assert secret not in our_log


def _verified(zone_file: Path) -> None:
    """BIND's dnssec-verify and Knot's kzonecheck both accept the signed zone file."""
    from dnssec_support import kzonecheck, verify

    checked = verify(zone_file, csk=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Zone fully signed" in checked.stdout + checked.stderr
    knot = kzonecheck(zone_file)
    assert knot.returncode == 0, knot.stdout + knot.stderr


def _axfr(port: int, key: dns.tsig.Key, into: Path) -> Path:
    """The zone as AXFR transfers it from 127.0.0.1:`port`, as a master file."""
    zone = dns.zone.from_xfr(
        dns.query.xfr(
            "127.0.0.1",
            ZONE,
            port=port,
            keyring={key.name: key},
            keyname=key.name,
            relativize=False,
        ),
        relativize=False,
    )
    into.write_text(zone.to_text(relativize=False))
    return into


def test_bind_secondary_serves_our_signed_zone_across_a_failover(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Serve,
    bind: Callable[[int, int, str], Bind],
) -> None:
    """A signed zone: AXFR carries DNSKEY, every RRSIG and the NSEC chain, which
    dnssec-verify and kzonecheck accept before and after each of several failovers, and a
    BIND secondary serves the signatures we made (they validate against our DNSKEY)."""
    config, secret, bind_port = _primary(
        tmp_path,
        http_endpoints,
        zone="    dnssec: {}\n",
        records=(
            '      "*.wild": {type: TXT, value: wildcard}\n'
            '      txt.deep.er: {type: TXT, value: "below an empty non-terminal"}\n'
        ),
    )
    key = dns.tsig.Key("xfr-key.", secret, "hmac-sha256")
    ours = serve(config)
    secondary = bind(bind_port, ours.port, secret)
    wait_for(lambda: secondary.serial() == ours.serial(ZONE), timeout=10)
    _verified(_axfr(ours.port, key, tmp_path / "before.zone"))

    keys = _dnskey(ours.port)
    http_endpoints.stop(B)
    wait_for(lambda: ours.answer(WWW) == (A,), timeout=10, every=0.005)
    wait_for(lambda: secondary.answer(WWW) == (A,), timeout=5, every=0.005)
    after = _axfr(ours.port, key, tmp_path / "after.zone")
    _verified(after)
    assert f"www.example.test. 30 IN A {A}" in after.read_text().replace("\t", " ")
    for port in (ours.port, secondary.port):  # the secondary serves our signatures
        q = dns.message.make_query(WWW, "A", want_dnssec=True)
        reply = dns.query.tcp(q, "127.0.0.1", port=port, timeout=2)
        (rrset,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.A]
        (sig,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG]
        assert [rd.to_text() for rd in rrset] == [A]
        dns.dnssec.validate(rrset, sig, {dns.name.from_text(ZONE): keys})
    # a failback, then the other endpoint fails: the zone transferred after each validates
    http_endpoints.start(B)
    wait_for(lambda: ours.answer(WWW) == (A, B), timeout=10, every=0.005)
    _verified(_axfr(ours.port, key, tmp_path / "back.zone"))
    http_endpoints.stop(A)
    wait_for(lambda: ours.answer(WWW) == (B,), timeout=10, every=0.005)
    wait_for(lambda: secondary.answer(WWW) == (B,), timeout=5, every=0.005)
    _verified(_axfr(ours.port, key, tmp_path / "again.zone"))


def _dnskey(port: int) -> dns.rrset.RRset:
    q = dns.message.make_query(ZONE, "DNSKEY", want_dnssec=True)
    reply = dns.query.tcp(q, "127.0.0.1", port=port, timeout=2)
    (found,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.DNSKEY]
    return found
