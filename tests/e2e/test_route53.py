"""End to end: `dnsfailover serve` keeps a Route 53 zone (moto's server) in step with health."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from support import HttpEndpoints, Server, run_cli, wait_for

pytestmark = pytest.mark.e2e

ZONE = "r53.example.test."
INTERVAL, FALL, TIMEOUT = 0.2, 2, 0.15


def hosted_zone(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, reference: str, secret: str = "testing"
) -> tuple[Any, str]:
    """Credentials for moto in the environment (the CLI and `serve` read them there), a
    Route 53 client, and a new hosted zone ZONE: (client, zone id)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.client("route53", endpoint_url=moto_endpoint, region_name="us-east-1")
    zone_id = client.create_hosted_zone(Name=ZONE, CallerReference=reference)["HostedZone"]["Id"]
    return client, str(zone_id).split("/")[-1]


def rrsets(client: object, zone_id: str) -> Iterator[dict[str, Any]]:
    """Every record set of the zone, page after page."""
    pages = client.get_paginator("list_resource_record_sets").paginate(  # type: ignore[attr-defined]
        HostedZoneId=zone_id
    )
    for page in pages:
        yield from page["ResourceRecordSets"]


def answers(client: object, zone_id: str, name: str) -> tuple[str, ...]:
    for rrset in rrsets(client, zone_id):
        if rrset["Name"] == name and rrset["Type"] == "A":
            return tuple(sorted(r["Value"] for r in rrset["ResourceRecords"]))
    return ()


def test_serve_pushes_failover_to_route53_and_plan_shows_the_diff(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Callable[..., Server],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, zone_id = hosted_zone(
        monkeypatch, moto_endpoint, "e2e", secret="testing-secret-never-logged"
    )
    # someone else's record in the same zone must survive untouched
    client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": f"other.{ZONE}",
                        "Type": "A",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": "198.51.100.1"}],
                    },
                }
            ]
        },
    )
    ports = {a: http_endpoints.start(a) for a in ("127.0.0.71", "127.0.0.72")}
    eps = ", ".join(f"{{address: {a}, check_port: {p}}}" for a, p in ports.items())
    cfg = tmp_path / "r53.yaml"
    cfg.write_text(f"""\
checks:
  web: {{type: http, path: /healthz, interval: {int(INTERVAL * 1000)}ms,
        timeout: {int(TIMEOUT * 1000)}ms, fall: {FALL}, rise: 2}}
zones:
  {ZONE}:
    provider: route53
    options:
      endpoint_url: {moto_endpoint}
      poll_interval: 100ms
    failover:
      www:
        policy: active-active
        check: web
        ttl: 30
        endpoints: [{eps}]
""")
    # plan: a dry run that shows the provider diff and changes nothing
    out = run_cli("plan", str(cfg), "--state", str(tmp_path / "plan.db"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"+ www.{ZONE} A 127.0.0.71 127.0.0.72" in out.stdout
    assert answers(client, zone_id, f"www.{ZONE}") == ()

    server = serve(cfg)
    www = f"www.{ZONE}"
    wait_for(lambda: answers(client, zone_id, www) == ("127.0.0.71", "127.0.0.72"), 10)
    http_endpoints.stop("127.0.0.72")
    wait_for(
        lambda: answers(client, zone_id, www) == ("127.0.0.71",),
        5 * (INTERVAL * FALL + TIMEOUT) + 2,
    )
    assert answers(client, zone_id, f"other.{ZONE}") == ("198.51.100.1",)

    # in sync now: the plan is empty
    out = run_cli("plan", str(cfg), "--state", str(tmp_path / "plan.db"))
    assert "in sync: no changes" in out.stdout, out.stdout
    assert server.stop() == 0
    log = server.log.read_text()
    assert "apply: r53.example.test.: 0 create, 1 update" in log
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in log


def test_apply_pushes_one_plan_without_a_server(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, zone_id = hosted_zone(monkeypatch, moto_endpoint, "apply")
    port = http_endpoints.start("127.0.0.73")
    cfg = tmp_path / "r53.yaml"
    cfg.write_text(f"""\
checks:
  web: {{type: http, path: /healthz, interval: 1s, timeout: 500ms}}
zones:
  {ZONE}:
    provider: route53
    options: {{endpoint_url: {moto_endpoint}}}
    failover:
      www:
        policy: active-active
        check: web
        endpoints: [{{address: 127.0.0.73, check_port: {port}}}, 127.0.0.74]
""")
    out = run_cli("apply", str(cfg), "--state", str(tmp_path / "apply.db"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "applied: 1 change(s)" in out.stdout
    # 127.0.0.74 has nothing listening: only the healthy endpoint is published
    assert answers(client, zone_id, f"www.{ZONE}") == ("127.0.0.73",)


def _weighted(name: str, ident: str, value: str) -> Any:
    return {
        "Name": name,
        "Type": "A",
        "TTL": 60,
        "SetIdentifier": ident,
        "Weight": 1,
        "ResourceRecords": [{"Value": value}],
    }


def test_a_weighted_set_at_one_name_holds_only_it_and_sync_applies_it_once_gone(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Callable[..., Server],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15, items 8 and 9: someone put a weighted record set at one managed name.  The
    other names are published all the same; the held one is reported (log, event, metric,
    status); once the set is removed, `dnsfailover sync ZONE` publishes it at once."""
    token = "e2e-sync-token-0123456789abcdef"
    monkeypatch.setenv("DNSFAILOVER_API_TOKEN", token)
    client, zone_id = hosted_zone(monkeypatch, moto_endpoint, "held")
    bad = f"n0.{ZONE}"
    weighted = [_weighted(bad, "a", "203.0.113.1"), _weighted(bad, "b", "203.0.113.2")]
    client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": w} for w in weighted]},
    )
    port = http_endpoints.start("127.0.0.75")
    names = "".join(
        f"      n{i}: {{policy: active-active, check: web, ttl: 30, endpoints: "
        f"[{{address: 127.0.0.75, check_port: {port}}}]}}\n"
        for i in range(4)
    )
    cfg = tmp_path / "held.yaml"
    cfg.write_text(f"""\
checks:
  web: {{type: http, path: /healthz, interval: 200ms, timeout: 150ms}}
zones:
  {ZONE}:
    provider: route53
    options: {{endpoint_url: {moto_endpoint}, poll_interval: 100ms}}
    failover:
{names}""")
    server = serve(cfg)
    for i in (1, 2, 3):
        wait_for(lambda i=i: answers(client, zone_id, f"n{i}.{ZONE}") == ("127.0.0.75",), 10)  # type: ignore[misc]
    assert server.api is not None
    out = run_cli("sync", ZONE, "--api", server.api)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{ZONE}: NOT in sync" in out.stdout
    assert f"1 record set(s) held back:\n    {bad} A: {bad} A has routing-policy" in out.stdout
    assert "adopt: true" in out.stdout
    assert answers(client, zone_id, bad) == ("203.0.113.1",)  # the first weighted set, intact
    status = run_cli("status", "--api", server.api)
    assert "1 held back (dnsfailover sync ZONE)" in status.stdout, status.stdout
    metrics = urllib.request.urlopen(f"{server.api}/metrics", timeout=5).read().decode()
    assert f'dnsfailover_provider_held_record_sets{{zone="{ZONE}"}} 1.0' in metrics
    events = run_cli("events", "--api", server.api, "--json")
    assert '"provider-refused"' in events.stdout

    client.change_resource_record_sets(  # removed by hand
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": w} for w in weighted]},
    )
    out = run_cli("sync", ZONE, "--api", server.api)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{ZONE}: in sync" in out.stdout
    assert answers(client, zone_id, bad) == ("127.0.0.75",)
    wrong = run_cli("sync", "nosuch.test.", "--api", server.api)
    assert wrong.returncode == 2
    assert "no external provider's zone" in wrong.stderr
    assert server.stop() == 0
    log = server.log.read_text()
    assert len([ln for ln in log.splitlines() if "held back" in ln and "ERROR" in ln]) == 1
    assert token not in log


def test_apply_holds_the_conflicting_name_and_apply_force_replaces_it(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, zone_id = hosted_zone(monkeypatch, moto_endpoint, "force")
    bad = f"n0.{ZONE}"
    client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {"Action": "CREATE", "ResourceRecordSet": _weighted(bad, "a", "203.0.113.1")}
            ]
        },
    )
    port = http_endpoints.start("127.0.0.76")
    names = "".join(
        f"      n{i}: {{policy: active-active, check: web, endpoints: "
        f"[{{address: 127.0.0.76, check_port: {port}}}]}}\n"
        for i in range(3)
    )
    cfg = tmp_path / "force.yaml"
    cfg.write_text(f"""\
checks:
  web: {{type: http, path: /healthz, interval: 1s, timeout: 500ms}}
zones:
  {ZONE}:
    provider: route53
    options: {{endpoint_url: {moto_endpoint}}}
    failover:
{names}""")
    out = run_cli("apply", str(cfg), "--state", str(tmp_path / "a.db"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"UNSAFE: {bad} A has routing-policy or alias record sets" in out.stdout
    assert "applied: 2 change(s)" in out.stdout
    assert "1 record set(s) held back, not applied" in out.stdout
    assert answers(client, zone_id, f"n1.{ZONE}") == ("127.0.0.76",)
    assert answers(client, zone_id, bad) == ("203.0.113.1",)

    out = run_cli("apply", str(cfg), "--state", str(tmp_path / "a.db"), "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "applied: 1 change(s)" in out.stdout
    listed = [r for r in client.list_resource_record_sets(HostedZoneId=zone_id)[
        "ResourceRecordSets"] if r["Name"] == bad]  # fmt: skip
    assert [(r["Type"], r.get("SetIdentifier")) for r in listed] == [("A", None)]
    assert answers(client, zone_id, bad) == ("127.0.0.76",)


def geolocation(client: object, zone_id: str, name: str) -> dict[str, tuple[str, ...]]:
    """The geolocation record sets at `name`: place (country:DE, continent:EU, *) → values."""
    found: dict[str, tuple[str, ...]] = {}
    for rrset in rrsets(client, zone_id):
        geo = rrset.get("GeoLocation")
        if rrset["Name"] != name or rrset["Type"] != "A" or geo is None:
            continue
        if "ContinentCode" in geo:
            place = f"continent:{geo['ContinentCode']}"
        elif geo.get("CountryCode") == "*":
            place = "*"
        else:
            place = f"country:{geo['CountryCode']}"
        found[place] = tuple(sorted(r["Value"] for r in rrset["ResourceRecords"]))
    return found


def test_a_steered_name_is_published_as_geolocation_sets_that_follow_failover(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Callable[..., Server],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from geo_mmdb import FRANKFURT, city, write_mmdb

    client, zone_id = hosted_zone(monkeypatch, moto_endpoint, "geo")
    write_mmdb(tmp_path / "geo.mmdb", {"192.0.2.0/24": city("DE", "EU", FRANKFURT)})
    eu, us = "127.0.0.76", "127.0.0.77"
    ports = {a: http_endpoints.start(a) for a in (eu, us)}
    cfg = tmp_path / "geo.yaml"
    body = f"""\
checks:
  web: {{type: http, path: /healthz, interval: {int(INTERVAL * 1000)}ms,
        timeout: {int(TIMEOUT * 1000)}ms, fall: {FALL}, rise: 2}}
geo: {{database: geo.mmdb}}
zones:
  {ZONE}:
    provider: route53
    options: {{endpoint_url: {moto_endpoint}, poll_interval: 100ms}}
    failover:
      www:
        policy: active-passive
        check: web
        hold_down: 1s
        tiers:
          - {{name: eu, endpoints: [{{address: {eu}, check_port: {ports[eu]}}}]}}
          - {{name: us, endpoints: [{{address: {us}, check_port: {ports[us]}}}]}}
        steering:
          by: continent
          map: {{EU: [eu, us], NA: [us, eu]}}
          default: [us, eu]
"""
    cfg.write_text(body)
    server = serve(cfg)
    www = f"www.{ZONE}"
    want = {"*": (us,), "continent:EU": (eu,), "continent:NA": (us,)}
    wait_for(lambda: geolocation(client, zone_id, www) == want, 10)
    sets = client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    plain = [r for r in sets if r["Name"] == www and r["Type"] == "A" and "GeoLocation" not in r]
    assert plain == []  # no simple-routing set beside them
    http_endpoints.stop(eu)
    wait_for(
        lambda: geolocation(client, zone_id, www)["continent:EU"] == (us,),
        5 * (INTERVAL * FALL + TIMEOUT) + 2,
    )
    assert geolocation(client, zone_id, www)["*"] == (us,)
    out = run_cli("plan", str(cfg), "--state", str(tmp_path / "plan.db"))
    assert "in sync: no changes" in out.stdout, out.stdout
    assert server.stop() == 0

    # proximity has no faithful Route 53 record here: refused at load, file:line, exit 2
    cfg.write_text(
        body.replace("by: continent", "by: proximity").replace(
            "map: {EU: [eu, us], NA: [us, eu]}", "nets: {}"
        )
    )
    out = run_cli("validate", str(cfg))
    assert out.returncode == 2
    assert f"{cfg}:" in out.stderr
    assert "steering.by: provider 'route53' can steer by continent, country" in out.stderr
