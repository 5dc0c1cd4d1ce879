"""End to end: `dnsfailover drill` against the real `dnsfailover serve`, real HTTP endpoints,
real DNS queries, and the real HTTP API's history."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import HttpEndpoints, Server, run_cli, wait_for
from test_serve import API, DETECTION, active_passive, write_config

pytestmark = pytest.mark.e2e
Serve = Callable[..., Server]
TOKEN = "drill-token-0123456789abcdef"


def drill(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """`dnsfailover drill ...` against the server's API and DNS port."""
    assert server.api is not None
    return run_cli("drill", *args, "--api", server.api, "--dns", f"127.0.0.1:{server.port}")


def get(server: Server, path: str) -> Any:
    with urllib.request.urlopen(f"{server.api}{path}", timeout=10) as r:
        return json.loads(r.read())


def messages(server: Server) -> list[str]:
    return [
        f"{e['kind']} {e['message']}" for e in get(server, "/api/v1/events?limit=200")["events"]
    ]


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    # Server and CLI share the token through the environment; it is never printed.
    monkeypatch.setenv("DNSFAILOVER_API_TOKEN", TOKEN)


def test_drill_fails_over_holds_and_fails_back_a_manual_record(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    body = active_passive(http_endpoints, "127.0.0.24", "127.0.0.34", "manual", "100ms")
    server = serve(write_config(tmp_path / "c.yaml", body))
    assert server.answer(API) == ("127.0.0.24",)
    serial = server.serial("example.test.")

    out = drill(
        server,
        str(tmp_path / "c.yaml"),
        "--tier",
        "primary",
        "--for",
        "1s",
        "--reason",
        "quarterly e2e drill",
        "--json",
    )

    assert out.returncode == 0, out.stdout + out.stderr
    assert TOKEN not in out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"], report["problem"]
    assert report["before"] == ["127.0.0.24"]
    assert report["during"] == ["127.0.0.34"]
    assert report["after"] == ["127.0.0.24"]
    assert 0 < report["failover_time"] < 5
    assert 0 < report["recovery_time"] < 5
    assert report["verified"] >= 1, "the hold re-checked the answer"
    assert report["serial_before"] == serial < report["serial_during"] < report["serial_after"]
    assert any("failback is manual" in n for n in report["notes"])

    assert server.answer(API) == ("127.0.0.24",)
    assert get(server, "/api/v1/overrides")["overrides"] == []
    history = messages(server)
    oid = report["override"]
    assert any(
        m.startswith(f"override set {oid}: force_down")
        and "drill: quarterly e2e drill (tier primary down for 1s)" in m
        for m in history
    ), history
    assert any(
        m.startswith(f"override removed {oid} (force_down)")
        and "drill: hold over; failed over in" in m
        for m in history
    ), history
    assert any("failback" in m and "drill: back to tier primary" in m for m in history), history
    # the whole report, with the recovery time the CLI measured, is in the history
    assert any(
        m.startswith("drill drill api.example.test. tier primary for 1s") and "recovered in" in m
        for m in history
    ), (history, out.stderr)


def test_drill_of_an_auto_record_waits_for_hold_down(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    body = active_passive(http_endpoints, "127.0.0.25", "127.0.0.35", "auto", "1500ms")
    server = serve(write_config(tmp_path / "c.yaml", body))
    assert server.answer(API) == ("127.0.0.25",)

    out = drill(
        server, str(tmp_path / "c.yaml"), "--tier", "primary", "--name", "api", "--for", "1s"
    )

    assert out.returncode == 0, out.stdout + out.stderr
    lines = {line.split(":")[0].strip(): line for line in out.stdout.splitlines()}
    assert "127.0.0.35" in lines["during"]
    assert "127.0.0.25" in lines["after"]
    failover = float(lines["time to fail over"].split()[-1].rstrip("s"))
    recover = float(lines["time to recover"].split(":")[1].split()[0].rstrip("s"))
    assert failover < 5
    assert 1.5 <= recover < 1.5 + 5 * DETECTION, "auto failback waits out hold_down, no more"
    assert "result: passed" in out.stdout
    assert server.answer(API) == ("127.0.0.25",)


def test_drill_refused_by_an_interlock_changes_nothing(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    body = active_passive(http_endpoints, "127.0.0.26", "127.0.0.36", "manual", "100ms")
    server = serve(write_config(tmp_path / "c.yaml", body))
    http_endpoints.stop("127.0.0.36")  # the backup dies: primary is the last healthy tier

    def backup_down() -> bool:
        rows = get(server, "/api/v1/endpoints")["endpoints"]
        return any(e["address"] == "127.0.0.36" and e["state"] == "down" for e in rows)

    wait_for(backup_down, 10 * DETECTION)
    serial = server.serial("example.test.")

    out = drill(server, str(tmp_path / "c.yaml"), "--tier", "primary", "--for", "1s")

    assert out.returncode == 1, out.stdout + out.stderr
    assert "drill refused, nothing changed: refused by an interlock:" in out.stderr
    assert "add force" not in out.stderr, "a drill is never forced"
    assert server.answer(API) == ("127.0.0.26",)
    assert server.serial("example.test.") == serial
    assert get(server, "/api/v1/overrides")["overrides"] == []
    history = messages(server)
    assert any(m.startswith("interlock refused force_down") and "drill:" in m for m in history)
    assert not any(m.startswith("override set") for m in history), history


def test_drill_names_what_it_cannot_find(tmp_path: Path, http_endpoints: HttpEndpoints) -> None:
    body = active_passive(http_endpoints, "127.0.0.27", "127.0.0.37", "manual", "100ms")
    cfg = write_config(tmp_path / "c.yaml", body)
    out = run_cli("drill", str(cfg), "--tier", "west")
    assert out.returncode == 2
    assert "no name has a tier 'west' (tiers: api.example.test. backup, " in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: {}\n")
    out = run_cli("drill", str(bad), "--tier", "primary")
    assert out.returncode == 2
    assert f"{bad}:1: zones:" in out.stderr
