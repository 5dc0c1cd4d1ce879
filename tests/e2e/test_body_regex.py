"""A target's body cannot stall the node (issue 15, item 2c): `expect_body` regexes run on
RE2, linear in the body, so `/^(a+)+$/` against `'a' * 26 + '!'` (minutes of backtracking
for Python's `re`, holding the GIL) fails fast, and DNS keeps answering meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import Server, wait_for

pytestmark = pytest.mark.e2e

WWW = "www.example.test."
GOOD, EVIL = "127.0.0.95", "127.0.0.96"


class Bodies:
    """Real HTTP endpoints on 127.0.0.x whose body can be changed while they run."""

    def __init__(self) -> None:
        self.body: dict[str, bytes] = {}
        self.ports: dict[str, int] = {}
        self._servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(self, address: str, body: bytes) -> int:
        bodies = self.body
        bodies[address] = body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the probe's request
                payload = bodies[address]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((address, 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self._servers.append((server, thread))
        self.ports[address] = int(server.server_address[1])
        return self.ports[address]

    def close(self) -> None:
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.fixture
def bodies() -> Iterator[Bodies]:
    pool = Bodies()
    yield pool
    pool.close()


def test_a_backtracking_body_cannot_stall_probes_or_dns(tmp_path: Path, bodies: Bodies) -> None:
    good = bodies.start(GOOD, b"a" * 26)
    evil = bodies.start(EVIL, b"a" * 26)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"""\
checks:
  web: {{type: http, path: /, expect_body: "/^(a+)+$/", interval: 200ms, timeout: 150ms,
         rise: 2, fall: 2}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www:
        policy: active-active
        check: web
        endpoints:
          - {{address: {GOOD}, check_port: {good}}}
          - {{address: {EVIL}, check_port: {evil}}}
"""
    )
    server = Server(cfg, tmp_path / "state.db", "--api", "off")
    try:
        wait_for(lambda: server.answer(WWW) == (GOOD, EVIL), 5)
        bodies.body[EVIL] = b"a" * 26 + b"!"  # Python's re: ~2**26 steps per probe
        started = time.monotonic()
        slowest = 0.0
        while time.monotonic() - started < 3.0:  # fifteen probe intervals
            one = time.monotonic()
            server.answer(WWW)  # dnspython gives up after 2 s: a stalled node fails here
            slowest = max(slowest, time.monotonic() - one)
            time.sleep(0.02)
        assert server.answer(WWW) == (GOOD,)  # the evil endpoint's probes fail, and finish
        assert slowest < 0.5, f"a DNS query took {slowest:.2f}s"
        log = server.log.read_text()
        assert f"web@{EVIL}:{evil}" in log
        assert "body does not match /^(a+)+$/" in log  # a verdict, not a timeout
    finally:
        server.stop()
