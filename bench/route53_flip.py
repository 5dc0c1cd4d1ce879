"""One failover flip in a big Route 53 hosted zone: what the provider reads and sends.

    .venv/bin/python bench/route53_flip.py [--foreign 7000] [--flips 10]

Against a real moto server on 127.0.0.1: a hosted zone of `--foreign` record sets someone
else keeps, plus 20 names dnsfailover manages.  The zone's sync worker (`ZoneSync`, as
`serve` runs it) converges once (a full read of the zone), then each flip moves one managed
name to another address: the ListResourceRecordSets and ChangeResourceRecordSets calls it
made and the time from submitting the new state to the change being applied (INSYNC).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import time

import boto3
from dnsfailover_route53.provider import Route53Provider
from moto.server import ThreadedMotoServer

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import create_provider
from dnsfailover.provider.plan import Safety
from dnsfailover.provider.sync import ZoneSync

ZONE = "example.test."


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}"


def managed(i: int, address: str) -> RecordSet:
    return RecordSet(f"svc{i}.{ZONE}", "A", 60, (address,))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--foreign", type=int, default=7000)
    ap.add_argument("--flips", type=int, default=10)
    args = ap.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    try:
        admin = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
        zone = admin.create_hosted_zone(Name=ZONE, CallerReference="bench")
        zone_id = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
        for start in range(0, args.foreign, 400):
            batch = [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": f"other{i}.{ZONE}",
                        "Type": "A",
                        "TTL": 300,
                        "ResourceRecords": [
                            {"Value": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"}
                        ],
                    },
                }
                for i in range(start, min(start + 400, args.foreign))
            ]
            admin.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={"Changes": batch},  # type: ignore[typeddict-item]
            )
        options = {"endpoint_url": endpoint, "poll_interval": 0.05, "poll_max": 0.2}
        p = create_provider("route53", ZONE, options)
        assert isinstance(p, Route53Provider)
        sync = ZoneSync(p, Safety())
        desired = [managed(i, "192.0.2.1") for i in range(20)]
        started = time.perf_counter()
        await sync.converge(tuple(desired))
        first = time.perf_counter() - started
        print(f"machine: {machine()}; zone: {args.foreign + 2 + 40} record sets")
        print(
            f"first converge (reads the whole zone): {first:.2f} s, "
            f"{p.calls['ListResourceRecordSets']} ListResourceRecordSets calls"
        )
        times: list[float] = []
        lists: list[int] = []
        sent: list[int] = []
        for flip in range(args.flips):
            before = dict(p.calls)
            now = desired[flip % 20].values
            address = "192.0.2.2" if now == ("192.0.2.1",) else "192.0.2.1"
            desired[flip % 20] = managed(flip % 20, address)
            started = time.perf_counter()
            plan = await sync.converge(tuple(desired))
            times.append(time.perf_counter() - started)
            assert len(plan.changes) == 1, plan.changes
            lists.append(
                p.calls["ListResourceRecordSets"] - before.get("ListResourceRecordSets", 0)
            )
            sent.append(
                p.calls["ChangeResourceRecordSets"] - before.get("ChangeResourceRecordSets", 0)
            )
        print(
            f"one flip -> applied (INSYNC): median {statistics.median(times) * 1000:.0f} ms, "
            f"max {max(times) * 1000:.0f} ms; per flip {statistics.median(lists):.0f} "
            f"ListResourceRecordSets and {statistics.median(sent):.0f} "
            f"ChangeResourceRecordSets calls (full reads: {sync.reads})"
        )
        await p.close()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
