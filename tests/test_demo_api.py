"""`dnsfailover demo` serves the API and the status page with a throwaway token: the lines it
prints, pasted into another shell, drain and fail over at once, and DNS follows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import pytest
from support import BIN, wait_for

pytestmark = pytest.mark.e2e


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    head: list[str]  # what it printed before its prompt
    stderr: Path

    @property
    def port(self) -> int:
        m = re.search(r"serving example\.test\. on 127\.0\.0\.1:(\d+)", self.text)
        assert m, self.text
        return int(m.group(1))

    @property
    def text(self) -> str:
        return "".join(self.head)

    def line(self, pattern: str) -> str:
        found = [ln.strip() for ln in self.head if re.search(pattern, ln)]
        assert len(found) == 1, (pattern, self.text)
        return found[0]

    def answer(self, name: str) -> tuple[str, ...]:
        q = dns.message.make_query(name, "A")
        r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=2)
        return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    stderr = tmp_path / "demo.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNSFAILOVER_")}
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            # DEBUG: every log line there is, to look for the token in
            [str(BIN), "--log-level", "DEBUG", "demo"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    assert proc.stdout is not None
    head: list[str] = []
    try:
        while not head or not head[-1].startswith("commands:"):
            line = proc.stdout.readline()
            assert line, f"demo ended: {''.join(head)}\n{stderr.read_text()[-3000:]}"
            head.append(line)
        yield Demo(proc, head, stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def shell(*lines: str) -> subprocess.CompletedProcess[str]:
    """Lines pasted into a new bash, with none of the demo's settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNSFAILOVER_")}
    return subprocess.run(
        ["bash", "-euc", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYTHONWARNINGS": "ignore"},
    )


def get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def test_the_printed_lines_drain_and_fail_over_from_another_shell(demo: Demo) -> None:
    export = demo.line(r"^\s*export DNSFAILOVER_API=")
    path = [ln.strip() for ln in demo.head if re.match(r"\s+export PATH=", ln)]  # if not on it
    m = re.fullmatch(r"export DNSFAILOVER_API=(\S+) DNSFAILOVER_API_TOKEN=(\S+)", export)
    assert m, export
    api, token = m.groups()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", api), api
    assert len(token) >= 16

    # the status page and the API, at the printed URLs
    page = demo.line(r"^status page: ").split()[2]
    assert page == f"{api}/"
    status, kind, body = get(page)
    assert status == 200
    assert kind.startswith("text/html")
    assert b"<html" in body.lower()
    status, kind, body = get(f"{api}/api/v1/status")
    assert status == 200
    assert kind.startswith("application/json")
    names = {n["name"]: n for n in json.loads(body)["names"]}
    assert set(names) == {"www.example.test.", "api.example.test."}

    wait_for(lambda: demo.answer("www.example.test.") == ("127.0.0.11", "127.0.0.12"), 10)
    wait_for(lambda: demo.answer("api.example.test.") == ("127.0.0.21",), 10)

    # without the token the API refuses to change anything
    drain = demo.line(r"^\s*dnsfailover drain 127\.0\.0\.11 ")
    refused = shell(*path, f"export DNSFAILOVER_API={api}", drain)
    assert refused.returncode != 0
    assert "token" in refused.stderr
    assert json.loads(get(f"{api}/api/v1/overrides")[2])["overrides"] == []

    # the printed lines, pasted as they are
    done = shell(*path, export, drain)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: demo.answer("www.example.test.") == ("127.0.0.12",), 10)
    done = shell(*path, export, demo.line(r"^\s*dnsfailover failover api "))
    assert done.returncode == 0, done.stderr
    wait_for(lambda: demo.answer("api.example.test.") == ("127.0.0.31",), 10)
    done = shell(*path, export, demo.line(r"^\s*dnsfailover status$"))
    assert done.returncode == 0, done.stderr
    assert "overrides:" in done.stdout

    # ... and the drain is undone with the line the demo printed beside it
    undrain = drain.split("# undo: ")[1]
    done = shell(*path, export, undrain)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: demo.answer("www.example.test.") == ("127.0.0.11", "127.0.0.12"), 10)

    assert demo.proc.stdin is not None
    out, _ = demo.proc.communicate("quit\n", timeout=30)
    assert demo.proc.returncode == 0
    printed = demo.text + out
    assert printed.count(token) == 1  # shown once ...
    logs = demo.stderr.read_text()
    assert "api: listening" in logs  # (the logs are there: DEBUG and up)
    assert token not in logs  # ... and never logged


def test_api_off_serves_no_api_and_prints_no_token() -> None:
    proc = subprocess.run(
        [str(BIN), "--log-level", "WARNING", "demo", "--api", "off"],
        input="quit\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "serving example.test." in proc.stdout
    assert "DNSFAILOVER_API_TOKEN" not in proc.stdout
    assert "status page" not in proc.stdout
