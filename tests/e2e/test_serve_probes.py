"""End to end: `serve` probes in a child process; a dead probe process is replaced, health
is held meanwhile, and the probe process never outlives the node."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import HttpEndpoints, Server, wait_for
from test_serve import DETECTION, WWW, Serve, active_active, write_config

pytestmark = pytest.mark.e2e


def status(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.api}/api/v1/status", timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_probe_process_is_replaced_and_failover_still_works(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", active_active(http_endpoints, "127.0.0.11", "127.0.0.12")
    )
    server = serve(cfg)
    probes = status(server)["probes"]
    assert probes["where"] == "process"
    first = probes["pid"]
    assert first != server.proc.pid
    assert alive(first)

    os.kill(first, signal.SIGKILL)
    # While it is gone the answer holds: no result is not a failure.  (That the node says
    # why meanwhile is checked in tests/test_probe_process.py: here the window is ~1 s.)
    assert server.answer(WWW) == ("127.0.0.11", "127.0.0.12")
    wait_for(lambda: status(server)["probes"]["restarts"] == 1, 15)
    after = status(server)
    assert after["probes"]["pid"] not in (None, first)
    assert after["probes"]["problem"] is None
    assert not any("probe process" in p for p in after["problems"])
    with urllib.request.urlopen(f"{server.api}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert "dnsfailover_probe_process_restarts_total 1.0" in metrics
    assert "dnsfailover_probe_process_problem 0.0" in metrics

    # The new probe process detects a failure as the first one did.
    http_endpoints.stop("127.0.0.12")
    wait_for(lambda: server.answer(WWW) == ("127.0.0.11",), 5 * DETECTION)
    server.stop()
    log = server.log.read_text()
    assert "ERROR dnsfailover.probes: probes: the probe process" in log
    assert "probe process started again (restart 1)" in log
    assert "Traceback" not in log  # a stop cancels nothing that then logs an error


def test_the_probe_process_dies_with_the_node(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(tmp_path / "c.yaml", active_active(http_endpoints, "127.0.0.11"))
    server = serve(cfg)
    child = status(server)["probes"]["pid"]
    assert alive(child)
    server.proc.kill()  # no clean stop: SIGKILL
    server.proc.wait()
    wait_for(lambda: not alive(child), 10)


def test_inline_probes_are_still_an_option(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", active_active(http_endpoints, "127.0.0.11", "127.0.0.12")
    )
    server = serve(cfg, "--probes", "inline")
    assert status(server)["probes"] == {
        "where": "inline",
        "pid": None,
        "restarts": 0,
        "problem": None,
    }
    http_endpoints.stop("127.0.0.12")
    wait_for(lambda: server.answer(WWW) == ("127.0.0.11",), 5 * DETECTION)
