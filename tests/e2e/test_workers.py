"""`dnsfailover serve --workers 2`: two processes share the UDP port and serve the same zone."""

from __future__ import annotations

import base64
import signal
import socket
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import pytest
from support import HttpEndpoints, Server, wait_for

pytestmark = pytest.mark.e2e

WWW = "www.example.test."
ORIGIN = "example.test."
A, B = "127.0.0.21", "127.0.0.22"
CLIENTS = 60


def write_config(path: Path, ep: HttpEndpoints) -> Path:
    eps = ", ".join(f"{{address: {a}, check_port: {ep.start(a)}}}" for a in (A, B))
    path.write_text(
        f"""\
checks:
  web: {{type: http, path: /healthz, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www: {{policy: active-active, check: web, endpoints: [{eps}]}}
"""
    )
    return path


def ask(port: int, query: dns.message.Message) -> dns.message.Message:
    """One query from a fresh socket (a new source port: the kernel may pick another worker)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return dns.query.udp(query, "127.0.0.1", port=port, timeout=2, sock=sock)


def www(port: int) -> tuple[str, ...]:
    r = ask(port, dns.message.make_query(WWW, "A"))
    return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))


def identity(port: int) -> str:
    q = dns.message.make_query("id.server.", dns.rdatatype.TXT, dns.rdataclass.CH)
    r = ask(port, q)
    return str(r.answer[0][0].strings[0].decode())


def test_workers_share_the_port_and_all_serve_each_publish(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    server = Server(
        write_config(tmp_path / "c.yaml", http_endpoints), tmp_path / "s.db", "--workers", "2"
    )
    try:
        assert sorted(server.answer(WWW)) == [A, B]
        before = server.serial(ORIGIN)
        http_endpoints.stop(B)
        # Converged when a burst from fresh sockets (so from every worker) agrees.
        wait_for(lambda: {www(server.port) for _ in range(10)} == {(A,)}, timeout=10)

        answers: set[tuple[str, ...]] = set()
        serials: set[int] = set()
        for _ in range(CLIENTS):
            answers.add(www(server.port))
            soa = ask(server.port, dns.message.make_query(ORIGIN, "SOA"))
            serials.add(int(soa.answer[0][0].serial))
        assert answers == {(A,)}
        assert len(serials) == 1
        assert serials.pop() > before

        ids = {identity(server.port) for _ in range(CLIENTS)}
        assert len(ids) == 2, ids  # the parent and one worker both answered
        assert all(i.startswith("dnsfailover-") for i in ids)
    finally:
        assert server.stop() == 0


def signed_soa_replies(port: int, key: dns.tsig.Key) -> list[dns.message.Message]:
    """CLIENTS signed SOA queries, each from a fresh socket (so both processes get some);
    each reply is verified against `key` as it is parsed."""
    replies = []
    for _ in range(CLIENTS):
        q = dns.message.make_query(ORIGIN, "SOA")
        q.use_tsig(key)
        replies.append(ask(port, q))
    return replies


def test_every_worker_checks_and_signs_tsig_queries_and_follows_a_reload(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    """A secondary's signed SOA refresh over UDP may land on any process: each one knows the
    keys, and learns a key added by a reload."""
    first = dns.tsig.Key("k1.", base64.b64encode(b"1" * 32).decode(), dns.tsig.HMAC_SHA256)
    second = dns.tsig.Key("k2.", base64.b64encode(b"2" * 32).decode(), dns.tsig.HMAC_SHA256)
    for key in (first, second):
        (tmp_path / f"{key.name}secret").write_text(base64.b64encode(key.secret).decode())
    config = write_config(tmp_path / "c.yaml", http_endpoints)
    base = config.read_text()

    def keys(*names: str) -> str:
        lines = [f"  {n}: {{secret_file: {tmp_path / (n + '.secret')}}}" for n in names]
        return "tsig_keys:\n" + "\n".join(lines) + "\n"

    config.write_text(keys("k1") + base)
    server = Server(config, tmp_path / "s.db", "--workers", "2")
    try:
        replies = signed_soa_replies(server.port, first)
        assert all(r.rcode() == dns.rcode.NOERROR and r.had_tsig for r in replies)
        assert {r.answer[0][0].serial for r in replies} == {server.serial(ORIGIN)}

        config.write_text(keys("k1", "k2") + base)
        server.proc.send_signal(signal.SIGHUP)
        # Reloaded once the parent signs with k2; then every process must.
        wait_for(lambda: _signs(server.port, second), timeout=10)
        replies = signed_soa_replies(server.port, second)
        assert all(r.rcode() == dns.rcode.NOERROR and r.had_tsig for r in replies)
    finally:
        assert server.stop() == 0


def _signs(port: int, key: dns.tsig.Key) -> bool:
    q = dns.message.make_query(ORIGIN, "SOA")
    q.use_tsig(key)
    try:
        return ask(port, q).had_tsig
    except dns.exception.DNSException:  # an unsigned BADKEY reply does not verify
        return False
