"""End to end: the real `dnsfailover serve` keeps a zone on a real BIND primary in step with
the health of real HTTP endpoints."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dnsfailover_rfc2136.testing import BindPrimary
from rfc2136_support import ZONE

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).with_name("dnsfailover")
INTERVAL, FALL, TIMEOUT = 0.2, 2, 0.15


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


class Endpoint:
    """An HTTP server on one 127.0.0.x address, in a thread, until `stop()`."""

    def __init__(self, address: str) -> None:
        self.server = ThreadingHTTPServer((address, 0), _Healthz)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()


@pytest.fixture
def endpoints() -> Iterator[dict[str, Endpoint]]:
    eps = {a: Endpoint(a) for a in ("127.0.0.81", "127.0.0.82")}
    yield eps
    for ep in eps.values():
        ep.stop()


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout:.1f}s")
        time.sleep(0.05)


def test_serve_pushes_failover_to_bind(
    tmp_path: Path, bind: BindPrimary, endpoints: dict[str, Endpoint]
) -> None:
    bind.update((f"other.{ZONE}", 60, "A", "198.51.100.1"))  # someone else's: must survive
    eps = ", ".join(f"{{address: {a}, check_port: {e.port}}}" for a, e in endpoints.items())
    cfg = tmp_path / "rfc2136.yaml"
    cfg.write_text(f"""\
checks:
  web: {{type: http, path: /healthz, interval: {int(INTERVAL * 1000)}ms,
        timeout: {int(TIMEOUT * 1000)}ms, fall: {FALL}, rise: 2}}
zones:
  {ZONE}:
    provider: rfc2136
    options:
      server: 127.0.0.1
      port: {bind.port}
      key_name: {bind.key.name}
      secret_file: {bind.key_file}
      backoff_base: 50ms
    failover:
      www:
        policy: active-active
        check: web
        ttl: 30
        endpoints: [{eps}]
""")
    log = tmp_path / "serve.log"
    www = f"www.{ZONE}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN),
                "serve",
                str(cfg),
                "--dns",
                "127.0.0.1:0",
                "--state",
                str(tmp_path / "s.db"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: bind.answer(www) == ("127.0.0.81", "127.0.0.82"), 10)
            endpoints["127.0.0.82"].stop()
            wait_for(
                lambda: bind.answer(www) == ("127.0.0.81",), 5 * (INTERVAL * FALL + TIMEOUT) + 2
            )
            assert bind.answer(f"other.{ZONE}") == ("198.51.100.1",)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "apply: rfc.test.: 0 create, 1 update" in text, text
    assert bind.key.secret not in text
