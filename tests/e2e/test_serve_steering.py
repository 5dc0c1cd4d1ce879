"""End to end: `serve` steers each client to its nearest healthy region.  A real MMDB file
(mmdb-writer) locates clients by their EDNS Client Subnet (dnspython and `dig +subnet=`) or
their source address; real HTTP endpoints are killed and brought back."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import pytest
from geo_mmdb import FRANKFURT, NEW_YORK, SYDNEY, VIRGINIA, city, write_mmdb
from support import HttpEndpoints, Server, run_cli, wait_for
from test_serve import DETECTION, FALL, INTERVAL, RISE, TIMEOUT, Serve, endpoint

pytestmark = pytest.mark.e2e

WWW = "www.example.test."
NEAR = "near.example.test."
EU, US, AP = "127.0.0.11", "127.0.0.12", "127.0.0.13"
CLIENTS = {
    "192.0.2.0/24": city("DE", "EU", FRANKFURT),
    "198.51.100.0/24": city("US", "NA", NEW_YORK),
    "203.0.113.0/24": city("AU", "OC", SYDNEY),
    "2001:db8:de::/48": city("DE", "EU", FRANKFURT),
    "2001:db8:aa::/48": city("US", "NA", VIRGINIA),
}
HOLD_DOWN = 2.0


def write(tmp_path: Path, ep: HttpEndpoints) -> Path:
    write_mmdb(tmp_path / "geo.mmdb", CLIENTS)
    eu, us, ap = (endpoint(a, ep.start(a)) for a in (EU, US, AP))
    tiers = f"""\
          - {{name: eu, endpoints: [{eu}], coordinates: [50.11, 8.68]}}
          - {{name: us, endpoints: [{us}], coordinates: [38.94, -77.46]}}
          - {{name: ap, endpoints: [{ap}], coordinates: [-33.87, 151.21]}}
"""
    path = tmp_path / "c.yaml"
    path.write_text(
        f"""\
checks:
  web:
    type: http
    path: /healthz
    interval: {int(INTERVAL * 1000)}ms
    timeout: {int(TIMEOUT * 1000)}ms
    rise: {RISE}
    fall: {FALL}
geo:
  database: geo.mmdb
  nets: {{lab: [127.0.0.77/32]}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www:
        policy: active-passive
        check: web
        hold_down: {HOLD_DOWN}s
        tiers:
{tiers}        steering:
          by: country
          map: {{DE: [eu, us], US: [us, eu], AU: [ap, us]}}
          nets: {{lab: [ap]}}
          default: [us, eu, ap]
      near:
        policy: active-passive
        check: web
        hold_down: {HOLD_DOWN}s
        tiers:
{tiers}        steering: {{by: proximity}}
"""
    )
    return path


def ask(
    server: Server, name: str, subnet: str | None = None, source: str = "127.0.0.1"
) -> tuple[tuple[str, ...], int | None]:
    """The A answer for a client (ECS `subnet`, else the source address) and the SCOPE
    PREFIX-LENGTH echoed (None: no ECS in the reply)."""
    options: list[dns.edns.Option] = []
    if subnet is not None:
        address, prefix = subnet.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    q = dns.message.make_query(name, "A", use_edns=0, options=options)
    r = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2, source=source)
    values = tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset if rrset.rdtype == 1))
    scope = next((o.scopelen for o in r.options if isinstance(o, dns.edns.ECSOption)), None)
    return values, scope


def api(server: Server, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.api}{path}", timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def test_each_client_is_answered_from_its_region_and_moves_only_when_it_fails(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    server = serve(write(tmp_path, http_endpoints))
    # by country, from the client subnet; the SCOPE is the database network's /24
    assert ask(server, WWW, "192.0.2.0/24") == ((EU,), 24)
    assert ask(server, WWW, "198.51.100.0/24") == ((US,), 24)
    assert ask(server, WWW, "203.0.113.0/24") == ((AP,), 24)
    assert ask(server, WWW, "2001:db8:de::/48") == ((EU,), 48)
    # a client the database does not know gets the default group
    assert ask(server, WWW, "100.64.0.0/24")[0] == (US,)
    # no ECS: the source address decides (the lab network is labelled), and no ECS comes back
    assert ask(server, WWW, source="127.0.0.77") == ((AP,), None)
    assert ask(server, WWW) == ((US,), None)
    # by proximity: Sydney to ap, New York to us, Frankfurt to eu
    assert ask(server, NEAR, "203.0.113.0/24")[0] == (AP,)
    assert ask(server, NEAR, "198.51.100.0/24")[0] == (US,)
    assert ask(server, NEAR, "192.0.2.0/24")[0] == (EU,)

    http_endpoints.stop(EU)
    # Germany goes to its next region; everyone else stays where they were
    wait_for(lambda: ask(server, WWW, "192.0.2.0/24")[0] == (US,), 5 * DETECTION)
    assert ask(server, WWW, "198.51.100.0/24")[0] == (US,)
    assert ask(server, WWW, "203.0.113.0/24")[0] == (AP,)
    assert ask(server, WWW, source="127.0.0.77")[0] == (AP,)
    wait_for(lambda: ask(server, NEAR, "192.0.2.0/24")[0] == (US,), 5 * DETECTION)
    assert ask(server, NEAR, "203.0.113.0/24")[0] == (AP,)

    why = api(server, "/api/v1/explain/www?client=192.0.2.7")["steering"]["client"]
    assert why["group"] == "eu,us"
    assert why["answer"] == [US]
    assert why["tier"] == "us"
    assert "country DE" in why["why"]
    assert why["scope"] == 24
    out = run_cli("explain", "www", "--client", "192.0.2.7", "--api", str(server.api))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(
        "client 192.0.2.0/24: location group eu,us (country DE), tier us, answers 127.0.0.12"
    )
    assert "  group ap,us (country:AU): tier ap [healthy] -> 127.0.0.13" in out.stdout
    bad = run_cli("explain", "www", "--client", "nowhere", "--api", str(server.api))
    assert bad.returncode != 0
    assert "client must be an address or network" in bad.stdout + bad.stderr

    # back: each group fails back after its hold_down (auto failback)
    http_endpoints.start(EU)
    wait_for(
        lambda: ask(server, WWW, "192.0.2.0/24")[0] == (EU,),
        5 * (INTERVAL * RISE + TIMEOUT) + 2 * HOLD_DOWN,
    )
    status = api(server, "/api/v1/status")
    www = next(n for n in status["names"] if n["name"] == WWW)
    groups = {g["group"]: g for g in www["groups"]}
    assert groups["eu,us"]["answer"] == [EU]
    assert groups["eu,us"]["places"] == ["country:DE"]
    assert www["answer"] == [US]  # the default group's
    # queries per group: the Australian client asked www twice (before and after the outage)
    assert groups["ap,us"]["queries"] == 2
    assert groups["eu,us"]["queries"] >= 4
    with urllib.request.urlopen(f"{server.api}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert (
        'dnsfailover_dns_steered_queries_total{group="ap,us",name="www.example.test."} 2.0'
        in metrics
    )
    assert (
        'dnsfailover_name_answers{group="eu,us",name="www.example.test.",zone="example.test."} 1.0'
        in metrics
    )


def test_dig_subnet_gets_the_steered_answer_and_its_scope(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    if shutil.which("dig") is None:
        pytest.fail("dig is not installed (bind9-dnsutils); .ci/run installs it")
    server = serve(write(tmp_path, http_endpoints))
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(server.port), WWW, "A", "+subnet=203.0.113.9/24"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    answers = [
        line.split()[-1]
        for line in out.splitlines()
        if line.startswith(WWW) and line.split()[2:4] == ["IN", "A"]
    ]
    assert answers == [AP]
    assert "CLIENT-SUBNET: 203.0.113.0/24/24" in out


def test_a_replaced_database_is_read_on_reload(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    server = serve(write(tmp_path, http_endpoints))
    assert ask(server, WWW, "198.51.100.0/24")[0] == (US,)
    # the database's next release places that network in Germany
    write_mmdb(tmp_path / "geo.mmdb", {**CLIENTS, "198.51.100.0/24": city("DE", "EU", FRANKFURT)})
    assert ask(server, WWW, "198.51.100.0/24")[0] == (US,)  # not before a reload
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: ask(server, WWW, "198.51.100.0/24")[0] == (EU,), 10)
    # a broken replacement is refused and the running one stays
    (tmp_path / "geo.mmdb").write_bytes(b"broken")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "geo.database" in server.log.read_text(), 10)
    assert ask(server, WWW, "198.51.100.0/24")[0] == (EU,)


def test_a_tcp_query_without_ecs_is_placed_by_its_peer_address(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: Serve
) -> None:
    """A TCP query without ECS is placed by its peer address too."""
    server = serve(write(tmp_path, http_endpoints))
    q = dns.message.make_query(WWW, "A")
    r = dns.query.tcp(q, "127.0.0.1", port=server.port, timeout=2, source="127.0.0.77")
    assert [rd.to_text() for rrset in r.answer for rd in rrset] == [AP]
    r = dns.query.tcp(q, "127.0.0.1", port=server.port, timeout=2)
    assert [rd.to_text() for rrset in r.answer for rd in rrset] == [US]
