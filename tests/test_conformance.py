"""Provider conformance: every installed provider, same config and health → same answers.

Each provider is driven exactly as `serve` drives it (populate → diff → safety → apply), and
what it publishes is read back through an independent, real path: DNS queries to the
embedded server, the Route 53 API (moto's server) for route53,
DNS queries to a real BIND 9 primary for rfc2136.  A provider installed without
a harness here fails the suite: add one.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import decide
from dnsfailover.engine.values import EngineState
from dnsfailover.model import RecordSet, State, ZoneContent
from dnsfailover.provider.contract import BaseProvider, create_provider, provider_names
from dnsfailover.provider.plan import diff
from dnsfailover.provider.sync import ZoneSync
from dnsfailover.runtime.wiring import provider_records, safety
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.embedded import EmbeddedProvider, EmbeddedZones

ZONE = "conformance.test."
U, D = State.UP, State.DOWN


def config(provider: str, options: dict[str, Any]) -> Config:
    zone: dict[str, Any] = {"provider": provider, "options": options}
    if provider == "embedded":
        zone |= {
            "soa": {"mname": f"ns1.{ZONE}", "rname": f"hostmaster.{ZONE}"},
            "nameservers": [f"ns1.{ZONE}"],
        }
    zone["records"] = {
        "ns1": {"type": "A", "values": ["127.0.0.1"]},
        "txt": {"type": "TXT", "values": ['"hello world"']},
    }
    zone["failover"] = {
        "www": {
            "policy": "active-active",
            "check": "web",
            "endpoints": ["192.0.2.11", "192.0.2.12", "192.0.2.13"],
        },
        "strict": {
            "policy": "active-active",
            "check": "web",
            "all_down": "serve_none",
            "endpoints": ["192.0.2.21"],
        },
        "api": {
            "policy": "active-passive",
            "check": "web",
            "hold_down": "10s",
            "tiers": [
                {"name": "east", "endpoints": ["192.0.2.31", "192.0.2.32"]},
                {"name": "west", "endpoints": ["192.0.2.41"]},
            ],
        },
        "v6": {
            "policy": "active-active",
            "check": "web",
            "type": "AAAA",
            "endpoints": ["2001:db8::1", "2001:db8::2"],
        },
    }
    return Config.model_validate(
        {"checks": {"web": {"type": "tcp", "port": 80}}, "zones": {ZONE: zone}}
    )


def health(**down: bool) -> dict[str, State]:
    """Every endpoint up except those named (`a192_0_2_11=True`)."""
    addrs = [
        "192.0.2.11",
        "192.0.2.12",
        "192.0.2.13",
        "192.0.2.21",
        "192.0.2.31",
        "192.0.2.32",
        "192.0.2.41",
        "2001:db8::1",
        "2001:db8::2",
    ]
    out = {}
    for a in addrs:
        port = f"[{a}]:80" if ":" in a else f"{a}:80"
        out[f"web@{port}"] = D if down.get("a" + a.replace(".", "_").replace(":", "_")) else U
    return out


SEQUENCE = [
    (0.0, health()),
    (1.0, health(a192_0_2_12=True)),
    (2.0, health(a192_0_2_12=True, a192_0_2_21=True, a192_0_2_31=True, a192_0_2_32=True)),
    (3.0, health(a192_0_2_11=True, a192_0_2_12=True, a192_0_2_13=True, a2001_db8__1=True)),
    (4.0, health(a192_0_2_31=True)),  # east back (one endpoint), hold_down not over: west
    (20.0, health(a192_0_2_31=True)),  # hold_down over: east again
]


class Harness(abc.ABC):
    def __init__(self) -> None:
        self.options: dict[str, Any] = {}

    @abc.abstractmethod
    async def provider(self, cfg: Config) -> BaseProvider: ...

    @abc.abstractmethod
    async def observe(self, name: str, rtype: str) -> tuple[str, ...]: ...

    def desired(self, content: ZoneContent) -> tuple[RecordSet, ...]:
        """What the service hands this kind of provider."""
        return provider_records(content)

    async def publish(self, cfg: Config, provider: BaseProvider, content: ZoneContent) -> None:
        sync = ZoneSync(provider, safety(cfg, ZONE))
        await sync.converge(self.desired(content))

    async def close(self) -> None:
        return None


class EmbeddedHarness(Harness):
    async def provider(self, cfg: Config) -> BaseProvider:
        self.zones = EmbeddedZones()
        self.server = DnsServer(self.zones.snapshot, "127.0.0.1", 0)
        _host, self.port = await self.server.start()
        self.zones.attach(self.server)
        return EmbeddedProvider(ZONE, EmbeddedProvider.Options(), zones=self.zones)

    def desired(self, content: ZoneContent) -> tuple[RecordSet, ...]:
        return content.records

    async def publish(self, cfg: Config, provider: BaseProvider, content: ZoneContent) -> None:
        plan = diff(
            ZONE, await provider.populate(()), content.records, soa=content.soa, keep_empty=True
        )
        await provider.apply(plan)

    async def observe(self, name: str, rtype: str) -> tuple[str, ...]:
        q = dns.message.make_query(name, rtype)
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=self.port, timeout=2)
        assert r.rcode() == dns.rcode.NOERROR, f"{name} {rtype}: {dns.rcode.to_text(r.rcode())}"
        return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))

    async def close(self) -> None:
        await self.server.stop()


class Route53Harness(Harness):
    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.client = boto3.client(
            "route53",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        zone_id = self.client.create_hosted_zone(Name=ZONE, CallerReference="conformance")[
            "HostedZone"
        ]["Id"]
        self.zone_id = zone_id.split("/")[-1]
        self.options = {
            "endpoint_url": endpoint,
            "hosted_zone_id": self.zone_id,
            "poll_interval": 0.05,
            "backoff_base": 0.01,
        }

    async def provider(self, cfg: Config) -> BaseProvider:
        return create_provider("route53", ZONE, self.options)

    async def observe(self, name: str, rtype: str) -> tuple[str, ...]:
        pages = self.client.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=self.zone_id
        )
        for page in pages:
            for rrset in page["ResourceRecordSets"]:
                if rrset["Name"].lower() == name and rrset["Type"] == rtype:
                    return tuple(sorted(r["Value"] for r in rrset["ResourceRecords"]))
        return ()

    async def close(self) -> None:
        self.client.close()


class Rfc2136Harness(Harness):
    """A real BIND 9 primary for the zone; answers are read back by querying it."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        from dnsfailover_rfc2136.testing import start_bind_primary

        self.bind = start_bind_primary(directory, ZONE)
        self.options = {
            "server": "127.0.0.1",
            "port": self.bind.port,
            "key_name": self.bind.key.name,
            "secret_file": str(self.bind.key_file),
            "backoff_base": 0.01,
        }

    async def provider(self, cfg: Config) -> BaseProvider:
        return create_provider("rfc2136", ZONE, self.options)

    async def observe(self, name: str, rtype: str) -> tuple[str, ...]:
        q = dns.message.make_query(name, rtype)
        r = await dns.asyncquery.tcp(q, "127.0.0.1", port=self.bind.port, timeout=2)
        assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), dns.rcode.to_text(r.rcode())
        return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))

    async def close(self) -> None:
        self.bind.stop()


@pytest.fixture
async def harness(
    request: pytest.FixtureRequest,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> AsyncIterator[Harness]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    name = request.param
    h: Harness
    if name == "embedded":
        h = EmbeddedHarness()
    elif name == "route53":
        h = Route53Harness(moto_endpoint)
    elif name == "rfc2136":
        h = Rfc2136Harness(tmp_path / "bind")
    else:
        pytest.fail(f"provider {name!r} is installed but has no conformance harness")
    yield h
    await h.close()


@pytest.mark.parametrize("harness", provider_names(), indirect=True)
async def test_same_health_sequence_gives_the_same_answers(harness: Harness) -> None:
    cfg = config(type(harness).__name__.removesuffix("Harness").lower(), harness.options)
    provider = await harness.provider(cfg)
    await provider.start()
    state = EngineState()
    try:
        for now, states in SEQUENCE:
            decision = decide(cfg, states, state, now)
            state = decision.state
            content = decision.zones[0]
            await harness.publish(cfg, provider, content)
            for name, nd in decision.names.items():
                rtype = "AAAA" if name.startswith("v6.") else "A"
                got = await harness.observe(name, rtype)
                assert got == tuple(sorted(nd.answer)), f"t={now} {name}"
            assert await harness.observe(f"txt.{ZONE}", "TXT") == ('"hello world"',)
            # converged: a second plan is empty
            desired = harness.desired(content)
            populated = await provider.populate([(r.name, r.rtype) for r in desired])
            again = diff(ZONE, populated, desired, keep_empty=provider.SERVES_APEX)
            assert not again, [c.describe() for c in again.changes]
    finally:
        await provider.close()
