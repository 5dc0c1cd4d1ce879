"""A regional outage flips 1,000 managed A records at once: what the Route 53 provider sends.

    .venv/bin/python bench/route53_outage.py [--records 1000] [--rounds 10]

Needs `pip install -e 'providers/route53[test]'`.  Two parts, each through the real provider
(populate → the core's diff → apply → confirm), timed on the client side:

(a) against a real moto server on 127.0.0.1: 1,000 owned A records each move from one address
    to another.  Counts ChangeResourceRecordSets and GetChange calls and the apply's wall time.
    Target: at most 3 ChangeResourceRecordSets calls.
(b) against a boto3 client under botocore's Stubber whose ChangeResourceRecordSets is throttled
    on every other call, for --rounds flips back and forth with the default retry options.
    Counts calls, retries and failed applies.  Target: 0 failed applies.

Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import boto3
from botocore.stub import Stubber
from dnsfailover_route53.batching import Translator, split
from dnsfailover_route53.options import Route53Options
from dnsfailover_route53.provider import Route53Provider
from moto.server import ThreadedMotoServer

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import ProviderError, create_provider
from dnsfailover.provider.ownership import marker_name, marker_value
from dnsfailover.provider.plan import Plan, diff

ZONE = "example.test."
TTL = 60


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"nproc={os.cpu_count()} cpu={model!r} python={platform.python_version()} "
        f"boto3={version('boto3')} moto={version('moto')}"
    )


def records(n: int, region: int) -> list[RecordSet]:
    """`n` A record sets, each answering one address in `region`'s 10.<region>.0.0/16."""
    return [
        RecordSet(f"app{i:04}.{ZONE}", "A", TTL, (f"10.{region}.{i // 250}.{i % 250 + 1}",))
        for i in range(n)
    ]


async def plan_for(p: Route53Provider, desired: list[RecordSet]) -> Plan:
    populated = await p.populate([(r.name, r.rtype) for r in desired])
    return diff(ZONE, populated, desired)


async def against_moto(n: int) -> tuple[int, str]:
    # dummy credentials for the local server, through boto3's standard chain as in production
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    admin = boto3.client("route53", endpoint_url=url, region_name="us-east-1")
    admin.create_hosted_zone(Name=ZONE, CallerReference="bench")
    p = create_provider("route53", ZONE, {"endpoint_url": url})
    assert isinstance(p, Route53Provider)
    try:
        await p.start()
        created = await p.apply(await plan_for(p, records(n, 1)))
        started = time.perf_counter()
        plan = await plan_for(p, records(n, 2))
        populate_s = time.perf_counter() - started
        assert plan.counts()["update"] == n, plan.summary()
        before = Counter(p.calls)
        started = time.perf_counter()
        result = await p.apply(plan)
        apply_s = time.perf_counter() - started
        calls = p.calls - before
        leftover = await plan_for(p, records(n, 2))
    finally:
        await p.close()
        admin.close()
        server.stop()
    writes = calls["ChangeResourceRecordSets"]
    line = (
        f"(a) moto server, {n:,} A records flipped: ChangeResourceRecordSets={writes} "
        f"GetChange={calls['GetChange']} apply={apply_s:.2f}s "
        f"(populate+diff before it {populate_s:.2f}s; creating them took {created.calls} calls; "
        f"changes left after: {len(leftover.changes)})"
    )
    assert result.confirmed
    return writes, line


def listing_pages(current: list[RecordSet], owner: str) -> list[dict[str, Any]]:
    """ListResourceRecordSets answers, 300 a page, for `current` and their markers."""
    rrsets: list[dict[str, Any]] = []
    for rs in current:
        rrsets.append(
            {
                "Name": rs.name,
                "Type": "A",
                "TTL": rs.ttl,
                "ResourceRecords": [{"Value": rs.values[0]}],
            }
        )
        rrsets.append(
            {
                "Name": marker_name((rs.name, rs.rtype)),
                "Type": "TXT",
                "TTL": 300,
                "ResourceRecords": [{"Value": marker_value(owner)}],
            }
        )
    rrsets.sort(key=lambda r: (list(reversed(r["Name"].split("."))), r["Type"]))
    pages = []
    for start in range(0, len(rrsets), 300):
        page: dict[str, Any] = {
            "ResourceRecordSets": rrsets[start : start + 300],
            "MaxItems": "300",
        }
        rest = rrsets[start + 300 :]
        page["IsTruncated"] = bool(rest)
        if rest:
            page["NextRecordName"], page["NextRecordType"] = rest[0]["Name"], rest[0]["Type"]
        pages.append(page)
    return pages


async def throttled(n: int, rounds: int) -> tuple[int, str]:
    client = boto3.client(
        "route53",
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    now = datetime.now(UTC)
    failed = 0
    times: list[float] = []
    with Stubber(client) as stubber:
        stubber.add_response(
            "get_hosted_zone",
            {"HostedZone": {"Id": "/hostedzone/Z1", "Name": ZONE, "CallerReference": "r"}},
        )
        options = Route53Options(hosted_zone_id="Z1")  # default retry and poll options
        p = Route53Provider(ZONE, options, client=client)
        await p.start()
        current = records(n, 1)
        for r in range(rounds):
            for page in listing_pages(current, options.owner_id):
                stubber.add_response("list_resource_record_sets", page)
            desired = records(n, 2 if r % 2 == 0 else 1)
            plan = await plan_for(p, desired)
            groups = Translator(None, options.owner_id).groups(plan)
            batches = split(groups, options.max_batch_records, options.max_batch_chars)
            for b in range(len(batches)):
                stubber.add_client_error(
                    "change_resource_record_sets", "Throttling", "Rate exceeded", 400
                )
                info = {"Id": f"/change/C{r}x{b}", "Status": "PENDING", "SubmittedAt": now}
                stubber.add_response("change_resource_record_sets", {"ChangeInfo": info})
            for b in range(len(batches)):
                info = {"Id": f"/change/C{r}x{b}", "Status": "INSYNC", "SubmittedAt": now}
                stubber.add_response("get_change", {"ChangeInfo": info})
            started = time.perf_counter()
            try:
                await p.apply(plan)
                current = desired
            except ProviderError as e:
                failed += 1
                print(f"    round {r}: {e}", file=sys.stderr)
            times.append(time.perf_counter() - started)
        await p.close()
    client.close()
    writes = p.calls["ChangeResourceRecordSets"]
    line = (
        f"(b) Stubber, every other ChangeResourceRecordSets throttled, {rounds} applies of "
        f"{n:,} flips: failed={failed} ChangeResourceRecordSets={writes} "
        f"(of which throttled {writes // 2}) GetChange={p.calls['GetChange']} "
        f"apply mean={statistics.mean(times):.2f}s max={max(times):.2f}s"
    )
    return failed, line


async def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the provider's retry warnings are expected here
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    print(f"machine: {machine()}")
    writes, line = await against_moto(args.records)
    print(line)
    failed, line = await throttled(args.records, args.rounds)
    print(line)
    ok_a, ok_b = writes <= 3, failed == 0
    print(f"targets: <=3 ChangeResourceRecordSets calls: {'met' if ok_a else 'MISSED'}; ", end="")
    print(f"0 failed applies under throttling: {'met' if ok_b else 'MISSED'}")
    return 0 if ok_a and ok_b else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
