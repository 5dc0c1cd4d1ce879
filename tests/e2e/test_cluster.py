"""Three real `dnsfailover serve` nodes in three regions, sharing a real etcd.

Each node probes real HTTP endpoints from its own source address (its region), so a
region can be cut off from every endpoint by resetting that source's connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd_support import Etcd, etcd  # noqa: F401  (the fixture)
from support import HttpEndpoints, Server, run_cli, wait_for

pytestmark = pytest.mark.e2e

ENDPOINTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"]
REGIONS = {"us": "127.0.0.101", "eu": "127.0.0.102", "ap": "127.0.0.103"}
ZONE = "example.test."
NAME = "www.example.test."
PREFIX = "/dnsfailover/e2e"


def cluster_config(path: Path, etcd_endpoint: str, ports: dict[str, int]) -> Path:
    endpoints = "\n".join(
        f"          - {{address: {a}, check_port: {ports[a]}}}" for a in ENDPOINTS
    )
    regions = "\n".join(f"  {r}: {{source_address: {s}}}" for r, s in REGIONS.items())
    path.write_text(
        f"""
regions:
{regions}
cluster:
  etcd: {{endpoints: ["{etcd_endpoint}"], prefix: {PREFIX}}}
  lease_ttl: 2
checks:
  web: {{type: http, path: /healthz, interval: 200ms, timeout: 150ms, rise: 2, fall: 3}}
zones:
  {ZONE}:
    soa: {{mname: ns1.{ZONE}, rname: hostmaster.{ZONE}, minimum: 5}}
    nameservers: [ns1.{ZONE}]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www:
        policy: active-active
        check: web
        ttl: 5
        endpoints:
{endpoints}
"""
    )
    return path


class Nodes:
    """The three nodes; `start(region)` (re)starts one, `all_answer(...)` polls them all."""

    def __init__(self, config: Path, tmp: Path) -> None:
        self.config, self.tmp = config, tmp
        self.servers: dict[str, Server] = {}

    def start(self, region: str) -> Server:
        s = Server(
            self.config,
            self.tmp / f"{region}.db",
            "--region",
            region,
            "--node-id",
            f"node-{region}",
        )
        self.servers[region] = s
        return s

    def live(self) -> dict[str, Server]:
        return {r: s for r, s in self.servers.items() if s.proc.poll() is None}

    def answers(self) -> dict[str, tuple[str, ...]]:
        return {r: s.answer(NAME) for r, s in self.live().items()}

    def serials(self) -> dict[str, int]:
        return {r: s.serial(ZONE) for r, s in self.live().items()}

    def converged(self, want: tuple[str, ...]) -> bool:
        try:
            answers, serials = self.answers(), self.serials()
        except Exception:
            return False
        return all(a == want for a in answers.values()) and len(set(serials.values())) == 1

    def status(self, region: str) -> dict[str, Any]:
        api = self.servers[region].api
        assert api is not None
        with urllib.request.urlopen(f"{api}/api/v1/status", timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    def logs(self, region: str) -> str:
        return self.servers[region].log.read_text(errors="replace")

    def leader(self) -> str:
        """The region whose node last logged that it became the leader and is alive."""
        found = [
            (self.logs(r).rfind("is now the leader"), r)
            for r in self.live()
            if "is now the leader" in self.logs(r)
        ]
        assert found, "no node says it is the leader"
        return max(found)[1]

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()


@pytest.fixture
def nodes(
    etcd: Etcd,  # noqa: F811
    http_endpoints: HttpEndpoints,
    tmp_path: Path,
) -> Iterator[Nodes]:
    ports = {a: http_endpoints.start(a) for a in ENDPOINTS}
    config = cluster_config(tmp_path / "cluster.yaml", etcd.endpoint, ports)
    n = Nodes(config, tmp_path)
    for region in REGIONS:
        n.start(region)
    yield n
    n.stop()


ALL = tuple(ENDPOINTS)


def test_an_endpoint_that_dies_leaves_every_node_with_one_serial(
    nodes: Nodes, http_endpoints: HttpEndpoints
) -> None:
    wait_for(lambda: nodes.converged(ALL), timeout=15)
    first = nodes.serials()
    http_endpoints.stop("127.0.0.12")
    want = tuple(a for a in ALL if a != "127.0.0.12")
    # detection: fall 3 x 200ms + timeout; generous bound for three processes on 2 cores
    wait_for(lambda: nodes.converged(want), timeout=10)
    serials = nodes.serials()
    assert len(set(serials.values())) == 1
    assert next(iter(serials.values())) > next(iter(first.values()))
    http_endpoints.start("127.0.0.12")
    wait_for(lambda: nodes.converged(ALL), timeout=10)


def test_a_region_cut_off_from_every_endpoint_is_isolated_not_believed(
    nodes: Nodes, http_endpoints: HttpEndpoints
) -> None:
    wait_for(lambda: nodes.converged(ALL), timeout=15)
    serial = nodes.serials()["us"]
    http_endpoints.block(REGIONS["ap"])
    wait_for(lambda: "region ap isolated" in nodes.logs(nodes.leader()), timeout=10)
    # ... and over several detection times nothing fails over anywhere
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert set(nodes.answers().values()) == {ALL}
        time.sleep(0.1)
    assert set(nodes.serials().values()) == {serial}
    # The node in ap says so itself (it sees the others' reports too), and every node's
    # status shows it.
    assert "region ap isolated" in nodes.logs("ap")
    for region in REGIONS:
        status = nodes.status(region)
        assert status["cluster"]["isolated_regions"] == ["ap"], status["cluster"]
        assert status["cluster"]["mode"] == "cluster"
        assert status["cluster"]["connected"] is True
    http_endpoints.unblock(REGIONS["ap"])
    wait_for(lambda: "region ap no longer isolated" in nodes.logs(nodes.leader()), timeout=10)


class AnswerWatch:
    """Queries the given nodes continuously on a thread; counts unanswered queries."""

    def __init__(self, servers: Callable[[], dict[str, Server]]) -> None:
        self._servers = servers
        self.asked = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for region, s in self._servers().items():
                self.asked += 1
                try:
                    if not s.answer(NAME):
                        self.failed.append(f"{region}: empty answer")
                except Exception as e:
                    self.failed.append(f"{region}: {e!r}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def decision_terms(endpoint: str) -> list[tuple[int, str]]:
    """Every (term, leader) the decision key held, oldest first, from etcd's own history."""

    async def read() -> list[tuple[int, str]]:
        import aetcd

        host, port = endpoint.rsplit(":", 1)
        async with aetcd.Client(host=host, port=int(port)) as client:
            key = f"{PREFIX}/decision".encode()
            latest = await client.get(key)
            assert latest is not None
            history: list[tuple[int, str]] = []
            watch = await client.watch(key, start_revision=1)  # replays the key's history
            async for event in watch:
                if event.kind == "PUT":
                    data = json.loads(event.kv.value)
                    history.append((int(data["term"]), str(data["leader"])))
                if event.kv.mod_revision >= latest.mod_revision:
                    break
            await watch.cancel()
            return history

    return asyncio.run(read())


def test_leader_killed_another_takes_over_and_answers_keep_flowing(
    nodes: Nodes,
    http_endpoints: HttpEndpoints,
    etcd: Etcd,  # noqa: F811
) -> None:
    wait_for(lambda: nodes.converged(ALL), timeout=15)
    old = nodes.leader()
    others = [r for r in REGIONS if r != old]
    watch = AnswerWatch(lambda: {r: s for r, s in nodes.live().items() if r in others})
    try:
        nodes.servers[old].proc.kill()
        nodes.servers[old].proc.wait()
        started = time.monotonic()
        wait_for(lambda: nodes.leader() in others, timeout=2 * 2 + 3)  # lease TTL 2s + slack
        took = time.monotonic() - started
        # the new leader decides: an endpoint dying is still handled
        http_endpoints.stop("127.0.0.13")
        want = tuple(a for a in ALL if a != "127.0.0.13")
        wait_for(lambda: nodes.converged(want), timeout=10)
    finally:
        watch.stop()
    assert watch.asked > 50
    assert watch.failed == [], watch.failed[:5]
    assert took < 2 * 2 + 3
    terms = decision_terms(etcd.endpoint)
    assert [t for t, _ in terms] == sorted(t for t, _ in terms), terms  # one writer at a time


def test_a_paused_leader_never_writes_after_it_resumes(
    nodes: Nodes,
    http_endpoints: HttpEndpoints,
    etcd: Etcd,  # noqa: F811
) -> None:
    wait_for(lambda: nodes.converged(ALL), timeout=15)
    old = nodes.leader()
    proc = nodes.servers[old].proc
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        others = [r for r in REGIONS if r != old]
        wait_for(
            lambda: any("is now the leader" in nodes.logs(r) for r in others), timeout=2 * 2 + 3
        )
        http_endpoints.stop("127.0.0.14")  # a change the new leader publishes
        want = tuple(a for a in ALL if a != "127.0.0.14")
        wait_for(lambda: all(nodes.servers[r].answer(NAME) == want for r in others), timeout=10)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # The old leader wakes up believing it leads: it must not overwrite the decision, and
    # it must come round to serving the new leader's answer.
    wait_for(lambda: nodes.converged(want), timeout=10)
    wait_for(lambda: "no longer the leader" in nodes.logs(old), timeout=10)
    terms = decision_terms(etcd.endpoint)
    assert [t for t, _ in terms] == sorted(t for t, _ in terms), terms
    newest_term = terms[-1][0]
    assert all(leader != f"node-{old}" for term, leader in terms if term == newest_term)


def test_etcd_down_nodes_keep_answering_then_converge(
    nodes: Nodes,
    http_endpoints: HttpEndpoints,
    etcd: Etcd,  # noqa: F811
) -> None:
    wait_for(lambda: nodes.converged(ALL), timeout=15)
    serial = nodes.serials()["us"]
    etcd.stop()
    http_endpoints.stop("127.0.0.11")
    deadline = time.monotonic() + 3.0  # well past detection (0.75s) and the lease TTL (2s)
    while time.monotonic() < deadline:
        assert set(nodes.answers().values()) == {ALL}  # the last decision, everywhere
        time.sleep(0.1)
    assert set(nodes.serials().values()) == {serial}
    wait_for(lambda: all("etcd unreachable" in nodes.logs(r) for r in REGIONS), timeout=10)
    for region in REGIONS:
        assert "etcd unreachable" in (nodes.status(region)["cluster"]["degraded"] or "")
    etcd.restart()
    want = tuple(a for a in ALL if a != "127.0.0.11")
    wait_for(lambda: nodes.converged(want), timeout=20)
    assert next(iter(nodes.serials().values())) > serial


def test_a_node_restarted_while_etcd_is_down_serves_the_clusters_decision_and_serial(
    nodes: Nodes,
    http_endpoints: HttpEndpoints,
    etcd: Etcd,  # noqa: F811
) -> None:
    wait_for(lambda: nodes.converged(ALL), timeout=15)
    serial = nodes.serials()["us"]
    follower = next(r for r in REGIONS if r != nodes.leader())
    etcd.stop()
    http_endpoints.stop("127.0.0.11")  # a decision of the node's own would differ
    nodes.servers[follower].stop()
    again = nodes.start(follower)  # cannot reach etcd
    assert again.answer(NAME) == ALL, "the cluster's last decision"
    assert nodes.serials() == dict.fromkeys(nodes.live(), serial), "one serial everywhere"
    status = nodes.status(follower)["cluster"]
    assert status["decision_source"] == "state file (etcd down)"
    assert "kept in the state file" in status["degraded"]
    assert "serving the cluster's last decision" in nodes.logs(follower)
    etcd.restart()
    want = tuple(a for a in ALL if a != "127.0.0.11")
    wait_for(lambda: nodes.converged(want), timeout=20)
    assert nodes.status(follower)["cluster"]["decision_source"] == "etcd"
    assert next(iter(nodes.serials().values())) > serial


def test_an_override_set_on_a_follower_applies_on_every_node(
    etcd: Etcd,  # noqa: F811
    http_endpoints: HttpEndpoints,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DNSFAILOVER_API_TOKEN", "cluster-token-0123456789")
    ports = {a: http_endpoints.start(a) for a in ENDPOINTS}
    n = Nodes(cluster_config(tmp_path / "cluster.yaml", etcd.endpoint, ports), tmp_path)
    try:
        for region in REGIONS:
            n.start(region)
        wait_for(lambda: n.converged(ALL), timeout=15)
        follower = next(r for r in REGIONS if r != n.leader())
        api = n.servers[follower].api
        assert api is not None
        out = run_cli("drain", "127.0.0.13", "--reason", "maintenance", "--api", api)
        assert out.returncode == 0, out.stdout + out.stderr
        want = tuple(a for a in ALL if a != "127.0.0.13")
        wait_for(lambda: n.converged(want), timeout=10)
        # every node lists it, whichever node's API is asked
        for region in REGIONS:
            overrides = n.status(region)["overrides"]
            assert [o["endpoint"] for o in overrides] == ["127.0.0.13"], overrides
        other = next(r for r in REGIONS if r not in (follower,))
        other_api = n.servers[other].api
        assert other_api is not None
        out = run_cli("undrain", "127.0.0.13", "--reason", "done", "--api", other_api)
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: n.converged(ALL), timeout=10)
    finally:
        n.stop()


def test_a_node_running_another_config_is_shown_until_it_reloads_the_same(
    etcd: Etcd,  # noqa: F811
    http_endpoints: HttpEndpoints,
    tmp_path: Path,
) -> None:
    ports = {a: http_endpoints.start(a) for a in ENDPOINTS}
    config = cluster_config(tmp_path / "cluster.yaml", etcd.endpoint, ports)
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("rise: 2", "rise: 3"))
    n = Nodes(config, tmp_path)
    try:
        n.start("us")
        n.start("eu")
        odd = Nodes(other, tmp_path)
        n.servers["ap"] = odd.start("ap")
        wait_for(lambda: n.converged(ALL), timeout=15)
        wait_for(lambda: n.status("us")["cluster"]["config_drift"] == ["node-ap"], timeout=10)
        assert n.status("ap")["cluster"]["config_drift"] == ["node-eu", "node-us"]
        assert "run a different config" in n.logs("us")
        other.write_text(config.read_text())
        n.servers["ap"].proc.send_signal(signal.SIGHUP)
        wait_for(lambda: n.status("us")["cluster"]["config_drift"] == [], timeout=10)
        assert n.status("ap")["cluster"]["config_drift"] == []
    finally:
        n.stop()


def test_every_node_serves_the_same_signatures(
    etcd: Etcd,  # noqa: F811
    http_endpoints: HttpEndpoints,
    tmp_path: Path,
) -> None:
    """A signed zone in a cluster: the nodes sign with the same keys (key_files, deployed
    on every node) and at the same signing time (the hour), so they serve byte-identical
    answers, before and after a failover, and each validates against the one DNSKEY set."""
    import dns.dnssec
    import dns.message
    import dns.name
    import dns.query
    import dns.rdatatype

    from dnsfailover.dnssec import keys

    made = keys.ensure(tmp_path / "keys" / "example.test", ZONE, 13, "csk")
    files = ", ".join(str(k.path) for k in made.keys)
    ports = {a: http_endpoints.start(a) for a in ENDPOINTS}
    config = cluster_config(tmp_path / "cluster.yaml", etcd.endpoint, ports)
    text = config.read_text().replace(
        f"    nameservers: [ns1.{ZONE}]\n",
        f"    nameservers: [ns1.{ZONE}]\n    dnssec: {{key_files: [{files}]}}\n",
    )
    config.write_text(text)
    n = Nodes(config, tmp_path)
    try:
        for region in ("us", "eu"):
            n.start(region)
        origin = dns.name.from_text(ZONE)

        def signed(want: tuple[str, ...]) -> None:
            wait_for(lambda: n.converged(want), timeout=15)
            hour = time.time() // 3600
            out = {}
            for region, server in n.live().items():
                q = dns.message.make_query(NAME, "A", want_dnssec=True)
                reply = dns.query.tcp(q, "127.0.0.1", port=server.port, timeout=2)
                (rrset,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.A]
                (sig,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG]
                dns.dnssec.validate(rrset, sig, {origin: made_keys})
                # (the order of the addresses may differ: a set is signed in canonical order)
                out[region] = (sorted(rd.to_text() for rd in rrset), sig[0].to_text())
            if time.time() // 3600 == hour:  # (a publish across the hour signs at the next)
                assert len({repr(v) for v in out.values()}) == 1, out

        import dns.rrset

        made_keys = dns.rrset.from_rdata_list(origin, 3600, [k.dnskey for k in made.keys])
        signed(ALL)
        http_endpoints.stop("127.0.0.12")
        signed(tuple(a for a in ALL if a != "127.0.0.12"))
    finally:
        n.stop()
