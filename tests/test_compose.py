"""docker-compose.yml: valid against the Compose Specification's schema, and the cluster it
describes works, run from its own `command:` and `environment:` entries (compose_support.py)
as local processes, since there is no Docker daemon here: etcd, three toy endpoints and three
`dnsfailover serve` nodes in three regions."""

from __future__ import annotations

import copy
import ipaddress
import json
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import jsonschema
import pytest
import yaml
from compose_support import ROOT, Loopback, load_compose, stop
from support import run_cli, wait_for

from dnsfailover.config.load import load

SCHEMA = Path(__file__).parent / "data" / "compose-spec" / "compose-spec.json"
TOKEN_ENV = "DNSFAILOVER_API_TOKEN"


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(load_compose({})) == []
    assert schema_errors(load_compose({TOKEN_ENV: "x" * 32})) == []


def test_the_schema_check_refuses_a_broken_compose_file() -> None:
    document = load_compose({})
    typo = copy.deepcopy(document)
    typo["services"]["node-us"]["comand"] = typo["services"]["node-us"].pop("command")
    assert any("comand" in e for e in schema_errors(typo))
    bad_port = copy.deepcopy(document)
    bad_port["services"]["node-eu"]["ports"] = "127.0.0.1:5302:53/udp"  # not a list
    assert any("node-eu" in e for e in schema_errors(bad_port))


def test_the_services_make_a_three_region_cluster_from_the_repository() -> None:
    compose = load_compose({})
    services = compose["services"]
    nodes = {n: s for n, s in services.items() if s.get("build") is not None}
    assert len(nodes) == 3
    assert all(s["build"] == "." for s in nodes.values())
    assert (ROOT / "Dockerfile").is_file()
    assert any("etcd" in str(s.get("command", "")) for s in services.values())
    loop = Loopback(compose, Path("/nonexistent"))
    regions, ids, configs = set(), set(), set()
    for name, s in nodes.items():
        words = [str(w) for w in s["command"]]
        assert words[0] == "serve"
        regions.add(words[words.index("--region") + 1])
        ids.add(words[words.index("--node-id") + 1])
        mounted = loop.volume(name, words[1])
        assert mounted is not None, f"{name}: {words[1]} is not mounted"
        assert mounted.is_file(), mounted
        configs.add(mounted)
        assert TOKEN_ENV in s["environment"]
    assert len(ids) == 3
    (config_path,) = configs  # one config shared by the three nodes
    config = load(config_path)  # valid, as `dnsfailover validate` says
    assert config.cluster is not None
    assert set(config.regions) == regions
    assert len(regions) == 3
    # every endpoint the config probes is a toy endpoint of the compose network
    toys = {a for n, a in _service_addresses(compose).items() if n not in nodes}
    probed = {t.address for t, _check in config.targets().values()}
    assert probed
    assert probed <= toys


def test_references_resolve_and_ports_are_published_on_loopback_only() -> None:
    """What the schema cannot see: names that must exist, files that must be there."""
    compose = load_compose({})
    services = compose["services"]
    for name, s in services.items():
        for dep in s.get("depends_on") or []:
            assert dep in services, f"{name} depends on an unknown service {dep}"
        for net in s.get("networks") or {}:
            assert net in compose["networks"], f"{name}: undeclared network {net}"
        for spec in s.get("volumes") or []:
            source = spec.split(":")[0]
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
        for port in s.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), (
                f"{name}: {port} is published beyond loopback"
            )
    subnets = [
        ipaddress.ip_network(c["subnet"]) for c in compose["networks"]["demo"]["ipam"]["config"]
    ]
    addresses = [ipaddress.ip_address(a) for a in _service_addresses(compose).values()]
    assert len(set(addresses)) == len(services)
    assert all(any(a in net for net in subnets) for a in addresses)


def _service_addresses(compose: dict[str, Any]) -> dict[str, str]:
    return {
        name: net["ipv4_address"]
        for name, s in compose["services"].items()
        for net in (s.get("networks") or {}).values()
        if isinstance(net, dict)
    }


# -- the cluster, on loopback -----------------------------------------------------------------


@dataclass
class Running:
    loop: Loopback
    procs: dict[str, subprocess.Popen[str]]
    nodes: list[str]  # the dnsfailover services
    dns: dict[str, tuple[str, int]]  # node → its DNS address
    api: dict[str, str]  # node → its API base URL
    config: dict[str, Any]  # the nodes' config, moved to loopback
    token: str

    def answer(self, node: str, name: str) -> tuple[str, ...]:
        host, port = self.dns[node]
        r = dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=2)
        return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))

    def status(self, node: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.api[node]}/api/v1/status", timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    def everywhere(self, want: dict[str, tuple[str, ...]]) -> bool:
        """Every node answers `want` for every name."""
        try:
            return all(
                self.answer(node, name) == answer
                for node in self.nodes
                for name, answer in want.items()
            )
        except (OSError, dns.exception.DNSException):
            return False

    def one_leader(self) -> str | None:
        """The one node that leads, when all are connected and serve its decision."""
        try:
            clusters = {n: self.status(n)["cluster"] for n in self.nodes}
        except (OSError, urllib.error.URLError, KeyError):
            return None
        leaders = [n for n, c in clusters.items() if c["leader"]]
        if len(leaders) != 1 or not all(c["connected"] for c in clusters.values()):
            return None
        served = {(c.get("decision") or {}).get("leader") for c in clusters.values()}
        return leaders[0] if served == {clusters[leaders[0]]["node"]} else None

    def expected(self, down: set[str]) -> dict[str, tuple[str, ...]]:
        """Each failover name's answer with the endpoints in `down` dead, from the config."""
        want = {}
        for origin, zone in self.config["zones"].items():
            for name, rec in zone["failover"].items():
                if "tiers" in rec:
                    live = [[a for a in t["endpoints"] if a not in down] for t in rec["tiers"]]
                    answer = next(t for t in live if t)
                else:
                    answer = [a for a in rec["endpoints"] if a not in down]
                want[f"{name}.{origin}"] = tuple(sorted(answer))
        return want

    def backups(self) -> dict[str, tuple[str, ...]]:
        """Each active-passive name's second tier."""
        return {
            f"{name}.{origin}": tuple(sorted(rec["tiers"][1]["endpoints"]))
            for origin, zone in self.config["zones"].items()
            for name, rec in zone["failover"].items()
            if "tiers" in rec
        }

    def logs(self) -> str:
        return "\n".join(f"--- {s}\n{self.loop.log(s)[-3000:]}" for s in self.procs)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Running]:
    token = secrets.token_urlsafe(24)
    compose = load_compose({TOKEN_ENV: token})
    loop = Loopback(compose, tmp_path)
    services = compose["services"]
    nodes = [n for n, s in services.items() if s.get("build") is not None]
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        # in the order depends_on gives: the others first, then the nodes
        for name in [n for n in services if n not in nodes] + nodes:
            procs[name] = loop.start(name)
        dns_at, api_at = {}, {}
        for name in nodes:
            out = procs[name].stdout
            assert out is not None
            line = out.readline()  # "dnsfailover: serving 1 zone(s) on HOST:PORT (...), api URL"
            assert "serving" in line, f"{name} did not start: {line!r}\n{loop.log(name)}"
            host, port = line.split(" on ")[1].split(" ")[0].rsplit(":", 1)
            dns_at[name] = (host, int(port))
            api_at[name] = line.split(" api ")[1].split(",")[0]
        (config_file,) = loop.files.values()
        yield Running(
            loop, procs, nodes, dns_at, api_at, yaml.safe_load(config_file.read_text()), token
        )
    finally:
        for name in reversed(list(procs)):
            stop(procs[name])


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_compose_cluster_elects_a_leader_and_fails_a_dead_regions_names_over(
    cluster: Running,
) -> None:
    # three processes per node and etcd on a shared 2-core machine: generous bounds
    wait_for(lambda: cluster.one_leader() is not None, timeout=60, every=0.2)
    healthy = cluster.expected(down=set())
    assert len(healthy) >= 3
    wait_for(lambda: cluster.everywhere(healthy), timeout=60, every=0.2)

    toy = "toy-us"  # a region's endpoint dies, as `docker compose stop toy-us`
    dead = cluster.loop.addresses[toy]
    stop(cluster.procs[toy])
    after = cluster.expected(down={dead})
    moved = {name for name in healthy if healthy[name] != after[name]}
    assert len(moved) >= 2, moved  # its region's own name and www at least
    try:
        wait_for(lambda: cluster.everywhere(after), timeout=60, every=0.2)
    except AssertionError:
        raise AssertionError(cluster.logs()) from None
    wait_for(lambda: cluster.one_leader() is not None, timeout=60, every=0.2)

    # the token from the compose file's environment works on any node: a failover set
    # through one node's API is served by all three
    name, backup = next(
        (n, b) for n, b in cluster.backups().items() if n not in moved and dead not in b
    )
    nodes = cluster.nodes
    result = run_cli(
        "failover", name, "--reason", "compose test", "--api", cluster.api[nodes[-1]],
        "--token-file", str(_token_file(cluster)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wait_for(lambda: cluster.everywhere({name: backup}), timeout=60, every=0.2)


def _token_file(cluster: Running) -> Path:
    path = cluster.loop.workdir / "token"
    path.write_text(cluster.token)
    return path
