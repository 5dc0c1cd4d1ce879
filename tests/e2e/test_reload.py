"""Reload: SIGHUP and `dnsfailover reload` against the real server."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import HttpEndpoints, Server, run_cli, wait_for
from test_serve import WWW, endpoint, write_config

pytestmark = pytest.mark.e2e
Serve = Callable[..., Server]
TOKEN = "reload-token-0123456789abcdef"


def www(ep: HttpEndpoints, *addresses: str) -> str:
    eps = ", ".join(endpoint(a, ep.ports.get(a) or ep.start(a)) for a in addresses)
    return f"""\
      www:
        policy: active-active
        check: web
        endpoints: [{eps}]
"""


class Watch:
    """Every distinct answer the server gives, in order, polled on a thread."""

    def __init__(self, server: Server) -> None:
        self.seen: list[tuple[str, ...]] = []
        self._server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            answer = self._server.answer(WWW)
            if not self.seen or self.seen[-1] != answer:
                self.seen.append(answer)
            time.sleep(0.005)

    def stop(self) -> list[tuple[str, ...]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.seen


def test_sighup_swaps_endpoints_in_one_publish_and_keeps_health(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    cfg = write_config(tmp_path / "c.yaml", www(http_endpoints, "127.0.0.81", "127.0.0.82"))
    server = serve(cfg)
    wait_for(lambda: server.answer(WWW) == ("127.0.0.81", "127.0.0.82"), 5)
    serial = server.serial("example.test.")
    http_endpoints.start("127.0.0.83")
    write_config(tmp_path / "c.yaml", www(http_endpoints, "127.0.0.81", "127.0.0.83"))
    watch = Watch(server)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.answer(WWW) == ("127.0.0.81", "127.0.0.83"), 5)
    hits_82 = http_endpoints.hits.get("127.0.0.82", 0)
    time.sleep(1.0)  # five probe intervals
    seen = watch.stop()
    # one step from the old answer to the new one: no moment without .81 (its health was
    # kept) and no moment with .83 missing or .82 still there (new targets probed first)
    assert seen == [("127.0.0.81", "127.0.0.82"), ("127.0.0.81", "127.0.0.83")], seen
    assert server.serial("example.test.") > serial
    # the removed endpoint is no longer probed
    assert http_endpoints.hits.get("127.0.0.82", 0) <= hits_82 + 1
    log = server.log.read_text()
    assert "reload: 1 target(s) added, 1 removed, 1 kept" in log


def test_a_bad_config_is_refused_and_the_running_one_stays(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DNSFAILOVER_API_TOKEN", TOKEN)
    cfg = write_config(tmp_path / "c.yaml", www(http_endpoints, "127.0.0.84"))
    server = serve(cfg)
    wait_for(lambda: server.answer(WWW) == ("127.0.0.84",), 5)
    serial = server.serial("example.test.")
    good = cfg.read_text()
    cfg.write_text(good.replace("interval: 200ms", "interval: 10ms"))
    assert server.api is not None
    out = run_cli("reload", "--api", server.api)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{cfg}:6: checks.web.interval: interval must be at least 100ms" in out.stderr
    server.proc.send_signal(signal.SIGHUP)  # the same through the signal: logged, refused
    wait_for(lambda: "still running the previous config" in server.log.read_text(), 5)
    assert server.answer(WWW) == ("127.0.0.84",)
    assert server.serial("example.test.") == serial
    # fixed, it applies
    http_endpoints.start("127.0.0.85")
    cfg.write_text(
        good.replace(
            endpoint("127.0.0.84", http_endpoints.ports["127.0.0.84"]),
            endpoint("127.0.0.85", http_endpoints.ports["127.0.0.85"]),
        )
    )
    out = run_cli("reload", "--api", server.api)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reloaded: 1 target(s) added, 1 removed, 0 kept" in out.stdout
    assert server.answer(WWW) == ("127.0.0.85",)  # published before the call returned


def test_reload_cannot_add_a_zone_and_says_so(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DNSFAILOVER_API_TOKEN", TOKEN)
    cfg = write_config(tmp_path / "c.yaml", www(http_endpoints, "127.0.0.86"))
    server = serve(cfg)
    cfg.write_text(
        cfg.read_text()
        + """\
  other.test.:
    soa: {mname: ns1.other.test., rname: hostmaster.other.test.}
    nameservers: [ns.example.test.]
"""
    )
    assert server.api is not None
    out = run_cli("reload", "--api", server.api)
    assert out.returncode == 2
    assert "cannot add or remove zones" in out.stderr
    assert server.answer(WWW) == ("127.0.0.86",)


def test_reload_applies_a_new_transfer_acl(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    import dns.exception
    import dns.query
    import dns.zone

    cfg = write_config(tmp_path / "c.yaml", www(http_endpoints, "127.0.0.87"))
    server = serve(cfg)

    def axfr() -> dns.zone.Zone:
        return dns.zone.from_xfr(dns.query.xfr("127.0.0.1", "example.test.", port=server.port))

    with pytest.raises(dns.exception.DNSException):
        axfr()  # no allow_transfer: refused
    text = cfg.read_text().replace(
        "    nameservers: [ns1.example.test.]\n",
        "    nameservers: [ns1.example.test.]\n    allow_transfer: [127.0.0.1]\n",
    )
    cfg.write_text(text)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f"reload: {cfg} applied" in server.log.read_text(), 5)
    zone = axfr()
    assert zone.get_rdataset("www", "A") is not None


def events(server: Server) -> list[dict[str, Any]]:
    assert server.api is not None
    with urllib.request.urlopen(f"{server.api}/api/v1/events?limit=50", timeout=5) as r:
        body: dict[str, Any] = json.load(r)
    return list(body["events"])


@pytest.mark.parametrize("interval", [".inf", ".nan", "1.0e400"])
def test_a_reload_with_a_non_finite_interval_is_refused_and_probing_goes_on(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve, interval: str
) -> None:
    """Item 2a: such an interval used to pass validation, and the reload then stopped every
    probe: a stopped endpoint stayed in DNS.  Now the file is refused, and the running
    config keeps probing and failing over."""
    cfg = write_config(tmp_path / "c.yaml", www(http_endpoints, "127.0.0.88", "127.0.0.89"))
    server = serve(cfg)
    wait_for(lambda: server.answer(WWW) == ("127.0.0.88", "127.0.0.89"), 5)
    cfg.write_text(cfg.read_text().replace("interval: 200ms", f"interval: {interval}"))
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "still running the previous config" in server.log.read_text(), 10)
    log = server.log.read_text()
    assert f"{cfg}:6: checks.web.interval: a duration must be a finite number" in log
    assert "Traceback" not in log
    assert "never retrieved" not in log
    assert [e["kind"] for e in events(server)].count("reload-failed") == 1
    http_endpoints.stop("127.0.0.89")
    wait_for(lambda: server.answer(WWW) == ("127.0.0.88",), 10)  # probes still run


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("interval", "6: checks.web.interval: a duration must be a finite number"),
        ("token_file", "api.token_file: api.token_file"),
        ("short_token", "api.token_file: api.token_file"),
    ],
)
def test_serve_with_a_bad_config_exits_2_and_creates_nothing(
    tmp_path: Path, http_endpoints: HttpEndpoints, setting: str, says: str
) -> None:
    """`.inf` used to crash `serve` after it created state.db; a missing or short API token
    was found only after DNS was bound and the state written."""
    cfg = write_config(tmp_path / "c.yaml", www(http_endpoints, "127.0.0.90"))
    token = tmp_path / "token"
    token.write_text("short\n")
    text = cfg.read_text()
    if setting == "interval":
        text = text.replace("interval: 200ms", "interval: .inf")
    else:
        missing = tmp_path / "nosuch" if setting == "token_file" else token
        text += f"api:\n  token_file: {missing}\n"
    cfg.write_text(text)
    state = tmp_path / "state.db"
    out = run_cli(
        "serve", str(cfg), "--dns", "127.0.0.1:0", "--api", "127.0.0.1:0", "--state", str(state),
        timeout=30,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{cfg}:" in out.stderr, out.stderr
    assert says in out.stderr, out.stderr
    assert "short\n" not in out.stderr  # never the token itself
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.glob("state.db*"))
    assert out.stdout == ""  # never said it was serving


def test_an_alias_bomb_given_to_reload_is_refused_at_once_and_dns_keeps_answering(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    """Item 2d: a 1.3 KB alias bomb is refused by the loader's alias bound (on a thread,
    never on the serving loop), while DNS answers every query and the config stays."""
    cfg = write_config(tmp_path / "c.yaml", www(http_endpoints, "127.0.0.91", "127.0.0.92"))
    server = serve(cfg)
    wait_for(lambda: server.answer(WWW) == ("127.0.0.91", "127.0.0.92"), 5)
    good = cfg.read_text()
    lines = ["    headers:", "      a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        lines.append(f"      a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    cfg.write_text(
        good.replace("    path: /healthz\n", "    path: /healthz\n" + "\n".join(lines) + "\n")
    )
    started = time.monotonic()
    server.proc.send_signal(signal.SIGHUP)
    slowest = 0.0
    while "still running the previous config" not in server.log.read_text():
        assert time.monotonic() - started < 10, "the bomb was not refused within 10 s"
        one = time.monotonic()
        assert server.answer(WWW) == ("127.0.0.91", "127.0.0.92")
        slowest = max(slowest, time.monotonic() - one)
    assert "is it an alias bomb?" in server.log.read_text()
    assert slowest < 1.0, slowest
    http_endpoints.stop("127.0.0.92")
    wait_for(lambda: server.answer(WWW) == ("127.0.0.91",), 10)  # the old config probes on


async def test_a_reload_that_fails_half_way_changes_nothing(tmp_path: Path) -> None:
    """Item 2a: whatever fails while applying a validated config (here its TSIG secret file
    disappears between load and reload) leaves the running config, its probes and its
    answers whole, and is reported as a `reload-failed` event."""
    from dnsfailover.config.load import loads
    from dnsfailover.errors import UserError
    from dnsfailover.runtime.node import Node

    endpoints = await asyncio.to_thread(HttpEndpoints)
    node: Node | None = None
    secret = tmp_path / "xfr.key"

    def configs() -> tuple[str, str]:
        old = write_config(tmp_path / "a.yaml", www(endpoints, "127.0.0.93")).read_text()
        secret.write_text("c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n")
        new = write_config(tmp_path / "b.yaml", www(endpoints, "127.0.0.93", "127.0.0.94"))
        return old, new.read_text().replace(
            "    nameservers: [ns1.example.test.]\n",
            "    nameservers: [ns1.example.test.]\n    allow_transfer: [{key: xfr}]\n",
        ) + f"tsig_keys:\n  xfr: {{secret_file: {secret}}}\n"

    try:
        old_text, new_text = await asyncio.to_thread(configs)
        old = await asyncio.to_thread(loads, old_text, "a.yaml")
        new = await asyncio.to_thread(loads, new_text, "b.yaml")
        node = Node(old, dns_host="127.0.0.1", dns_port=0, state_path=tmp_path / "s.db")
        await node.start()
        await asyncio.to_thread(secret.unlink)
        hits = endpoints.hits.get("127.0.0.94", 0)
        with pytest.raises(UserError, match="cannot apply the new config: TsigSecretError"):
            await node.reload(new)
        assert node.config is old
        await asyncio.sleep(1.0)  # five probe intervals
        assert endpoints.hits.get("127.0.0.94", 0) == hits  # the new target is not probed
        kinds = [e.kind for e in await node.events(20, None)]
        assert "reload-failed" in kinds
        assert "reload" not in kinds
        published = node.published
        assert published is not None
        names = published.decision.names
        assert names["www.example.test."].answer == ("127.0.0.93",)
    finally:
        if node is not None:
            await node.stop()
        await asyncio.to_thread(endpoints.close)


async def test_a_probe_update_that_cannot_be_built_stops_no_probe(tmp_path: Path) -> None:
    """`ProbeScheduler.update` used to stop the changed targets, then raise while starting
    them again: no probes at all afterwards.  Now it builds first and changes nothing when
    that fails (here an interval no timer can hold, which validation no longer lets by)."""
    import math

    from dnsfailover.checks.scheduler import ProbeScheduler
    from dnsfailover.config.load import loads
    from dnsfailover.model import Observation

    endpoints = await asyncio.to_thread(HttpEndpoints)
    seen: list[Observation] = []
    scheduler: ProbeScheduler | None = None
    try:
        text = await asyncio.to_thread(
            lambda: write_config(tmp_path / "c.yaml", www(endpoints, "127.0.0.97")).read_text()
        )
        targets = (await asyncio.to_thread(loads, text, "c.yaml")).targets()
        ((key, (target, check)),) = targets.items()
        scheduler = ProbeScheduler(targets, region="local", on_observation=seen.append)
        scheduler.start()
        broken = check.model_copy(update={"interval": math.inf})
        with pytest.raises(OverflowError):
            scheduler.update({key: (target, broken)})
        seen.clear()
        await asyncio.sleep(1.0)  # five intervals of the running check
        assert len(seen) >= 2, seen
        assert all(o.ok for o in seen)
    finally:
        if scheduler is not None:
            await scheduler.stop()
        await asyncio.to_thread(endpoints.close)
