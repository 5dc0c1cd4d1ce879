"""Helpers for the Route 53 tests: values, a moto scene-setter, a Stubber script."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ReadTimeoutError
from botocore.stub import Stubber
from dnsfailover_route53.provider import Route53Provider

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import create_provider

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client

ZONE = "example.test."
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
MARKER = '"heritage=dnsfailover,owner=dnsfailover"'
NOW = datetime(2024, 1, 1, tzinfo=UTC)

#: options that keep retries and polling fast in tests
FAST: dict[str, Any] = {
    "poll_interval": 0.001,
    "poll_max": 0.005,
    "backoff_base": 0.001,
    "backoff_max": 0.005,
    "deadline": 5,
    "confirm_timeout": 5,
}


@dataclass
class Moto:
    """The moto server, reset for this test, and an admin client to set the scene with."""

    endpoint: str
    admin: Route53Client
    providers: list[Route53Provider] = field(default_factory=list)

    def create_zone(self, name: str = ZONE, *, private: bool = False) -> str:
        extra: dict[str, Any] = {}
        if private:
            extra = {
                "HostedZoneConfig": {"PrivateZone": True, "Comment": "private"},
                "VPC": {"VPCRegion": "us-east-1", "VPCId": "vpc-12345678"},
            }
        ref = f"{name}-{len(self.admin.list_hosted_zones()['HostedZones'])}"
        zone = self.admin.create_hosted_zone(Name=name, CallerReference=ref, **extra)
        return zone["HostedZone"]["Id"].rsplit("/", 1)[-1]

    def upsert(self, zone_id: str, *rrsets: dict[str, Any]) -> None:
        changes: Any = [{"Action": "UPSERT", "ResourceRecordSet": r} for r in rrsets]
        self.admin.change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Changes": changes}
        )

    def record_sets(self, zone_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        pages = self.admin.get_paginator("list_resource_record_sets")
        for page in pages.paginate(HostedZoneId=zone_id):
            out += [dict(r) for r in page["ResourceRecordSets"]]
        return out

    async def provider(self, zone: str = ZONE, **options: Any) -> Route53Provider:
        """A started provider built the way the core builds it (entry point + Options)."""
        p = create_provider("route53", zone, {"endpoint_url": self.endpoint, **FAST, **options})
        assert isinstance(p, Route53Provider)
        self.providers.append(p)
        await p.start()
        return p


def rs(name: str, rtype: str, *values: str, ttl: int = 60) -> RecordSet:
    """A RecordSet in the zone: `rs("www", "A", "192.0.2.1")`."""
    fqdn = ZONE if name == "@" else f"{name}.{ZONE}"
    return RecordSet(fqdn, rtype, ttl, tuple(values))


def simple(name: str, rtype: str, *values: str, ttl: int = 60) -> dict[str, Any]:
    """A plain ResourceRecordSet as Route 53 lists it."""
    return {
        "Name": name,
        "Type": rtype,
        "TTL": ttl,
        "ResourceRecords": [{"Value": v} for v in values],
    }


@dataclass
class Stubbed:
    """A real boto3 Route 53 client under botocore's Stubber, and a provider that uses it."""

    client: Route53Client
    stubber: Stubber
    make: Callable[..., Awaitable[Route53Provider]]

    def listing(self, *rrsets: dict[str, Any], zone_id: str = "Z1") -> None:
        """One ListResourceRecordSets page holding `rrsets`."""
        self.stubber.add_response(
            "list_resource_record_sets",
            {"ResourceRecordSets": list(rrsets), "IsTruncated": False, "MaxItems": "300"},
            {"HostedZoneId": zone_id, "MaxItems": "300"},
        )

    def change_ok(self, change_id: str = "C1", expected: dict[str, Any] | None = None) -> None:
        self.stubber.add_response(
            "change_resource_record_sets",
            {"ChangeInfo": {"Id": f"/change/{change_id}", "Status": "PENDING", "SubmittedAt": NOW}},
            expected,
        )

    def change_error(self, code: str, status: int, message: str = "") -> None:
        self.stubber.add_client_error(
            "change_resource_record_sets", code, message or code, http_status_code=status
        )

    def read_timeout_once(self, operation: str = "ChangeResourceRecordSets") -> None:
        """The next `operation` call times out reading the answer (the Stubber never sees it)."""
        pending = [ReadTimeoutError(endpoint_url="https://route53.amazonaws.com/")]

        def time_out(**_: Any) -> None:
            if pending:
                raise pending.pop()

        self.client.meta.events.register(f"before-parameter-build.route-53.{operation}", time_out)

    def status(self, status: str, change_id: str = "C1") -> None:
        self.stubber.add_response(
            "get_change",
            {"ChangeInfo": {"Id": f"/change/{change_id}", "Status": status, "SubmittedAt": NOW}},
            {"Id": change_id},
        )
