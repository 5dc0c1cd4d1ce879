"""`dnsfailover demo`: a newcomer stops an endpoint and watches the answer change."""

from __future__ import annotations

import re
import subprocess

import dns.message
import dns.query
import pytest
from support import BIN, wait_for

pytestmark = pytest.mark.e2e


def answer(port: int, name: str) -> tuple[str, ...]:
    r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
    return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))


def test_demo_shows_failover_when_an_endpoint_is_stopped() -> None:
    proc = subprocess.Popen(
        [str(BIN), "--log-level", "WARNING", "demo"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        head = [proc.stdout.readline() for _ in range(3)]
        m = re.search(r"serving example\.test\. on 127\.0\.0\.1:(\d+)", "".join(head))
        assert m, head
        port = int(m.group(1))
        assert answer(port, "www.example.test.") == ("127.0.0.11", "127.0.0.12")

        proc.stdin.write("stop www-1\n")
        proc.stdin.flush()
        # demo check: interval 250ms, fall 2, timeout 200ms → detection 0.7s
        wait_for(lambda: answer(port, "www.example.test.") == ("127.0.0.12",), 5 * 0.7)
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "www-1 stopped" in out
        assert re.search(r"www\.example\.test\. A -> 127\.0\.0\.12 ", out), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
