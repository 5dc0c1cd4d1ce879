"""The zone's `options:` mapping for `provider: route53`, validated before the provider is built."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from dnsfailover.fields import Duration
from dnsfailover.provider.contract import ProviderOptions

#: Route 53's own limits for one ChangeResourceRecordSets request
MAX_BATCH_RECORDS = 1000
MAX_BATCH_CHARS = 32000


def _zone_id(value: str) -> str:
    """`/hostedzone/Z123` and `Z123` both mean `Z123`."""
    value = value.strip().removeprefix("/hostedzone/")
    if not value or "/" in value:
        raise ValueError(f"{value!r} is not a hosted zone id such as Z0123456789ABCDEFGHIJ")
    return value


HostedZoneId = Annotated[str, AfterValidator(_zone_id)]
Seconds = Annotated[Duration, Field(gt=0)]


class Route53Options(ProviderOptions):
    """Options of a Route 53 zone.  Credentials are never options: boto3's standard chain
    (environment, shared config `profile`, instance or task role) supplies them."""

    #: the hosted zone; without it, the zone is found by name (it must be unique)
    hosted_zone_id: HostedZoneId | None = None
    region: str = "us-east-1"
    #: a named profile of the shared AWS config/credentials files
    profile: str | None = None
    #: another endpoint (moto, a VPC endpoint); None means Route 53's own
    endpoint_url: str | None = None
    #: written into every ownership marker; two dnsfailover deployments sharing a hosted zone
    #: need different owner ids
    owner_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")] = "dnsfailover"
    #: ResourceRecord elements per request (an UPSERT counts twice)
    max_batch_records: Annotated[int, Field(ge=4, le=MAX_BATCH_RECORDS)] = MAX_BATCH_RECORDS
    #: characters of values per request (an UPSERT counts twice)
    max_batch_chars: Annotated[int, Field(ge=256, le=MAX_BATCH_CHARS)] = MAX_BATCH_CHARS
    #: one apply's writes, retries included, must be done within this
    deadline: Seconds = 120.0
    #: how long to wait for Route 53 to report the changes INSYNC
    confirm_timeout: Seconds = 300.0
    #: first GetChange poll interval; it doubles up to `poll_max`
    poll_interval: Seconds = 1.0
    poll_max: Seconds = 10.0
    #: retry backoff: a random sleep in [0, min(backoff_max, backoff_base * 2**attempt)]
    backoff_base: Seconds = 0.5
    backoff_max: Seconds = 20.0
    connect_timeout: Seconds = 10.0
    read_timeout: Seconds = 30.0
    #: ListResourceRecordSets page size (Route 53 returns at most 300)
    page_size: Annotated[int, Field(ge=1, le=300)] = 300
