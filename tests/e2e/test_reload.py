"""Reload: SIGHUP and `dnsfailover reload` against the real server."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

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
