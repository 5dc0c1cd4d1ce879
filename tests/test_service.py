"""The service in-process: real endpoints, real DNS, and no blocking call on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import pytest
from aiohttp import web
from blockbuster import BlockBuster, blockbuster_ctx

from dnsfailover.config.load import loads
from dnsfailover.runtime.node import Node
from dnsfailover.tasks import stop_site

A, B = "127.0.0.61", "127.0.0.62"


@pytest.fixture
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx(["dnsfailover"]) as bb:
        yield bb


async def answer(port: int, name: str) -> tuple[str, ...]:
    q = dns.message.make_query(name, "A")
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
    return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))


async def until(port: int, name: str, want: tuple[str, ...], limit: float) -> None:
    """Poll the real server over UDP: the answer is what a resolver would see."""
    async with asyncio.timeout(limit):
        while await answer(port, name) != want:  # noqa: ASYNC110 - polling a remote server
            await asyncio.sleep(0.02)


class Endpoints:
    """A and B as real aiohttp /healthz endpoints on the test's loop; `stop`/`start` one."""

    async def __aenter__(self) -> Endpoints:
        async def healthz(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.sites = {a: web.TCPSite(self.runner, a, 0) for a in (A, B)}
        for site in self.sites.values():
            await site.start()
        self.ports = {
            a: s._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            for a, s in self.sites.items()
        }
        return self

    async def stop(self, address: str) -> None:
        await stop_site(self.sites[address])

    async def start(self, address: str) -> None:
        site = web.TCPSite(self.runner, address, self.ports[address], reuse_address=True)
        await site.start()
        self.sites[address] = site

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def www_config(ports: dict[str, int], extra: str = "", a_extra: str = "", b_extra: str = "") -> str:
    """An active-active www over A and B; `extra` adds record keys, `*_extra` endpoint keys."""
    return f"""\
checks:
  web: {{type: http, path: /healthz, interval: 100ms, timeout: 100ms, fall: 2, rise: 2}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www:
        policy: active-active
        check: web{extra}
        endpoints:
          - {{address: {A}, check_port: {ports[A]}{a_extra}}}
          - {{address: {B}, check_port: {ports[B]}{b_extra}}}
"""


async def test_failover_in_process_never_blocks_the_loop(
    tmp_path: Path, blockbuster: BlockBuster
) -> None:
    async with Endpoints() as endpoints:
        text = www_config(endpoints.ports)
        config = await asyncio.to_thread(loads, text)  # reading config is sync I/O
        service = Node(config, dns_port=0, state_path=tmp_path / "state.db")
        try:
            _host, port = await service.start()
            assert await answer(port, "www.example.test.") == (A, B)
            await endpoints.stop(B)
            await until(port, "www.example.test.", (A,), 5 * 0.3)
            assert service.published is not None
            nd = service.published.decision.names["www.example.test."]
            assert nd.mode == "degraded"
            assert "1/2 endpoints up" in nd.reason
        finally:
            await service.stop()


async def test_over_capacity_is_loud_once_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two endpoints of 400 carry a load of 600; one dies and the survivor cannot: an
    ERROR, one `capacity` event (not one per decision), and another when it recovers."""
    import logging

    caplog.set_level(logging.WARNING, logger="dnsfailover")
    async with Endpoints() as endpoints:
        cap = ", capacity: 400"
        text = www_config(endpoints.ports, "\n        load: 600", cap, cap)
        service = Node(loads(text), dns_port=0, state_path=tmp_path / "s.db")
        _host, port = await service.start()
        try:
            await until(port, "www.example.test.", (A, B), 5)
            await endpoints.stop(B)
            await until(port, "www.example.test.", (A,), 5)
            await asyncio.sleep(0.5)  # several more decisions: still one event
            assert service.store is not None
            events = await service.store.run(lambda s: s.events(100))
            over = [e for e in events if e.kind == "capacity"]
            assert len(over) == 1, over
            assert "OVER CAPACITY" in over[0].message
            assert any(
                r.levelname == "ERROR" and "OVER CAPACITY" in r.getMessage() for r in caplog.records
            )
            await endpoints.start(B)
            await until(port, "www.example.test.", (A, B), 5)
            events = await service.store.run(lambda s: s.events(100))
            kinds = [e.message for e in events if e.kind == "capacity"]
            assert len(kinds) == 2, kinds
            assert kinds[0] == "www.example.test. back within capacity"  # newest first
        finally:
            await service.stop()
