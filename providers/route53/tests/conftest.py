"""Fixtures: a real moto server (Route 53 over HTTP) and botocore Stubber-wrapped clients."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from dnsfailover_route53.provider import Route53Provider
from moto.server import ThreadedMotoServer
from route53_support import FAST, SECRET, ZONE, Moto, Stubbed


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials from the environment, and no shared config files of the machine's."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGTESTING00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
async def moto(moto_endpoint: str) -> AsyncIterator[Moto]:
    reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10) as resp:  # noqa: ASYNC210 (set-up, not under test)
        assert resp.status == 200
    admin = boto3.client("route53", endpoint_url=moto_endpoint, region_name="us-east-1")
    m = Moto(moto_endpoint, admin)
    yield m
    for p in m.providers:
        await p.close()
    admin.close()


@pytest.fixture
async def stubbed() -> AsyncIterator[Stubbed]:
    client = boto3.client("route53", region_name="us-east-1")
    made: list[Route53Provider] = []
    with Stubber(client) as stubber:

        async def make(**options: Any) -> Route53Provider:
            stubber.add_response(
                "get_hosted_zone",
                {
                    "HostedZone": {"Id": "/hostedzone/Z1", "Name": ZONE, "CallerReference": "r"},
                    "DelegationSet": {"NameServers": ["ns-1.awsdns-01.org"]},
                },
                {"Id": "Z1"},
            )
            opts = Route53Provider.Options.model_validate(
                {"hosted_zone_id": "Z1", **FAST, **options}
            )
            p = Route53Provider(ZONE, opts, client=client)
            made.append(p)
            await p.start()
            return p

        yield Stubbed(client, stubber, make)
    for p in made:
        await p.close()
    client.close()
