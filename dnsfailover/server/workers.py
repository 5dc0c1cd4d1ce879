"""Extra processes that answer UDP queries on the same port (SO_REUSEPORT).

One Python process answers on one core.  With ``serve --workers N`` the main process
(probes, engine, store, TCP and zone transfers) binds its port with SO_REUSEPORT and starts
N-1 workers (spawned, not forked: the parent runs threads and an event loop) that bind the
same UDP port; the kernel spreads clients across the sockets by their address hash.  The
parent sends the zones once, then every publish as what it changed (`Update`: the managed
sets that changed and the new SOA, or a whole zone when more changed) down a pipe to each
worker, which makes its next snapshot from its own and swaps it in.  Steered sets travel
with them; the steering itself (`SteeringUpdate`: rules, database path, CIDR map) is sent
at start and on a reload, and each worker opens the database for itself.

A worker stops when its pipe closes, that is when the parent exits however it exits, on
SIGTERM, and, on Linux, when the parent dies (``PR_SET_PDEATHSIG``).  Workers serve UDP
only: TCP is the path for truncated answers and zone transfers, and transfers need the
parent's zone history and keys.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

import dns.name
import dns.tsig

from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.errors import DatabaseError
from dnsfailover.geo.locate import Locator
from dnsfailover.geo.nets import NetMap
from dnsfailover.geo.steer import Rule
from dnsfailover.geo.steering import Steering
from dnsfailover.model import Key, RecordSet, Soa, SteeredSet, ZoneContent
from dnsfailover.rdata import Labels, ZoneBuildError, name_labels
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.rrl import RrlSettings
from dnsfailover.server.signed import Keys
from dnsfailover.server.steered import DEFAULT_LIMITS
from dnsfailover.server.zone import ZoneSnapshot
from dnsfailover.tasks import die_with_parent, loop_factory

if TYPE_CHECKING:
    from dnsfailover.server.embedded import EmbeddedZones
    from dnsfailover.server.versions import ZoneChange

log = logging.getLogger("dnsfailover.workers")

READY_TIMEOUT = 30.0
"""Seconds a worker may take to import, bind and report (a spawn re-imports everything)."""
STOP_TIMEOUT = 5.0
Message: TypeAlias = "list[ZoneContent] | list[Update] | KeyringUpdate | SteeringUpdate"


class WorkerPool:
    """``count`` worker processes serving UDP on ``host``:``port`` with SO_REUSEPORT."""

    def __init__(
        self,
        count: int,
        host: str,
        port: int,
        *,
        rrl: RrlSettings | None = None,
        log_level: int = logging.WARNING,
    ) -> None:
        self.count = count
        self._host, self._port = host, port
        self._rrl = rrl
        self._log_level = log_level
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="dnsfailover-workers")
        self.pids: list[int] = []

    def publish(self, _zones: EmbeddedZones, changes: Sequence[ZoneChange]) -> None:
        """An :meth:`EmbeddedZones.subscribe` listener: send what changed to every worker."""
        self.send([_update(c) for c in changes])

    def send(self, message: Message) -> Future[None]:
        """Queue a message for every worker; sends happen in order, off the event loop."""
        return self._sender.submit(self._send_all, message)

    def set_keyring(self, keyring: Keys) -> Future[None]:
        """The TSIG keys signed queries are checked against, at start and on a reload."""
        return self.send(KeyringUpdate(dict(keyring)))

    def set_steering(
        self, steering: Steering | None, limits: SourceLimits = DEFAULT_LIMITS
    ) -> Future[None]:
        """Steer as ``steering`` does (see `DnsServer.set_steering`), at start and on a
        reload: each worker opens the database file itself (a reader does not pickle)."""
        return self.send(SteeringUpdate.of(steering, limits))

    def _send_all(self, zones: Message | None) -> None:
        for index, conn in enumerate(self._conns):
            try:
                conn.send(zones)
            except (OSError, ValueError) as e:  # a dead worker: the others keep serving
                log.warning("workers: cannot reach worker %d: %s", index + 1, e)

    async def start(self, zones: list[ZoneContent], keyring: Keys | None = None) -> list[int]:
        """Spawn the workers with ``zones`` (and the TSIG ``keyring``, so a signed query is
        answered by whichever process receives it); return their pids once all have bound
        the port.

        :raises OSError: if a worker cannot bind or does not report in time.
        """
        ctx = multiprocessing.get_context("spawn")
        for index in range(1, self.count + 1):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(index, self._host, self._port, child, self._rrl, self._log_level),
                name=f"dnsfailover-worker-{index}",
                daemon=True,
            )
            self._conns.append(parent)
            self._procs.append(proc)
            await asyncio.to_thread(proc.start)
            child.close()
        self.send(zones)  # the first message: nothing published later can overtake it
        if keyring:
            self.set_keyring(keyring)
        for index, conn in enumerate(self._conns, start=1):
            ready = await asyncio.to_thread(conn.poll, READY_TIMEOUT)
            try:
                status, detail = conn.recv() if ready else ("error", "no answer")
            except EOFError:
                status, detail = "error", "exited"
            if status != "ready":
                raise OSError(f"worker {index} did not start: {detail}")
            self.pids.append(int(detail))
        log.info("workers: %d serving udp port %d: pids %s", self.count, self._port, self.pids)
        return self.pids

    async def stop(self) -> None:
        """Ask every worker to stop (close its pipe), wait, and kill what is left."""
        self._sender.submit(self._send_all, None)
        await asyncio.to_thread(self._sender.shutdown, True)
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            if proc.pid is None:
                continue
            await asyncio.to_thread(proc.join, STOP_TIMEOUT)
            if proc.exitcode is None:
                proc.kill()
                await asyncio.to_thread(proc.join, STOP_TIMEOUT)
            proc.close()
        self._conns, self._procs = [], []


def worker_main(
    index: int,
    host: str,
    port: int,
    conn: Connection,
    rrl: RrlSettings | None,
    log_level: int,
) -> None:
    """A worker process's entry point (module level: the spawn context imports it)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s",
    )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        try:
            runner.run(_serve(index, host, port, conn, rrl))
        finally:
            conn.close()


async def _serve(
    index: int, host: str, port: int, conn: Connection, rrl: RrlSettings | None
) -> None:
    loop = asyncio.get_running_loop()
    try:
        zones: list[ZoneContent] | None = await asyncio.to_thread(conn.recv)
    except EOFError:
        return
    if zones is None:
        return
    server = DnsServer(
        ZoneSnapshot.build(zones),
        host,
        port,
        reuse_port=True,
        udp_only=True,
        udp_thread=True,  # nothing else runs here: blocking calls are cheapest per datagram
        rrl=rrl,
    )
    try:
        await server.start()
    except OSError as e:
        conn.send(("error", f"cannot bind udp {host}:{port}: {e}"))
        return
    stop = asyncio.Event()
    contents = {z.origin: z for z in zones}

    def receive() -> None:
        try:
            message: Any = conn.recv()
        except (EOFError, OSError):
            message = None
        if message is None:
            stop.set()
            return
        if isinstance(message, KeyringUpdate):
            server.keyring = MappingProxyType(message.keys)
            return
        if isinstance(message, SteeringUpdate):
            try:
                steering = message.steering()
            except DatabaseError as e:
                log.error("steering: %s; still steering as before", e)
                return
            # The old locator is not closed: a query in flight on the UDP thread may still
            # read it; it is released with the last reference.
            server.set_steering(steering, limits=message.limits)
            return
        try:
            versions = [_apply(contents, update) for update in message]
            server.publish(server.snapshot.update(versions), _names(message))
        except ZoneBuildError:
            log.exception("publish: cannot build the snapshot; still serving the last one")
            return
        contents.update((new.origin, new) for _old, new in versions)

    loop.add_reader(conn.fileno(), receive)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    conn.send(("ready", os.getpid()))
    log.info("start: worker %d pid %d serving udp %s port %d", index, os.getpid(), host, port)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await server.stop()


@dataclass(frozen=True, slots=True)
class KeyringUpdate:
    """New TSIG keys, as sent to a worker (dnspython's keys pickle)."""

    keys: dict[dns.name.Name, dns.tsig.Key]


@dataclass(frozen=True, slots=True)
class SteeringUpdate:
    """A `Steering`, as sent to a worker: its rules and its locator's database path and
    CIDR map (None rules: nobody is steered)."""

    rules: dict[str, Rule] | None
    database: str | None
    nets: NetMap | None
    limits: SourceLimits

    @classmethod
    def of(cls, steering: Steering | None, limits: SourceLimits) -> SteeringUpdate:
        if steering is None:
            return cls(None, None, None, limits)
        locator = steering.locator
        if locator is None:
            return cls(dict(steering.rules), None, None, limits)
        path = str(locator.path) if locator.path is not None else None
        return cls(dict(steering.rules), path, locator.nets, limits)

    def steering(self) -> Steering | None:
        """The steering again, with a locator of this process's own.

        :raises DatabaseError: if the database does not open here.
        """
        if self.rules is None:
            return None
        if self.database is None and self.nets is None:
            return Steering(self.rules)
        return Steering(self.rules, Locator(self.database, self.nets))


@dataclass(frozen=True, slots=True)
class Update:
    """One zone's publish, as sent to a worker: the managed sets that changed and the new SOA
    when only those changed (`zone` None), else the whole new zone."""

    origin: str
    soa: Soa
    managed: dict[Key, RecordSet]
    zone: ZoneContent | None
    names: frozenset[str]  # whose answers changed (for the fast path); empty with `zone`
    steered: dict[Key, SteeredSet] = field(default_factory=dict)  # changed or new ones
    unsteered: tuple[Key, ...] = ()  # steered sets gone


def _update(change: ZoneChange) -> Update:
    new, delta = change.new, change.delta
    if delta is None or delta.full:
        return Update(new.origin, new.soa, {}, new, frozenset())
    managed = {(rs.name, rs.rtype): rs for rs in delta.added}
    if not delta.steered or change.old is None:
        return Update(new.origin, new.soa, managed, None, delta.names)
    before = change.old.steered
    steered = {k: st for k, st in new.steered.items() if (o := before.get(k)) is not st and o != st}
    gone = tuple(k for k in before if k not in new.steered)
    return Update(new.origin, new.soa, managed, None, delta.names, steered, gone)


def _apply(
    contents: dict[str, ZoneContent], update: Update
) -> tuple[ZoneContent | None, ZoneContent]:
    """(the worker's version of the zone, the next one) for `ZoneSnapshot.update`."""
    old = contents.get(update.origin)
    if update.zone is not None or old is None:
        assert update.zone is not None, "a worker is sent every zone before any update"
        return old, update.zone
    managed = {**old.managed, **update.managed}
    steered = old.steered
    if update.steered or update.unsteered:
        steered = {k: st for k, st in old.steered.items() if k not in update.unsteered}
        steered.update(update.steered)
    return old, ZoneContent(
        old.origin, update.soa, managed=managed, static=old.static, steered=steered
    )


def _names(updates: list[Update]) -> frozenset[Labels] | None:
    if any(u.zone is not None for u in updates):
        return None
    return frozenset(name_labels(n) for u in updates for n in u.names)
