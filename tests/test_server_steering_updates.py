"""Steered names across publishes, steering swaps, zone transfers and worker processes.

The zone, database, steering and clients are those of tests/test_server_steering.py: a real
`DnsServer` on 127.0.0.1 port 0, real dnspython clients, a real MMDB file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import signal
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.exception
import dns.message
from conftest_server import soa
from test_server_ecs import echo
from test_server_steering import (
    ADDRESS,
    AP,
    EDGE,
    EU,
    ORIGIN,
    US,
    WWW,
    addresses,
    ask,
    both,
    database,
    port_of,
    steer,
    steered_zone,
    steering,
    with_www,
)

from dnsfailover.geo.steering import Steering
from dnsfailover.model import RecordSet, SteeredSet, ZoneContent
from dnsfailover.server import DnsServer
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.steered import Pinned, Where
from dnsfailover.server.wire import respond
from dnsfailover.server.workers import WorkerPool
from dnsfailover.server.xfr import Peer, TransferHandler
from dnsfailover.server.zone import ZoneSnapshot

__all__ = ["database", "steer"]  # the fixtures


def next_version(zone: ZoneContent, serial: int, **answers: object) -> ZoneContent:
    """The next version of `zone` as a publish makes it: the static part shared, so the
    snapshot and the fast path are updated incrementally, not rebuilt."""
    new = steered_zone(serial, **answers)  # type: ignore[arg-type]
    return ZoneContent(
        ORIGIN, new.soa, managed=new.managed, static=zone.static, steered=new.steered
    )


# --- publishing, set_steering, zone transfers --------------------------------------------


@both
async def test_an_update_of_one_group_changes_only_its_clients(steer: Steering, tcp: bool) -> None:
    zones = EmbeddedZones()
    first = steered_zone(1)
    zones.put([first])
    srv = DnsServer(zones.snapshot, port=0, steering=steer)
    await srv.start()
    zones.attach(srv)
    clients = {EU: ("81.2.69.0", 24), AP: ("2001:db8:1::", 48), US: ("81.2.70.0", 24)}
    try:
        for _ in range(3):  # every group's reply learned by the fast path
            for group, subnet in clients.items():
                assert addresses(await ask(srv, WWW, "A", tcp, subnet)) == [ADDRESS[group]]
        zones.put([next_version(first, 2, eu="203.0.113.7")])  # only the eu,us group's answer
        for _ in range(3):
            got = {g: addresses(await ask(srv, WWW, "A", tcp, s)) for g, s in clients.items()}
            assert got == {EU: ["203.0.113.7"], AP: [ADDRESS[AP]], US: [ADDRESS[US]]}
        zones.put([next_version(first, 3, eu="203.0.113.7", ap_ttl=30)])
        reply = await ask(srv, WWW, "A", tcp, clients[AP])
        assert reply.answer[0].ttl == 30
    finally:
        await srv.stop()


@both
async def test_set_steering_swaps_the_rules_and_forgets_the_old_templates(
    steer: Steering, database: Path, tcp: bool
) -> None:
    srv = DnsServer(ZoneSnapshot.build([steered_zone()]), port=0)  # nobody steered yet
    await srv.start()
    de = ("81.2.69.0", 24)
    try:
        for _ in range(3):  # the plain reply is learned: the default answer, SCOPE 0
            reply = await ask(srv, WWW, "A", tcp, de)
            assert addresses(reply) == [ADDRESS[US]]
            assert echo(reply) == [("81.2.69.0", 24, 0)]
        srv.set_steering(steer)
        for _ in range(3):
            reply = await ask(srv, WWW, "A", tcp, de)
            assert addresses(reply) == [ADDRESS[EU]]
            assert echo(reply) == [("81.2.69.0", 24, 24)]
        new = steering(database, DE=("ap", "us"))
        srv.set_steering(new)
        for _ in range(3):
            reply = await ask(srv, WWW, "A", tcp, de)
            assert addresses(reply) == [ADDRESS[AP]]
            assert echo(reply) == [("81.2.69.0", 24, 24)]
        srv.set_steering(None)  # nobody steered again: as without geo
        for _ in range(3):
            reply = await ask(srv, WWW, "A", tcp, de)
            assert addresses(reply) == [ADDRESS[US]]
            assert echo(reply) == [("81.2.69.0", 24, 0)]
            assert addresses(await ask(srv, WWW, "A", tcp, source="127.0.0.2")) == [ADDRESS[US]]
        assert new.locator is not None
        new.locator.close()
    finally:
        await srv.stop()


async def test_zone_transfers_carry_the_default_answer_only(steer: Steering) -> None:
    zones = EmbeddedZones()
    zones.put([steered_zone(1)])
    acl = {ORIGIN: (Peer(ipaddress.ip_network("127.0.0.1/32")),)}
    srv = DnsServer(zones.snapshot, port=0, steering=steer, tcp_handler=TransferHandler(zones, acl))
    await srv.start()
    zones.attach(srv)
    try:
        query = dns.message.make_query(
            ORIGIN, "AXFR", use_edns=0, options=[dns.edns.ECSOption("81.2.69.0", 24)]
        )
        reply = await dns.asyncquery.tcp(query, "127.0.0.1", port=port_of(srv), timeout=2)
        www = [
            rd.to_text()
            for r in reply.answer
            if r.name.to_text() == WWW and r.rdtype == 1
            for rd in r
        ]
        assert www == [ADDRESS[US]]
        assert echo(reply) == []
    finally:
        await srv.stop()


# --- worker processes ------------------------------------------------------------------------


async def test_a_worker_process_steers_as_the_main_one(steer: Steering) -> None:
    first = steered_zone(1)
    zones = EmbeddedZones()
    zones.put([first])
    main = DnsServer(zones.snapshot, port=0, reuse_port=True, steering=steer)
    host, port = await main.start()
    pool = WorkerPool(1, host, port, lambda: zones.contents.values())
    try:
        await pool.start()
        zones.subscribe(pool.publish)
        pool.set_steering(steer)
        await main.stop()  # the worker alone answers UDP on the port now
        query = dns.message.make_query(
            WWW, "A", use_edns=0, options=[dns.edns.ECSOption("2001:db8:1::", 48)]
        )

        async def until(address: str) -> dns.message.Message:
            # the worker takes its messages in order, after it bound the port: wait for them
            for _ in range(200):
                with contextlib.suppress(dns.exception.Timeout):
                    reply = await dns.asyncquery.udp(query, host, port=port, timeout=2)
                    if addresses(reply) == [address]:
                        return reply
                await asyncio.sleep(0.05)
            raise AssertionError(f"the worker never answered {address}")

        reply = await until(ADDRESS[AP])
        assert echo(reply) == [("2001:db8:1::", 48, 48)]
        zones.put([next_version(first, 2, ap="203.0.113.9")])  # one group, incrementally
        await until("203.0.113.9")
        # killed, it is started again steering as before, on the zone as published now
        os.kill(pool.pids[0], signal.SIGKILL)
        reply = await until("203.0.113.9")
        assert pool.restarts == 1
        assert echo(reply) == [("2001:db8:1::", 48, 48)]
        pool.set_steering(None)
        reply = await until(ADDRESS[US])
        assert echo(reply) == [("2001:db8:1::", 48, 0)]
    finally:
        await main.stop()
        await pool.stop()


# --- an incrementally updated snapshot answers as one built anew -------------------------------


def versions() -> list[ZoneContent]:
    """Versions sharing their static part: a group changes, goes, a steered set goes and
    comes back, the default answer changes under unchanged groups."""
    v1 = steered_zone(1)
    www, edge = v1.steered[WWW, "A"], v1.steered[EDGE, "CNAME"]
    fewer = SteeredSet(WWW, "A", US, {g: rs for g, rs in www.answers.items() if g != AP})
    changed_default = RecordSet(WWW, "A", 300, ("192.0.2.77",))
    out = [v1]

    def then(
        managed: dict[tuple[str, str], RecordSet], steered: dict[tuple[str, str], SteeredSet]
    ) -> None:
        out.append(
            ZoneContent(
                ORIGIN,
                soa(ORIGIN, len(out) + 1),
                managed={**v1.managed, **managed},
                static=v1.static,
                steered=steered,
            )
        )

    then(
        {},
        {
            (WWW, "A"): with_www(v1, EU, RecordSet(WWW, "A", 300, ("203.0.113.1",))).steered[
                WWW, "A"
            ],
            (EDGE, "CNAME"): edge,
        },
    )
    then({}, {(WWW, "A"): fewer, (EDGE, "CNAME"): edge})
    then({}, {(WWW, "A"): fewer})
    then(
        {(WWW, "A"): changed_default},
        {
            (WWW, "A"): SteeredSet(WWW, "A", US, {**fewer.answers, US: changed_default}),
            (EDGE, "CNAME"): edge,
        },
    )
    return out


def test_incremental_updates_answer_as_a_fresh_build(steer: Steering) -> None:
    history = versions()
    snapshot = ZoneSnapshot.build(history[:1])
    for old, new in itertools.pairwise(history):
        snapshot = snapshot.update([(old, new)])
        fresh = ZoneSnapshot.build([new])
        for name, rdtype in ((WWW, "A"), (EDGE, "A"), (f"alias.{ORIGIN}", "A"), (WWW, "AAAA")):
            for group in (US, EU, AP, "nowhere"):
                for client in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
                    query = dns.message.make_query(name, rdtype).to_wire()
                    updated = respond(snapshot, query, tcp=False, where=Where(steer, client))
                    built = respond(fresh, query, tcp=False, where=Where(steer, client))
                    assert updated == built, (new.soa.serial, name, rdtype, client)
                    pinned = respond(snapshot, query, tcp=False, where=Pinned(steer, WWW, group))
                    assert pinned == respond(
                        fresh, query, tcp=False, where=Pinned(steer, WWW, group)
                    )
