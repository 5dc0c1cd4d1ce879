"""`dnsfailover serve --workers N`: the processes share the UDP port and serve the same zone;
one that is killed is started again with the zone as published now."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import urllib.request
from pathlib import Path
from typing import Any

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


def api(server: Server, path: str) -> bytes:
    with urllib.request.urlopen(f"{server.api}{path}", timeout=5) as r:
        body: bytes = r.read()
    return body


def workers(server: Server) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(api(server, "/api/v1/status"))["workers"]
    return found


def from_process(port: int, pid: int) -> socket.socket:
    """A client socket whose queries (from its one source port) reach process `pid`."""
    for _ in range(200):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        q = dns.message.make_query("id.server.", dns.rdatatype.TXT, dns.rdataclass.CH)
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2, sock=sock)
        if r.answer[0][0].strings[0].decode() == f"dnsfailover-{pid}":
            return sock
        sock.close()
    raise AssertionError(f"no client socket reached process {pid}")


def test_a_killed_worker_is_started_again_and_serves_what_is_published_now(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    """SIGKILL one of `--workers 3`: an ERROR names it, it is started again (counted in the
    status and /metrics) and its new process answers the zone as published while it was
    down and since, and checks and signs TSIG queries with the node's keys."""
    key = dns.tsig.Key("k1.", base64.b64encode(b"1" * 32).decode(), dns.tsig.HMAC_SHA256)
    (tmp_path / "k1.secret").write_text(base64.b64encode(key.secret).decode())
    config = write_config(tmp_path / "c.yaml", http_endpoints)
    tsig = f"tsig_keys:\n  k1: {{secret_file: {tmp_path / 'k1.secret'}}}\n"
    config.write_text(tsig + config.read_text())
    server = Server(config, tmp_path / "s.db", "--workers", "3")
    try:
        before = workers(server)
        assert (before["count"], before["alive"], before["restarts"]) == (2, 2, 0)
        assert before["problem"] is None
        assert len(before["pids"]) == 2
        victim = before["pids"][0]
        os.kill(victim, signal.SIGKILL)
        http_endpoints.stop(B)  # a publish while it is down (or starting)
        wait_for(lambda: workers(server)["restarts"] == 1, timeout=60)
        after = workers(server)
        assert after["alive"] == 2
        assert after["problem"] is None
        [new] = set(after["pids"]) - set(before["pids"])
        assert victim not in after["pids"]

        wait_for(lambda: server.answer(WWW) == (A,), timeout=10)  # asked over UDP: any process
        sock = from_process(server.port, new)
        with sock:

            def served(want: tuple[str, ...]) -> bool:
                tcp = server.query(ORIGIN, "SOA", tcp=True)  # TCP: the main process
                r = dns.query.udp(dns.message.make_query(WWW, "A"), "127.0.0.1",
                                  port=server.port, timeout=2, sock=sock)  # fmt: skip
                soa = dns.query.udp(dns.message.make_query(ORIGIN, "SOA"), "127.0.0.1",
                                    port=server.port, timeout=2, sock=sock)  # fmt: skip
                got = tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))
                return got == want and soa.answer[0][0].serial == tcp.answer[0][0].serial

            wait_for(lambda: served((A,)), timeout=10)
            http_endpoints.start(B)  # and one after it started again
            wait_for(lambda: served((A, B)), timeout=10)
            signed = dns.message.make_query(ORIGIN, "SOA")
            signed.use_tsig(key)
            reply = dns.query.udp(signed, "127.0.0.1", port=server.port, timeout=2, sock=sock)
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.had_tsig

        metrics = api(server, "/metrics").decode()
        assert "dnsfailover_worker_restarts_total 1.0" in metrics
        assert "dnsfailover_workers_alive 2.0" in metrics
        assert "dnsfailover_workers 2.0" in metrics
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert re.search(
        rf"ERROR dnsfailover.workers: workers: worker [12] \(pid {victim}\) was killed by "
        r"SIGKILL after serving [\d.]+s; starting it again in 1s",
        log,
    ), log
    assert log.count("started again: pid") == 1  # and not once more when the node stopped
    for pid in after["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_sigterm_to_the_whole_group_stops_serve_without_taking_a_worker_for_dead(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    """systemd's stop signals every process of the unit at once: a worker leaves its stop to
    `serve`, so nothing is logged as a worker dying and nothing is started again."""
    server = Server(
        write_config(tmp_path / "c.yaml", http_endpoints), tmp_path / "s.db", "--workers", "2"
    )
    try:
        [worker] = workers(server)["pids"]
        os.kill(worker, signal.SIGTERM)
        wait_for(lambda: "SIGTERM ignored" in server.log.read_text(), timeout=10)
        from_process(server.port, worker).close()  # still answering
        assert workers(server)["restarts"] == 0
        os.kill(worker, signal.SIGTERM)  # both at once, as systemd does
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert " ERROR " not in log, log
    assert "started again" not in log
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_metrics_count_the_answers_of_every_worker(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    """Queries spread over `--workers 3` by their source ports: /metrics counts all of them
    (each worker writes its counts for the main process every second), and the status
    says what each worker answered."""
    server = Server(
        write_config(tmp_path / "c.yaml", http_endpoints), tmp_path / "s.db", "--workers", "3"
    )
    try:
        sent = 300
        for _ in range(sent):
            assert www(server.port) == (A, B)  # each from a new source port

        def responses() -> float:
            lines = api(server, "/metrics").decode().splitlines()
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in lines
                if line.startswith("dnsfailover_dns_responses_total{")
            )

        wait_for(lambda: responses() == sent, timeout=10)
        each = workers(server)["responses"]
        assert len(each) == 2
        assert all(n > 0 for n in each)  # 300 source ports reach every process
        assert sum(each) < sent  # and the main process answered the rest
        metrics = api(server, "/metrics").decode()
        for index, n in enumerate(each, start=1):
            assert f'dnsfailover_worker_responses_total{{worker="{index}"}} {float(n)}' in metrics
    finally:
        assert server.stop() == 0
