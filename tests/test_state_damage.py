"""A damaged, lost or full state file never stops failover: the real `dnsfailover serve`
against real SQLite files damaged on disk, real DNS queries, the real HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import BIN, HttpEndpoints, Server, run_cli, wait_for

from dnsfailover.runtime.serials import MAX_AHEAD
from dnsfailover.runtime.store import Store

TOKEN = "state-token-0123456789abcdef"
WWW = "www.example.test."
ZONE = "example.test."
Serve = Callable[..., Server]
A, B = "127.0.0.61", "127.0.0.62"


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNSFAILOVER_API_TOKEN", TOKEN)


def write_config(path: Path, ep: HttpEndpoints, interval: str = "100ms", fall: int = 2) -> Path:
    eps = ", ".join(f"{{address: {a}, check_port: {ep.start(a)}}}" for a in (A, B))
    path.write_text(
        f"""\
checks:
  web: {{type: http, path: /healthz, interval: {interval}, timeout: 80ms, rise: 1, fall: {fall}}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    allow_transfer: [127.0.0.1]  # a secondary holds its serial: it must never go back
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www: {{policy: active-active, check: web, endpoints: [{eps}]}}
"""
    )
    return path


def api(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    assert server.api is not None
    req = urllib.request.Request(
        server.api + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read() or b"null")


def drain(server: Server, address: str) -> tuple[int, Any]:
    body = {"action": "drain", "endpoint": address, "reason": "maintenance", "who": "test"}
    return api(server, "POST", "/api/v1/overrides", body)


def log_text(server: Server) -> str:
    return server.log.read_text(errors="replace")


def fresh_state(path: Path) -> None:
    Store(path).close()


# -- one bad row ----------------------------------------------------------------------------

BAD_ROWS = {
    "override": "INSERT INTO overrides VALUES ('bad0001', '{{\"action\": \"drain\", broken')",
    "health": "INSERT INTO health VALUES ('web@{a}:{p}', 'local', 'sideways', 1.0, 'x')",
    "engine": "INSERT INTO engine (name, active, answer, healthy_since, state) "
    "VALUES ('www.example.test.', NULL, '[broken', '{{', '{{')",
    "serial": "INSERT INTO serials VALUES ('example.test.', 'not-a-number')",
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_one_bad_row_is_skipped_reported_and_the_node_serves(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve, kind: str
) -> None:
    cfg = write_config(tmp_path / "c.yaml", http_endpoints)
    state = tmp_path / "state.db"
    fresh_state(state)
    with sqlite3.connect(state) as db:
        db.execute(BAD_ROWS[kind].format(a=A, p=http_endpoints.ports[A]))
    db.close()

    server = serve(cfg, state=state)  # before: a traceback on every start
    assert server.answer(WWW) == (A, B)
    log = log_text(server)
    assert "ERROR" in log
    assert "skipped" in log
    assert "Traceback" not in log
    status, body = api(server, "GET", "/api/v1/events?limit=100")
    assert status == 200
    stored = [e for e in body["events"] if e["kind"] == "store"]
    assert len(stored) == 1, body
    assert "skipped" in stored[0]["message"]
    # and failover still works
    http_endpoints.stop(A)
    wait_for(lambda: server.answer(WWW) == (B,), 5.0)
    if kind == "serial":
        assert server.serial(ZONE) >= int(time.time())


# -- a lost WAL ---------------------------------------------------------------------------


def test_an_acknowledged_override_survives_kill_9_and_a_deleted_wal(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(tmp_path / "c.yaml", http_endpoints)
    state = tmp_path / "state.db"
    server = serve(cfg, state=state)
    status, body = drain(server, A)
    assert status == 201, body
    wait_for(lambda: server.answer(WWW) == (B,), 5.0)
    status, body = api(
        server,
        "POST",
        "/api/v1/events",
        {"kind": "drill", "subject": "s", "message": "posted-event"},
    )
    assert status in (200, 201), body

    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.stop()
    for suffix in ("-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)

    again = serve(cfg, state=state)
    status, body = api(again, "GET", "/api/v1/overrides")
    assert [o["endpoint"] for o in body["overrides"]] == [A], "the drain is still in force"
    assert again.answer(WWW) == (B,)
    status, body = api(again, "GET", "/api/v1/events?limit=100")
    messages = " ".join(e["message"] for e in body["events"])
    assert "maintenance" in messages
    assert "posted-event" in messages


# -- the history: bounded, and damage in it is a clear error --------------------------------


def test_events_are_pruned_to_a_bound_and_the_file_stops_growing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path, keep_events=500, prune_every=100)
    row = (time.time(), "drill", "subject", "x" * 200)
    store.add_events([(0.0, "drill", "ancient", "older than the age bound")])
    sizes = []
    for batch in range(40):
        store.add_events([row] * 100)
        if batch in (19, 39):
            store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes.append(path.stat().st_size)
    count = store._db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert count <= 600  # keep + one pruning period
    assert all(e.subject != "ancient" for e in store.events(1000))
    assert sizes[1] <= sizes[0] * 1.1, sizes  # 2,000 more events, the same pages
    store.close()


def damage_the_middle(path: Path, events: int = 3000) -> None:
    store = Store(path)
    now = time.time()
    for i in range(0, events, 500):
        store.add_events((now, "drill", f"s{j}", "history " * 40) for j in range(i, i + 500))
    store.close()
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek((size // 2) & ~4095)
        f.write(os.urandom(4096))


def test_garbage_in_the_history_is_a_clear_error_not_a_traceback(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(tmp_path / "c.yaml", http_endpoints)
    state = tmp_path / "state.db"
    damage_the_middle(state)
    server = serve(cfg, state=state)
    assert server.answer(WWW) == (A, B), "history damage never stops DNS"

    statuses, before, error = [], None, ""
    for _ in range(20):  # page back through the history, into the damaged pages
        query = "?limit=1000" + (f"&before={before}" if before else "")
        status, body = api(server, "GET", "/api/v1/events" + query)
        statuses.append(status)
        if status != 200 or not body["next_before"]:
            error = body.get("error", "") if status != 200 else ""
            break
        before = body["next_before"]
    assert 500 not in statuses
    assert statuses[-1] == 503, statuses
    assert "damaged" in error
    assert "--state-recover" in error
    assert "Traceback" not in log_text(server)
    server.stop()

    outs = [
        run_cli("events", "--state", str(state), "--limit", "1000", "--before", str(b))
        for b in range(3001, 0, -1000)
    ]
    failed = [o for o in outs if o.returncode != 0]
    assert failed, "a page of the history is damaged"
    assert all("Traceback" not in o.stderr for o in outs)
    assert "damaged" in failed[0].stderr
    assert "--state-recover" in failed[0].stderr

    again = serve(cfg, "--state-recover", state=state)  # what the errors said to do
    assert again.answer(WWW) == (A, B)
    assert list(tmp_path.glob("state.db.damaged-*[0-9]")), "moved aside, kept"
    status, body = api(again, "GET", "/api/v1/events?limit=1000")
    assert status == 200


# -- a damaged file: refuse, naming the way forward; with it, start cold --------------------


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 3)


def foreign(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a state file" * 200)


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [truncate, foreign, empty], ids=lambda f: f.__name__)
def test_a_damaged_file_names_state_recover_which_starts_cold_and_keeps_it(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve, damage: Callable[[Path], None]
) -> None:
    cfg = write_config(tmp_path / "c.yaml", http_endpoints)
    state = tmp_path / "state.db"
    first = serve(cfg, state=state)
    assert drain(first, A)[0] == 201
    wait_for(lambda: first.answer(WWW) == (B,), 5.0)
    served = first.serial(ZONE)
    # many events, so a third of the file is short of the tables' pages
    for i in range(30):
        api(
            first,
            "POST",
            "/api/v1/events",
            {"kind": "drill", "subject": "s", "message": "x" * 2000 + str(i)},
        )
    assert first.stop() == 0
    damage(state)
    original = state.read_bytes()

    refused = subprocess.run(
        [str(BIN), "serve", str(cfg), "--dns", "127.0.0.1:0", "--api", "off",
         "--state", str(state)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "--state-recover" in refused.stderr
    assert str(state) in refused.stderr
    assert "Traceback" not in refused.stderr
    assert state.read_bytes() == original, "nothing touched without the flag"

    again = serve(cfg, "--state-recover", state=state)
    assert again.answer(WWW) == (A, B), "cold: the drain was in the damaged file"
    assert again.serial(ZONE) > served
    [aside] = tmp_path.glob("state.db.damaged-*[0-9]")
    assert aside.read_bytes() == original, "the damaged file is kept"
    _status, body = api(again, "GET", "/api/v1/events?limit=100")
    assert any("moved aside" in e["message"] for e in body["events"] if e["kind"] == "store")


# -- serials never go backwards, even when the state file is lost ----------------------------


def flap(ep: HttpEndpoints, address: str, stop: threading.Event) -> None:
    status = 503
    while not stop.wait(0.25):
        ep.set_status(address, status)
        status = 200 if status == 503 else 503


def test_serial_stays_monotonic_after_fast_flapping_and_a_lost_state_file(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(tmp_path / "c.yaml", http_endpoints, interval="100ms", fall=1)
    state = tmp_path / "state.db"
    server = serve(cfg, state=state)
    stop = threading.Event()
    flapper = threading.Thread(target=flap, args=(http_endpoints, A, stop))
    start = server.serial(ZONE)
    flapper.start()
    try:
        time.sleep(6)
    finally:
        stop.set()
        flapper.join()
    before = server.serial(ZONE)
    assert before > start + 3, "the endpoint flapped"
    assert before <= time.time() + MAX_AHEAD + 1, "bounded ahead of the clock"
    # restarted within the same second, or later: strictly above (a secondary would
    # otherwise keep the old content under the same serial)
    assert server.stop() == 0
    for p in tmp_path.glob("state.db*"):
        p.unlink()  # the state file is lost

    again = serve(cfg, state=state)
    assert again.serial(ZONE) > before


# -- a full disk ----------------------------------------------------------------------------


class FullDiskServer(Server):
    """`dnsfailover serve` with its state on a 1 MB tmpfs of its own: a private mount
    namespace in a user namespace (`unshare -rm`), so no root is needed.  The test fills it
    through /proc/PID/root."""

    def __init__(self, config: Path, state_dir: Path) -> None:
        self.log = config.with_suffix(".log")
        self._log_file = self.log.open("ab")
        script = (
            f"mount -t tmpfs -o size=1m tmpfs {state_dir} && exec {os.fspath(BIN)} serve "
            f"{config} --dns 127.0.0.1:0 --api 127.0.0.1:0 --state {state_dir}/state.db"
        )
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"on 127\.0\.0\.1:(\d+) .* api (http://[^\s,]+)", line)
        if not m:
            self.stop()
            raise AssertionError(f"server did not start: {line!r}\n{self.log.read_text()}")
        self.port, self.api = int(m.group(1)), m.group(2)
        self.state_dir = Path(f"/proc/{self.proc.pid}/root{state_dir}")


@pytest.fixture
def full_disk_server(
    tmp_path: Path, http_endpoints: HttpEndpoints
) -> Iterator[tuple[FullDiskServer, HttpEndpoints]]:
    cfg = write_config(tmp_path / "c.yaml", http_endpoints)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    server = FullDiskServer(cfg, state_dir)
    yield server, http_endpoints
    server.stop()


def fill(directory: Path) -> None:
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):  # ENOSPC
        while True:
            f.write(b"\0" * 4096)


def test_a_full_disk_does_not_stop_failover_and_is_reported(
    full_disk_server: tuple[FullDiskServer, HttpEndpoints],
) -> None:
    server, ep = full_disk_server
    assert server.answer(WWW) == (A, B)
    assert api(server, "GET", "/healthz")[0] == 200
    fill(server.state_dir)

    for i in range(20):  # more changes than one block of serial floors
        if i % 2 == 0:
            ep.stop(A)
            wait_for(lambda: server.answer(WWW) == (B,), 5.0)
        else:
            ep.start(A)
            wait_for(lambda: server.answer(WWW) == (A, B), 5.0)
    status, body = api(server, "GET", "/healthz")
    assert status == 503, body
    assert any("full" in p for p in body["problems"])
    status, body = drain(server, B)
    assert status == 503, body
    assert "full" in body["error"]
    log = log_text(server)
    assert "Traceback" not in log
    assert "decision failed" not in log

    (server.state_dir / "filler").unlink()  # space is back
    ep.stop(A)
    wait_for(lambda: server.answer(WWW) == (B,), 5.0)
    wait_for(lambda: api(server, "GET", "/healthz")[0] == 200, 5.0)
