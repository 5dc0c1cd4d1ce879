"""A real in-process service with its HTTP API, over real HTTP endpoints, for the API tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
from support import HttpEndpoints

from dnsfailover.api.server import ApiServer
from dnsfailover.config.load import loads
from dnsfailover.runtime.node import Node

TOKEN = "test-token-0123456789abcdef"
WWW, API = "www.example.test.", "api.example.test."
A, B = "127.0.0.71", "127.0.0.72"  # www: active-active
C, D = "127.0.0.73", "127.0.0.74"  # api: active-passive, tiers primary (C) and backup (D)


def config_text(ports: dict[str, int]) -> str:
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
        check: web
        endpoints:
          - {{address: {A}, check_port: {ports[A]}}}
          - {{address: {B}, check_port: {ports[B]}}}
      api:
        policy: active-passive
        check: web
        failback: manual
        tiers:
          - name: primary
            endpoints: [{{address: {C}, check_port: {ports[C]}}}]
          - name: backup
            endpoints: [{{address: {D}, check_port: {ports[D]}}}]
"""


@dataclass
class Live:
    service: Node
    api: ApiServer
    base: str
    dns_port: int
    endpoints: HttpEndpoints
    http: aiohttp.ClientSession

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.http.get(self.base + path) as r:
            body = await r.json()
            assert r.status == status, (r.status, body)
            return body

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        status: int = 200,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            data = await r.json()
            assert r.status == status, (r.status, data)
            return data

    async def answer(self, name: str) -> tuple[str, ...]:
        q = dns.message.make_query(name, "A")
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=self.dns_port, timeout=2)
        return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))

    async def rcode(self, name: str) -> str:
        q = dns.message.make_query(name, "A")
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=self.dns_port, timeout=2)
        return dns.rcode.to_text(r.rcode())

    async def until_answer(self, name: str, want: tuple[str, ...], limit: float = 10) -> None:
        async with asyncio.timeout(limit):
            while await self.answer(name) != want:  # noqa: ASYNC110 - polling a real server
                await asyncio.sleep(0.05)

    async def until(self, path: str, check: Any, limit: float = 10) -> Any:
        """Poll GET `path` until `check(body)` is true; returns that body."""
        async with asyncio.timeout(limit):
            while True:
                body = await self.get(path)
                if check(body):
                    return body
                await asyncio.sleep(0.05)


@asynccontextmanager
async def live_service(
    tmp_path: Path, *, token: str | None = TOKEN, extra: str = ""
) -> AsyncIterator[Live]:
    """A real Service with its API; `extra` is YAML appended at the config's top level."""
    endpoints = await asyncio.to_thread(HttpEndpoints)
    try:
        ports = {a: await asyncio.to_thread(endpoints.start, a) for a in (A, B, C, D)}
        config = await asyncio.to_thread(loads, config_text(ports) + extra)
        service = Node(config, dns_host="127.0.0.1", dns_port=0, state_path=tmp_path / "s.db")
        _host, dns_port = await service.start()
        api = ApiServer(service, service, "127.0.0.1", 0, token=token, metrics=service.metrics)
        try:
            host, port = await api.start()
            async with aiohttp.ClientSession() as http:
                yield Live(service, api, f"http://{host}:{port}", dns_port, endpoints, http)
        finally:
            await api.stop()
            await service.stop()
    finally:
        await asyncio.to_thread(endpoints.close)
