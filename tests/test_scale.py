"""A change costs what changed, at a size CI can run: 20,000 static records (a zone file)
and 2,000 failover names over 200 real TCP endpoints.  One node, and two nodes on a real
etcd (where the whole decision, static records included, used to be one etcd value: past
~20,000 records it no longer fit etcd's request limit and no node ever failed over).

Assertions are on work done (sets re-parsed, names decided, state rows and etcd bytes
written), not on wall time; a time bound is only a generous guard against a hang.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aetcd
import dns.asyncquery
import dns.message
import pytest
from etcd_support import Etcd, etcd  # noqa: F401 - the fixture
from support import HttpEndpoints

from dnsfailover.config.load import load
from dnsfailover.runtime.node import Node

STATIC, NAMES, ENDPOINTS, PORT = 20_000, 2_000, 200, 24_501
WEB = ("127.0.0.1", "127.0.0.2")  # the small clusters' HTTP endpoints
ORIGIN = "example.test."


def address(i: int) -> str:
    return f"127.3.{i // 250}.{1 + i % 250}"


class Listeners:
    """`ENDPOINTS` TCP listeners (a probe's connect succeeds); `kill` closes one."""

    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}
        for i in range(ENDPOINTS):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address(i), PORT))
            s.listen(1024)
            self.socks[i] = s

    def kill(self, i: int) -> None:
        self.socks.pop(i).close()

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


@contextmanager
def endpoints() -> Iterator[Listeners]:
    listeners = Listeners()
    try:
        yield listeners
    finally:
        listeners.close()


def users(endpoint: int) -> list[str]:
    return [
        f"f{j}.{ORIGIN}" for j in range(NAMES) if endpoint in (j % ENDPOINTS, (j + 1) % ENDPOINTS)
    ]


def write_config(tmp: Path, cluster: str = "") -> Path:
    lines = [f"$ORIGIN {ORIGIN}", "$TTL 300"]
    lines += [f'h{i} IN TXT "a static record of some length, number {i}"' for i in range(STATIC)]
    (tmp / "static.zone").write_text("\n".join(lines) + "\n")
    yaml = [
        cluster,
        "checks:",
        f"  tcp: {{type: tcp, port: {PORT}, interval: 200ms, timeout: 200ms, fall: 2, rise: 2}}",
        "zones:",
        f"  {ORIGIN}:",
        f"    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}",
        f"    nameservers: [ns1.{ORIGIN}]",
        "    records: {ns1: {type: A, value: 127.0.0.1}}",
        "    zone_file: static.zone",
        "    failover:",
    ]
    for j in range(NAMES):
        a, b = address(j % ENDPOINTS), address((j + 1) % ENDPOINTS)
        yaml.append(f"      f{j}: {{policy: active-active, check: tcp, endpoints: [{a}, {b}]}}")
    path = tmp / "scale.yaml"
    path.write_text("\n".join(yaml) + "\n")
    return path


async def answer(port: int, name: str) -> tuple[str, ...]:
    r = await dns.asyncquery.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port)
    return tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))


async def until_dropped(port: int, names: list[str], gone: str, limit: float = 15.0) -> None:
    async with asyncio.timeout(limit):
        for name in names:
            while gone in await answer(port, name):  # noqa: ASYNC110 - a remote server
                await asyncio.sleep(0.05)


async def eventually(get: Callable[[], Awaitable[object]], want: object) -> None:
    """Poll `get()` until it returns `want` (a generous guard against a hang)."""
    async with asyncio.timeout(15):
        while await get() != want:  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running(
    config: Path,
    state: Path,
    node_id: str = "n1",
    *,
    probe_process: bool = False,
    region: str = "local",
) -> AsyncIterator[Node]:
    """A node of `config`; `probe_process`: its probes in a child process, as `serve` runs."""
    cfg = await asyncio.to_thread(load, config)
    node = Node(
        cfg,
        dns_port=0,
        state_path=state,
        node_id=node_id,
        region=region,
        config_path=str(config),
        probe_process=probe_process,
    )
    try:
        await node.start()
        yield node
    finally:
        await node.stop()


async def test_one_node_re_parses_only_the_changed_sets(tmp_path: Path) -> None:
    with endpoints() as listeners:
        config = await asyncio.to_thread(write_config, tmp_path)
        async with running(config, tmp_path / "state.db") as node:
            port = node.dns_address()[1]  # type: ignore[index]
            assert await answer(port, f"f7.{ORIGIN}") == (address(7), address(8))
            before = node.embedded.snapshot.find_zone((b"example", b"test"))
            assert before is not None
            await node.publisher.flush()  # start-up's state is written behind the answers
            rows = node.store.store._db.total_changes  # type: ignore[union-attr]
            listeners.kill(7)
            names = users(7)
            await until_dropped(port, names, address(7))
            delta = node.embedded.history[ORIGIN][-1]
            assert delta.names == set(names)  # the difference is the names of the endpoint
            after = node.embedded.snapshot.find_zone((b"example", b"test"))
            assert after is not None
            static = ((b"h123", b"example", b"test"), 16)
            assert after.rrsets[static] is before.rrsets[static]  # shared, not re-parsed
            changed = ((b"f7", b"example", b"test"), 1)
            assert after.rrsets[changed] is not before.rrsets[changed]
            assert node.publisher.published is not None
            assert node.publisher.published.decision.changed <= set(names)
            await node.publisher.flush()
            written = node.store.store._db.total_changes - rows  # type: ignore[union-attr]
            # the serial, the names' state and their transitions (+ health rows): not 2,000
            assert written < 10 * len(names)


async def test_a_two_node_cluster_fails_over_and_writes_only_what_changed(
    tmp_path: Path,
    etcd: Etcd,  # noqa: F811
) -> None:
    head = f"cluster:\n  etcd: {{endpoints: ['{etcd.endpoint}'], prefix: /scale}}\n  lease_ttl: 2\n"
    with endpoints() as listeners:
        config = await asyncio.to_thread(write_config, tmp_path, head)
        # two nodes in this one process: each probes 200 endpoints every 200 ms in a child
        # process of its own, as `serve` does (on the loop that keeps their etcd leases,
        # 2,000 probes a second delayed the keep-alives past the lease TTL)
        async with (
            running(config, tmp_path / "a.db", "a", probe_process=True) as a,
            running(config, tmp_path / "b.db", "b", probe_process=True) as b,
        ):
            ports = [n.dns_address()[1] for n in (a, b)]  # type: ignore[index]
            for port in ports:
                assert await answer(port, f"f7.{ORIGIN}") == (address(7), address(8))
            host, port = etcd.endpoint.split(":")
            client = aetcd.Client(host, int(port))
            try:
                listeners.kill(7)
                names = users(7)
                for port in ports:
                    await until_dropped(port, names, address(7))
                serials = {n.published.zones[0].soa.serial for n in (a, b)}  # type: ignore[union-attr]
                assert len(serials) == 1  # the same serial on both
                kv = await client.get(b"/scale/decision")
                assert kv is not None
                seq = int(kv.value.split(b'"seq":')[1].split(b",")[0])
                entries = [
                    kv.value
                    for kv in await client.get_prefix(b"/scale/names/")
                    if b'"seq":%d' % seq in kv.value
                ]
                written = len(kv.value) + sum(len(v) for v in entries)
                # the decision's names only (a few hundred bytes each), never the static records
                assert len(entries) <= len(names)
                assert written < 1_000 * len(names)
            finally:
                await client.close()


async def test_a_decision_etcd_refuses_is_loud_counted_retried_and_recovers(
    tmp_path: Path,
) -> None:
    """etcd refuses a name's entry (bigger than its request limit): the leader keeps the
    last answers, says so in status and metrics, retries with backoff, and publishes again
    once the decision fits."""
    server = Etcd(extra=("--max-request-bytes", "8192"))
    await asyncio.to_thread(server.start)
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", 0))
    check_port = probe.getsockname()[1]
    big = [f"127.5.{i // 250}.{1 + i % 250}" for i in range(400)]
    endpoints = ", ".join(f"{{address: {a}, check_address: 127.0.0.1}}" for a in big)
    config = tmp_path / "big.yaml"
    config.write_text(
        f"cluster:\n  etcd: {{endpoints: ['{server.endpoint}'], prefix: /big}}\n"
        "  lease_ttl: 2\n"
        "checks:\n"
        f"  tcp: {{type: tcp, port: {check_port}, interval: 100ms, timeout: 100ms, fall: 1, "
        "rise: 1}\n"
        f"zones:\n  {ORIGIN}:\n"
        f"    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}\n"
        f"    nameservers: [ns1.{ORIGIN}]\n"
        "    records: {ns1: {type: A, value: 127.0.0.1}}\n"
        "    failover:\n"
        "      big: {policy: active-active, check: tcp, all_down: serve_none, "
        f"endpoints: [{endpoints}]}}\n"
        "      small: {policy: active-active, check: tcp, all_down: fallback, "
        "fallback: [127.0.0.9], endpoints: [{address: 127.0.0.8, check_address: 127.0.0.1}]}\n"
    )
    try:
        async with running(config, tmp_path / "s.db") as node:
            port = node.dns_address()[1]  # type: ignore[index]

            async def failures_at_least(n: int) -> bool:
                return bool(node.cluster_status()["publish_failures"] >= n)

            async def degraded() -> str | None:
                return node.cluster_status()["degraded"]  # type: ignore[no-any-return]

            # Everything down (nothing listens): `big` is NODATA, a small entry: published.
            await eventually(lambda: answer(port, f"small.{ORIGIN}"), ("127.0.0.9",))
            assert node.cluster_status()["degraded"] is None
            assert node.cluster_status()["publish_failures"] == 0

            probe.listen(64)  # all up: `big` answers 400 addresses, an entry etcd refuses
            await eventually(lambda: failures_at_least(3), True)  # retried, with backoff
            status = node.cluster_status()
            assert "cannot publish" in status["degraded"]
            assert "too large" in status["degraded"]
            metrics = node.metrics.render(node.metrics.snapshot(node)).decode()
            assert 'dnsfailover_cluster_degraded{node="n1"} 1.0' in metrics
            failures = [
                line
                for line in metrics.splitlines()
                if line.startswith("dnsfailover_cluster_publish_failures_total")
            ]
            assert len(failures) == 1
            assert float(failures[0].split()[-1]) >= 3
            # static stability: every node serves the last decision etcd holds
            assert await answer(port, f"small.{ORIGIN}") == ("127.0.0.9",)

            probe.close()  # all down again: the decision fits, and is published
            await eventually(degraded, None)
            assert await answer(port, f"small.{ORIGIN}") == ("127.0.0.9",)
            metrics = node.metrics.render(node.metrics.snapshot(node)).decode()
            assert 'dnsfailover_cluster_degraded{node="n1"} 0.0' in metrics
    finally:
        probe.close()
        await asyncio.to_thread(server.close)


def web_config(
    path: Path,
    etcd: Etcd,  # noqa: F811
    web: HttpEndpoints,
    prefix: str,
    regions: str = "",
) -> Path:
    """A cluster config: `www` over 127.0.0.1 and .2 of `web` (HTTP, 200ms, fall 2, rise 2)."""
    ends = ", ".join(f"{{address: {a}, check_port: {web.start(a)}}}" for a in WEB)
    path.write_text(
        f"cluster:\n  etcd: {{endpoints: ['{etcd.endpoint}'], prefix: {prefix}}}\n"
        f"  lease_ttl: 2\n{regions}"
        "checks:\n  web: {type: http, path: /healthz, interval: 200ms, timeout: 200ms, "
        "fall: 2, rise: 2}\n"
        f"zones:\n  {ORIGIN}:\n"
        f"    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}\n"
        f"    nameservers: [ns1.{ORIGIN}]\n"
        "    records: {ns1: {type: A, value: 127.0.0.1}}\n"
        "    failover:\n"
        f"      www: {{policy: active-active, check: web, endpoints: [{ends}]}}\n"
    )
    return path


def decisions(node: Node, scope: str) -> float:
    metrics = node.metrics.render(node.metrics.snapshot(node)).decode()
    line = f'dnsfailover_engine_decisions_total{{scope="{scope}"}} '
    return sum(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(line))


async def test_a_regions_change_that_moves_no_vote_is_recorded_and_not_decided(
    tmp_path: Path,
    etcd: Etcd,  # noqa: F811
    http_endpoints: HttpEndpoints,
) -> None:
    """Two regions, majority: one region seeing an endpoint fail is a tie, which keeps the
    vote.  The leader records that region's view and decides nothing (on a leader of 10,000
    names a decision that changes nothing still compares every set it serves); once the
    other region agrees, the vote moves and the leader decides the names of that endpoint."""
    regions = "regions:\n  r1: {source_address: 127.0.0.11}\n"
    regions += "  r2: {source_address: 127.0.0.12}\n"
    config = web_config(tmp_path / "two.yaml", etcd, http_endpoints, "/tie", regions)
    www = f"www.{ORIGIN}"
    async with (
        running(config, tmp_path / "a.db", "a", region="r1") as a,
        running(config, tmp_path / "b.db", "b", region="r2") as b,
    ):
        ports = [n.dns_address()[1] for n in (a, b)]  # type: ignore[index]
        for p in ports:
            await eventually(functools.partial(answer, p, www), WEB)
        await eventually(functools.partial(leader_is_known, a, b), True)
        lead = a if a.cluster_status()["leader"] else b
        store = lead.store
        assert store is not None
        await lead.publisher.flush()
        before = decisions(lead, "changed")

        async def r2_saw_it() -> bool:
            events = await store.run(lambda s: s.events(200))
            return any(
                "127.0.0.1" in e.subject and e.message.startswith("r2: up -> down") for e in events
            )

        http_endpoints.fail_from("127.0.0.1", "127.0.0.12")  # only region r2 sees it fail
        await eventually(r2_saw_it, True)  # recorded by the leader's engine loop ...
        assert decisions(lead, "changed") == before  # ... which decided nothing
        for p in ports:
            assert await answer(p, www) == WEB

        http_endpoints.fail_from("127.0.0.1", "127.0.0.11")  # both regions: the vote moves
        for p in ports:
            await eventually(functools.partial(answer, p, www), ("127.0.0.2",))
        assert decisions(lead, "changed") > before


async def leader_is_known(*nodes: Node) -> bool:
    """One node leads and every node serves a decision it published."""
    leaders = [n for n in nodes if n.cluster_status()["leader"]]
    return len(leaders) == 1 and all(n.cluster_status()["decision"] is not None for n in nodes)


async def test_the_first_node_of_a_cluster_starts_serving_the_decision_it_published(
    tmp_path: Path,
    etcd: Etcd,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    http_endpoints: HttpEndpoints,
) -> None:
    """The first node up leads: it decides and publishes at start, and serves what etcd holds,
    instead of waiting out `lease_ttl` + 1 s for a leader's decision and serving one of its own
    meanwhile (with a serial of its own)."""
    config = web_config(tmp_path / "first.yaml", etcd, http_endpoints, "/first")
    async with running(config, tmp_path / "a.db", "a") as a:
        status = a.cluster_status()  # right as start returns
        assert status["leader"] is True
        assert status["decision"] is not None
        assert status["decision"]["leader"] == "a"
        assert status["decision_source"] == "etcd"
        port_a = a.dns_address()[1]  # type: ignore[index]
        assert await answer(port_a, f"www.{ORIGIN}") == WEB
    assert "serving a local decision" not in caplog.text
