"""End to end: a real BIND 9 secondary pulls our zones by AXFR/IXFR with TSIG after NOTIFY."""

from __future__ import annotations

import base64
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from support import HttpEndpoints, Server, wait_for

pytestmark = pytest.mark.e2e

NAMED = Path("/usr/sbin/named")
ZONE = "example.test."
WWW = "www.example.test."
A, B = "127.0.0.21", "127.0.0.22"
Serve = Callable[..., Server]


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 now (named binds both)."""
    for _ in range(20):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


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


def test_bind_secondary_follows_a_failover(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Serve,
    bind: Callable[[int, int, str], Bind],
) -> None:
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
    allow_transfer: [{{address: 127.0.0.1, key: xfr-key}}]
    also_notify: [{{address: 127.0.0.1, port: {bind_port}, key: xfr-key}}]
    records:
      ns1: {{type: A, value: 127.0.0.1}}
    failover:
      www: {{policy: active-active, check: web, endpoints: [{endpoints}]}}
"""
    )
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
