"""A Route 53 hosted zone, listed with boto3 (imported only here: the core does not need it).

Plain record sets become records.  Aliases and routing-policy record sets (weighted,
latency, failover, geolocation, multivalue, IP-based, traffic policies) have no plain DNS
form: each is reported and listed, never dropped silently.  Route 53 writes some characters
of names and TXT values as `\\ooo` octal escapes; they become the standard decimal `\\DDD`.
Credentials come from boto3's usual chain (environment, profile, role) and are never shown.
"""

from __future__ import annotations

import re
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from dnsfailover.importing.zone import ImportedZone, ImportFailed, Skipped, SourceSet, build

_OCTAL = re.compile(r"\\([0-7]{3})")
_ROUTING = {
    "Weight": "weighted",
    "Region": "latency",
    "Failover": "failover",
    "GeoLocation": "geolocation",
    "GeoProximityLocation": "geoproximity",
    "MultiValueAnswer": "multivalue answer",
    "CidrRoutingConfig": "IP-based",
}
_MISSING_BOTO3 = (
    "importing from Route 53 needs boto3: pip install boto3 "
    "(the Route 53 provider, dnsfailover-route53, brings it)"
)


def from_route53(
    origin: str,
    *,
    hosted_zone_id: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
) -> ImportedZone:
    """The hosted zone named `origin` (or `hosted_zone_id`), every page of it.

    :raises ImportFailed: when boto3 is missing, the zone is not found or not unique, or
        Route 53 refuses or cannot be reached.
    """
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise ImportFailed(_MISSING_BOTO3) from None
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region or "us-east-1")
        client = session.client("route53", endpoint_url=endpoint_url)
        zone_id = _zone_id(client, origin, hosted_zone_id)
        listed: list[Any] = []
        for page in client.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=zone_id
        ):
            listed += page["ResourceRecordSets"]
    except botocore.exceptions.BotoCoreError as e:
        raise ImportFailed(f"Route 53: {e}") from None
    except botocore.exceptions.ClientError as e:
        error = e.response.get("Error", {})
        raise ImportFailed(
            f"Route 53: {error.get('Code', '?')}: {error.get('Message', e)}"
        ) from None
    sets: list[SourceSet] = []
    skipped: list[Skipped] = []
    for rrset in listed:
        _read(rrset, sets, skipped)
    return build(origin, sets, skipped)


def _zone_id(client: Any, origin: str, given: str | None) -> str:
    if given:
        zone_id = given.strip().removeprefix("/hostedzone/")
        name = _name(client.get_hosted_zone(Id=zone_id)["HostedZone"]["Name"])
        if name != origin:
            raise ImportFailed(f"hosted zone {zone_id} is {name}, not {origin}")
        return zone_id
    found = client.list_hosted_zones_by_name(DNSName=origin, MaxItems="100")["HostedZones"]
    ids = [z["Id"].removeprefix("/hostedzone/") for z in found if _name(z["Name"]) == origin]
    if not ids:
        raise ImportFailed(f"no Route 53 hosted zone is named {origin}")
    if len(ids) > 1:
        raise ImportFailed(
            f"{len(ids)} hosted zones are named {origin} ({', '.join(ids)}): "
            "choose one with --hosted-zone-id"
        )
    return str(ids[0])


def _decimal(text: str) -> str:
    """Route 53's `\\052` (octal) → `\\042` (the decimal escape of the same octet)."""
    return _OCTAL.sub(lambda m: f"\\{int(m.group(1), 8):03d}", text)


def _name(text: str) -> str:
    return dns.name.from_text(_decimal(text)).to_text().lower()


def _read(rrset: dict[str, Any], sets: list[SourceSet], skipped: list[Skipped]) -> None:
    """One listed record set, as a `SourceSet` or a `Skipped` with its reason."""
    rtype, ttl = str(rrset["Type"]).upper(), int(rrset.get("TTL", 0))
    values = tuple(_decimal(r["Value"]) for r in rrset.get("ResourceRecords", ()))
    try:
        name = _name(rrset["Name"])
    except (dns.exception.DNSException, UnicodeError) as e:
        skipped.append(Skipped(str(rrset["Name"]), rtype, ttl, values, f"the name: {e}"))
        return
    alias = rrset.get("AliasTarget")
    if alias is not None:
        target = alias.get("DNSName", "?")
        why = (
            "a Route 53 alias has no standard DNS form: write the target's addresses, a CNAME "
            "(not at the apex) or a failover: record"
        )
        skipped.append(Skipped(name, rtype, ttl, values, why, f"alias to {target}"))
        return
    policy = next((p for key, p in _ROUTING.items() if key in rrset), None)
    if policy is None and "TrafficPolicyInstanceId" in rrset:
        policy = "traffic policy"
    if policy is not None:
        ident = rrset.get("SetIdentifier", "")
        health = rrset.get("HealthCheckId")
        why = (
            f"{policy} routing (set {ident!r}"
            f"{f', health check {health}' if health else ''}) is Route 53's own: "
            "model it as a failover: record, or keep one set by hand"
        )
        skipped.append(Skipped(name, rtype, ttl, values, why, f"{policy} set {ident!r}"))
        return
    try:
        canonical = tuple(
            dns.rdata.from_text(
                dns.rdataclass.IN, rtype, v, origin=dns.name.root, relativize=False
            ).to_text()
            for v in values
        )
    except (dns.exception.DNSException, ValueError) as e:
        skipped.append(Skipped(name, rtype, ttl, values, f"a value does not parse: {e}"))
        return
    sets.append(SourceSet(name, dns.rdatatype.to_text(dns.rdatatype.from_text(rtype)), ttl,
                          canonical))  # fmt: skip
