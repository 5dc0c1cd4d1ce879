"""`dnsfailover serve --workers 2`: two processes share the UDP port and serve the same zone."""

from __future__ import annotations

import socket
from pathlib import Path

import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
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
