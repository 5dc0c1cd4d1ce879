"""The worker process of `serve --workers N` (see `workers.py`), and the messages the parent
sends it down its pipe.

The worker reports ``("hello", pid)`` once it runs, receives a `Start` (the zones as
published at that moment, the TSIG keys and the steering), binds the UDP port with
SO_REUSEPORT and reports ``("ready", pid)`` (or ``("error", why)``).  Then every message is
a publish (a list of `Update`), a `KeyringUpdate` or a `SteeringUpdate`, applied in the
order sent; None or the end of the pipe stops it.  SIGINT and SIGTERM are ignored while
the parent lives (they reach the whole process group: the parent decides when its workers
stop), so a worker that exits is one that died.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
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
from dnsfailover.server.steered import DEFAULT_LIMITS
from dnsfailover.server.zone import ZoneSnapshot
from dnsfailover.tasks import die_with_parent, loop_factory

if TYPE_CHECKING:
    from dnsfailover.server.versions import ZoneChange

log = logging.getLogger("dnsfailover.workers")

COUNTS_PERIOD = 1.0
"""Seconds between two writes of a worker's response counts for the parent."""

Message: TypeAlias = "Start | list[Update] | KeyringUpdate | SteeringUpdate"


def worker_main(
    index: int,
    host: str,
    port: int,
    conn: Connection,
    rrl: RrlSettings | None,
    log_level: int,
    counts: Any = None,
) -> None:
    """A worker process's entry point (module level: the spawn context imports it);
    `counts`: the array shared with the parent that it writes its response counts into."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s",
    )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        try:
            runner.run(_serve(index, host, port, conn, rrl, counts))
        finally:
            conn.close()


def _steering(update: SteeringUpdate | None) -> Steering | None:
    try:
        return None if update is None else update.steering()
    except DatabaseError as e:
        log.error("steering: %s; nobody is steered", e)
        return None


async def _serve(
    index: int, host: str, port: int, conn: Connection, rrl: RrlSettings | None, counts: Any
) -> None:
    loop = asyncio.get_running_loop()
    parent = os.getppid()
    conn.send(("hello", os.getpid()))  # imported and listening: the parent sends the zones
    try:
        start: Start | None = await asyncio.to_thread(conn.recv)
    except EOFError:
        return
    if start is None:
        return
    server = DnsServer(
        ZoneSnapshot.build(start.zones),
        host,
        port,
        reuse_port=True,
        udp_only=True,
        udp_thread=True,  # nothing else runs here: blocking calls are cheapest per datagram
        rrl=rrl,
        steering=_steering(start.steering),
        limits=start.steering.limits if start.steering is not None else DEFAULT_LIMITS,
    )
    if start.keyring is not None:
        server.keyring = MappingProxyType(start.keyring.keys)
    try:
        await server.start()
    except OSError as e:
        conn.send(("error", f"cannot bind udp {host}:{port}: {e}"))
        return
    stop = asyncio.Event()
    contents = {z.origin: z for z in start.zones}

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

    def terminate() -> None:
        # `serve` stops its workers itself (through the pipe), after the rest of the node:
        # a SIGTERM to the whole group (systemd's stop) must not look like a worker dying.
        # One sent because the parent died (PR_SET_PDEATHSIG: we have a new parent) stops.
        if os.getppid() != parent:
            stop.set()
            return
        log.warning("SIGTERM ignored: serve stops its workers (stop serve, or SIGKILL this one)")

    loop.add_signal_handler(signal.SIGTERM, terminate)

    def count() -> None:  # what the parent's /metrics add up
        if counts is not None:
            counts[:] = server.response_counts()

    async def counting() -> None:
        while True:
            await asyncio.sleep(COUNTS_PERIOD)
            count()

    counter = loop.create_task(counting())
    conn.send(("ready", os.getpid()))
    log.info("start: worker %d pid %d serving udp %s port %d", index, os.getpid(), host, port)
    try:
        await stop.wait()
    finally:
        counter.cancel()
        loop.remove_reader(conn.fileno())
        await server.stop()
        count()


@dataclass(frozen=True, slots=True)
class Start:
    """A worker's first message: the zones as published when it is sent, and the TSIG keys
    and steering last sent to every worker (None: none yet)."""

    zones: list[ZoneContent]
    keyring: KeyringUpdate | None
    steering: SteeringUpdate | None


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


def update_of(change: ZoneChange) -> Update:
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
