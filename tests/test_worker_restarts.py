"""A `WorkerPool` process that dies is started again with every publish; a stopping pool
starts nothing.

Real spawned worker processes on 127.0.0.1 port 0 (next to a real `DnsServer` sharing the
port, as in `serve --workers`), a real `EmbeddedZones` publishing, real dnspython clients.
A client socket keeps its source port, so the kernel gives all its queries to one process:
the CH TXT `id.server.` query tells which.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import pytest
from conftest_server import soa

from dnsfailover.model import RecordSet, ZoneContent
from dnsfailover.server import DnsServer
from dnsfailover.server import workers as workers_module
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.workers import (
    RESTART_FIRST,
    RESTART_MAX,
    WorkerPool,
    restart_delay,
)

ORIGIN = "restarts.test."
STATIC = (
    RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
    RecordSet(f"ns1.{ORIGIN}", "A", 300, ("127.0.0.1",)),
)
WAIT = 60.0  # seconds a worker gets to be started again (spawning re-imports everything)


def version(serial: int) -> ZoneContent:
    """Version `serial`: one managed name per version so far (`n1` ... `n<serial>`), so
    an update that never reached a worker leaves a name missing there."""
    managed = {
        (f"n{i}.{ORIGIN}", "A"): RecordSet(f"n{i}.{ORIGIN}", "A", 300, (f"192.0.2.{i % 250}",))
        for i in range(1, serial + 1)
    }
    return ZoneContent(ORIGIN, soa(ORIGIN, serial), managed=managed, static=STATIC)


@dataclass
class Served:
    zones: EmbeddedZones
    main: DnsServer
    pool: WorkerPool
    port: int


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """One worker beside a main server on the same port, both attached to the zones."""
    zones = EmbeddedZones()
    zones.put([version(1)])
    main = DnsServer(zones.snapshot, port=0, reuse_port=True, identity="main")
    _host, port = await main.start()
    zones.attach(main)
    pool = WorkerPool(1, "127.0.0.1", port, lambda: zones.contents.values())
    zones.subscribe(pool.publish)
    try:
        await pool.start()
        yield Served(zones, main, pool, port)
    finally:
        await pool.stop()
        await main.stop()


async def ask_from(sock: socket.socket, port: int, name: str, rtype: str) -> dns.message.Message:
    """One query from `sock` (its source port kept: the same process answers)."""
    rdclass = dns.rdataclass.CH if name == "id.server." else dns.rdataclass.IN
    query = dns.message.make_query(name, rtype, rdclass)
    return await asyncio.to_thread(
        dns.query.udp, query, "127.0.0.1", port=port, timeout=2, sock=sock
    )


async def from_process(
    port: int, identity: str, then: Callable[[socket.socket], Awaitable[None]]
) -> None:
    """Run `then` with a client socket whose queries reach the process `identity`."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.bind(("127.0.0.1", 0))
            reply = await ask_from(raw, port, "id.server.", "TXT")
            if reply.answer and reply.answer[0][0].strings[0].decode() == identity:
                await then(raw)
                return
    raise AssertionError(f"no client socket reached {identity}")


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not predicate():  # noqa: ASYNC110 - processes and logs, not events
            await asyncio.sleep(0.02)


async def test_a_killed_worker_is_started_again_with_every_publish_made_meanwhile(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dnsfailover.workers")
    pool, zones = served.pool, served.zones
    [first] = pool.pids
    os.kill(first, signal.SIGKILL)
    serial, while_down = 1, 0

    # Publish every 20 ms from the kill until well after the new process serves: some land
    # while it is down (its `Start` must hold them), some while it starts, some after.
    async def publishing() -> None:
        nonlocal serial, while_down
        after = 0
        while after < 20:
            serial += 1
            zones.put([version(serial)])
            while_down += pool.status()["alive"] == 0
            after += pool.restarts > 0
            await asyncio.sleep(0.02)

    await asyncio.wait_for(publishing(), WAIT)
    assert pool.restarts == 1
    assert while_down > 0
    [second] = pool.pids
    assert second != first
    assert pool.status()["problem"] is None

    async def check(sock: socket.socket) -> None:
        # the new process takes the last updates in order: wait for the last serial
        for _ in range(500):
            reply = await ask_from(sock, served.port, ORIGIN, "SOA")
            if reply.answer[0][0].serial == serial:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"worker serves serial {reply.answer[0][0].serial}, not {serial}")
        for i in range(1, serial + 1):
            reply = await ask_from(sock, served.port, f"n{i}.{ORIGIN}", "A")
            assert [rd.to_text() for rs in reply.answer for rd in rs] == [f"192.0.2.{i % 250}"]

    await from_process(served.port, f"dnsfailover-{second}", check)
    died = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(" after ")[0] for r in died] == [
        f"workers: worker 1 (pid {first}) was killed by SIGKILL"
    ]
    assert any(
        r.getMessage() == f"workers: worker 1 started again: pid {second} (restart 1)"
        for r in caplog.records
    )


async def test_a_worker_that_cannot_start_again_is_retried_later_not_in_a_loop(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """The port taken by someone else: each try fails at its bind; the waits double."""
    pool = served.pool
    await served.main.stop()
    os.kill(pool.pids[0], signal.SIGKILL)
    await until(lambda: "was killed by SIGKILL" in caplog.text)  # reaped: its socket closed
    # the port free (for the first wait, 1 s), then taken without SO_REUSEPORT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", served.port))
        await until(lambda: "next try in 4s" in caplog.text)
        assert pool.status()["alive"] == 0
        assert "worker process(es) 1 of 1 down" in str(pool.status()["problem"])
    tries = [r.getMessage() for r in caplog.records if "cannot start worker 1" in r.getMessage()]
    assert len(tries) == 2, tries  # after 1 s and 2 s: not a busy loop
    assert all("cannot bind udp" in t for t in tries)
    await until(lambda: pool.restarts == 1)  # the port free again: the next try serves
    assert pool.status() == {
        "count": 1, "alive": 1, "pids": pool.pids, "restarts": 1, "problem": None,
        "responses": [0],
    }  # fmt: skip


async def test_a_stopping_pool_starts_nothing_again(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping ends every worker (their pipes close): none is started again, not even one
    that had died and waits for its restart."""
    monkeypatch.setattr(workers_module, "RESTART_FIRST", 0.5)
    pool = served.pool
    os.kill(pool.pids[0], signal.SIGKILL)
    await until(lambda: pool.status()["alive"] == 0)
    await pool.stop()
    assert pool.status()["alive"] == 0
    await asyncio.sleep(1.5)  # past the restart that was due
    assert pool.restarts == 0
    assert [p for p in multiprocessing.active_children() if "worker" in p.name] == []
    assert "started again" not in caplog.text


async def test_a_stopped_pool_does_not_restart_the_workers_it_stops() -> None:
    zones = EmbeddedZones()
    zones.put([version(1)])
    pool = WorkerPool(2, "127.0.0.1", 0, lambda: zones.contents.values())
    # port 0 with SO_REUSEPORT: each worker binds a port of its own; enough here
    pids = await pool.start()
    assert len(pids) == 2
    await pool.stop()
    await asyncio.sleep(1.5)  # past RESTART_FIRST
    assert pool.restarts == 0
    assert [p for p in multiprocessing.active_children() if "worker" in p.name] == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_restart_wait_doubles_up_to_30s_and_starts_over_after_a_minute_served() -> None:
    waits = [restart_delay(None, 0.0)]
    for _ in range(8):
        waits.append(restart_delay(waits[-1], 0.5))  # dies again at once
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert restart_delay(RESTART_MAX, 60.0) == RESTART_FIRST
    assert restart_delay(8.0, 59.0) == 16.0
