"""End to end: the real `dnsfailover serve`, real HTTP/TCP endpoints, real DNS queries."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.rcode
import pytest
from support import HttpEndpoints, Server, TcpListener, run_cli, wait_for

pytestmark = pytest.mark.e2e

INTERVAL, FALL, RISE, TIMEOUT = 0.2, 3, 2, 0.15
DETECTION = INTERVAL * FALL + TIMEOUT


def endpoint(address: str, port: int) -> str:
    return f"{{address: {address}, check_port: {port}}}"


def write_config(path: Path, body: str, check_type: str = "http") -> Path:
    extra = "    path: /healthz\n    expect_body: ok\n" if check_type == "http" else ""
    port = "    port: 9\n" if check_type == "tcp" else ""
    path.write_text(
        f"""\
checks:
  web:
    type: {check_type}
{port}{extra}    interval: {int(INTERVAL * 1000)}ms
    timeout: {int(TIMEOUT * 1000)}ms
    rise: {RISE}
    fall: {FALL}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
{body}"""
    )
    return path


def active_active(ep: HttpEndpoints, *addresses: str) -> str:
    eps = ", ".join(endpoint(a, ep.start(a)) for a in addresses)
    return f"""\
      www:
        policy: active-active
        check: web
        endpoints: [{eps}]
"""


def active_passive(
    ep: HttpEndpoints, primary: str, backup: str, failback: str, hold_down: str = "2s"
) -> str:
    return f"""\
      api:
        policy: active-passive
        check: web
        failback: {failback}
        hold_down: {hold_down}
        tiers:
          - {{name: primary, endpoints: [{endpoint(primary, ep.start(primary))}]}}
          - {{name: backup, endpoints: [{endpoint(backup, ep.start(backup))}]}}
"""


WWW = "www.example.test."
API = "api.example.test."
Serve = Callable[..., Server]


def test_active_active_pulls_a_dead_endpoint_and_restores_it(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", active_active(http_endpoints, "127.0.0.11", "127.0.0.12")
    )
    server = serve(cfg)
    assert server.answer(WWW) == ("127.0.0.11", "127.0.0.12")
    r = server.query(WWW)
    assert r.flags & dns.flags.AA
    assert not r.flags & dns.flags.RA

    stopped = time.monotonic()
    http_endpoints.stop("127.0.0.12")
    wait_for(lambda: server.answer(WWW) == ("127.0.0.11",), 5 * DETECTION)
    took = time.monotonic() - stopped
    # `fall` failed probes, INTERVAL apart; the first may be one already in flight when the
    # listener closed (started up to TIMEOUT before), which fails too, as with a real crash.
    assert took >= INTERVAL * (FALL - 1) - TIMEOUT, "must not fail over before `fall` failures"

    http_endpoints.start("127.0.0.12")
    wait_for(
        lambda: server.answer(WWW) == ("127.0.0.11", "127.0.0.12"), 5 * (INTERVAL * RISE + TIMEOUT)
    )

    # an unhealthy answer (HTTP 503) counts as down too, not only a dead socket
    http_endpoints.set_status("127.0.0.11", 503)
    wait_for(lambda: server.answer(WWW) == ("127.0.0.12",), 5 * DETECTION)


def test_all_down_fails_open_by_default(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", active_active(http_endpoints, "127.0.0.11", "127.0.0.12")
    )
    server = serve(cfg)
    http_endpoints.stop("127.0.0.11")
    wait_for(lambda: server.answer(WWW) == ("127.0.0.12",), 5 * DETECTION)
    http_endpoints.stop("127.0.0.12")
    time.sleep(3 * DETECTION)
    assert server.answer(WWW) == ("127.0.0.11", "127.0.0.12"), "serve_all is fail-open"


def test_active_passive_auto_failback_waits_for_hold_down(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    hold = 2.0
    cfg = write_config(
        tmp_path / "c.yaml",
        active_passive(http_endpoints, "127.0.0.21", "127.0.0.31", "auto", f"{hold}s"),
    )
    server = serve(cfg)
    assert server.answer(API) == ("127.0.0.21",)

    http_endpoints.stop("127.0.0.21")
    wait_for(lambda: server.answer(API) == ("127.0.0.31",), 5 * DETECTION)

    http_endpoints.start("127.0.0.21")
    back_at = time.monotonic()
    time.sleep(hold / 2)
    assert server.answer(API) == ("127.0.0.31",), "no failback before hold_down"
    wait_for(lambda: server.answer(API) == ("127.0.0.21",), 5 * (hold + DETECTION))
    assert time.monotonic() - back_at >= hold


def test_active_passive_manual_failback_needs_the_operator(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server and the CLI both read the API token from the environment
    monkeypatch.setenv("DNSFAILOVER_API_TOKEN", "e2e-token-0123456789abcdef")
    cfg = write_config(
        tmp_path / "c.yaml",
        active_passive(http_endpoints, "127.0.0.22", "127.0.0.32", "manual", "100ms"),
    )
    state = tmp_path / "state.db"
    server = serve(cfg, state=state)
    http_endpoints.stop("127.0.0.22")
    wait_for(lambda: server.answer(API) == ("127.0.0.32",), 5 * DETECTION)
    http_endpoints.start("127.0.0.22")
    time.sleep(5 * (INTERVAL * RISE + TIMEOUT))
    assert server.answer(API) == ("127.0.0.32",), "manual: stays on the backup"

    assert server.api is not None
    out = run_cli("failback", "api", "--api", server.api, "--reason", "e2e")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: server.answer(API) == ("127.0.0.22",), 5.0)

    events = run_cli("events", "--api", server.api)
    assert "failback" in events.stdout
    assert "e2e" in events.stdout
    # with the server stopped, the history is still readable from its state file
    assert server.stop() == 0
    offline = run_cli("events", "--state", str(state), "--limit", "500")
    assert offline.returncode == 0, offline.stderr
    assert "failback" in offline.stdout
    assert "e2e" in offline.stdout
    missing = run_cli("events", "--state", str(tmp_path / "nope.db"))
    assert missing.returncode == 2
    assert "no state file at" in missing.stderr


def test_tcp_check_and_restart_keeps_serial_increasing(tmp_path: Path, serve: Serve) -> None:
    up = TcpListener("127.0.0.41")
    down = TcpListener("127.0.0.42")
    try:
        body = f"""\
      db:
        policy: active-active
        check: web
        all_down: serve_none
        endpoints: [{endpoint("127.0.0.41", up.port)}, {endpoint("127.0.0.42", down.port)}]
"""
        cfg = write_config(tmp_path / "c.yaml", body, check_type="tcp")
        state = tmp_path / "state.db"
        server = serve(cfg, state=state)
        assert server.answer("db.example.test.") == ("127.0.0.41", "127.0.0.42")
        first = server.serial("example.test.")
        down.close()
        wait_for(lambda: server.answer("db.example.test.") == ("127.0.0.41",), 5 * DETECTION)
        second = server.serial("example.test.")
        assert second > first
        assert server.stop() == 0

        again = serve(cfg, state=state)
        assert again.serial("example.test.") > second
        assert again.answer("db.example.test.") == ("127.0.0.41",)
    finally:
        up.close()
        down.close()


def test_dig_gets_authoritative_answers_and_negative_answers(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(tmp_path / "c.yaml", active_active(http_endpoints, "127.0.0.13"))
    server = serve(cfg)
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(server.port), WWW, "A", "+norec"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert "status: NOERROR" in out
    assert " aa" in out.split("flags:")[1].split(";")[0]
    assert "127.0.0.13" in out
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(server.port), "nope.example.test."],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert "status: NXDOMAIN" in out
    assert "SOA" in out.split("AUTHORITY SECTION")[1]
    r = server.query("example.org.", "A", tcp=True)
    assert r.rcode() == dns.rcode.REFUSED


def test_bad_config_exits_2_with_file_and_line_and_serves_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "checks:\n"
        "  web: {type: http, interval: 10ms}\n"
        "zones:\n"
        "  example.test.:\n"
        "    soa: {mname: ns1.example.test., rname: h.example.test.}\n"
        "    nameservers: [ns1.example.test.]\n"
        "    failover:\n"
        "      www: {policy: active-active, check: nosuch, endpoints: [not-an-ip]}\n"
    )
    for command in (
        ["validate", str(cfg)],
        ["serve", str(cfg), "--dns", "127.0.0.1:0", "--state", str(tmp_path / "s.db")],
    ):
        out = run_cli(*command, timeout=20)
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert any(line.startswith(f"{cfg}:2: ") and "interval" in line for line in lines), lines
        assert any(line.startswith(f"{cfg}:8: ") and "not-an-ip" in line for line in lines), lines
    assert not (tmp_path / "s.db").exists(), "a bad config must not touch the state"
    assert (
        run_cli(
            "validate", str(Path(__file__).parents[2] / "config" / "example.yaml"), timeout=20
        ).returncode
        == 0
    )


def test_plan_probes_once_and_changes_nothing(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", active_active(http_endpoints, "127.0.0.14", "127.0.0.15")
    )
    http_endpoints.stop("127.0.0.15")
    out = run_cli("plan", str(cfg), "--state", str(tmp_path / "s.db"))
    assert out.returncode == 0, out.stderr
    assert "www.example.test. active-active health=degraded -> 127.0.0.14\n" in out.stdout
    assert "FAIL web@127.0.0.15" in out.stdout
    assert not (tmp_path / "s.db").exists()


def test_api_port_taken_is_a_clear_error(tmp_path: Path, http_endpoints: HttpEndpoints) -> None:
    import socket

    cfg = write_config(tmp_path / "c.yaml", active_active(http_endpoints, "127.0.0.91"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = run_cli(
            "serve",
            str(cfg),
            "--dns",
            "127.0.0.1:0",
            "--api",
            f"127.0.0.1:{port}",
            "--state",
            str(tmp_path / "s.db"),
        )
    assert out.returncode == 1
    assert f"error: cannot serve the API on 127.0.0.1:{port}:" in out.stderr
    assert "--api off" in out.stderr


def test_json_logs_carry_the_data_and_answers_read_as_text(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    """`--log-format json`: a failover's line has name, zone, kind, old, new, tier and reason
    as keys, a health change its check, endpoint, region and states; people read answers as
    `a, b -> c` (the message, and the event history), never as Python lists."""
    import json

    cfg = write_config(
        tmp_path / "c.yaml", active_passive(http_endpoints, "127.0.0.31", "127.0.0.32", "auto")
    )
    server = serve(cfg, "--log-format", "json")
    http_endpoints.stop("127.0.0.31")
    wait_for(lambda: server.answer(API) == ("127.0.0.32",), 5 * DETECTION)
    server.stop()
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line]
    failover = next(r for r in lines if r["message"].startswith("engine: failover"))
    assert failover["message"].startswith(f"engine: failover {API}: 127.0.0.31 -> 127.0.0.32: ")
    assert failover["name"] == API
    assert failover["group"] == ""
    assert failover["zone"] == "example.test."
    assert (failover["old"], failover["new"]) == (["127.0.0.31"], ["127.0.0.32"])
    assert failover["tier"] == "backup"
    assert failover["reason"]
    health = next(r for r in lines if r.get("new") == "down" and r.get("region") is None)
    assert health["check"] == "web"
    assert health["endpoint"].startswith("127.0.0.31:")
    assert health["old"] == "up"
    publish = next(r for r in lines if r["message"].startswith("publish:"))
    assert publish["serials"]["example.test."] > 0
    events = run_cli("events", "--state", str(tmp_path / "state.db"))
    assert "127.0.0.31 -> 127.0.0.32" in events.stdout, events.stdout
    assert "['" not in events.stdout
