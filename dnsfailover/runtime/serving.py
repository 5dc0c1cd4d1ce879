"""The DNS-facing parts of a node: the authoritative server, zone transfers, NOTIFY to
secondaries, and the extra DNS processes of `--workers`."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from dnsfailover.config.geocheck import open_steering, steering_rules
from dnsfailover.config.schema import Config
from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.steering import Steering
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.notify import Notifier, secondaries
from dnsfailover.server.rrl import RrlSettings
from dnsfailover.server.tsig import make_keyring
from dnsfailover.server.workers import WorkerPool
from dnsfailover.server.xfr import TransferHandler, transfer_acl

log = logging.getLogger("dnsfailover.service")


def source_limits(config: Config) -> SourceLimits:
    ecs = config.geo.ecs
    return SourceLimits(ecs.max_source_v4, ecs.max_source_v6)


def rrl_settings(config: Config) -> RrlSettings:
    rrl = config.server.rrl
    return RrlSettings(rrl.responses_per_second, rrl.slip, rrl.window)


class Serving:
    """Serves `embedded` on `host:port` (UDP and TCP) once started; `workers` counts the
    DNS-serving processes, this one included."""

    def __init__(self, embedded: EmbeddedZones, host: str, port: int, workers: int) -> None:
        self.embedded = embedded
        self.server: DnsServer | None = None
        # where clients of steered names are (None: nothing is steered)
        self.steering: Steering | None = None
        self.limits = SourceLimits()
        self._host, self._port, self._workers = host, port, workers
        self._transfers: TransferHandler | None = None
        self._notifier: Notifier | None = None
        self._pool: WorkerPool | None = None

    async def start(self, config: Config) -> tuple[str, int]:
        """Bind on the snapshot published so far; returns the address actually bound."""
        keyring = await asyncio.to_thread(make_keyring, config.tsig_keys)  # reads files
        self.steering = await asyncio.to_thread(open_steering, config)  # reads the database
        self.limits = source_limits(config)
        self._transfers = TransferHandler(self.embedded, transfer_acl(config), keyring)
        self.server = DnsServer(
            self.embedded.snapshot,
            self._host,
            self._port,
            tcp_handler=self._transfers,
            reuse_port=self._workers > 1,
            rrl=rrl_settings(config),
            # A blocking recvfrom/sendto thread costs less per datagram than a loop callback
            # (bench/dns_qps.py); DNSFAILOVER_UDP=loop answers on the event loop instead,
            # DNSFAILOVER_UDP=python on the thread without the C hit path (for comparison).
            udp_thread=os.environ.get("DNSFAILOVER_UDP", "thread") != "loop",
            c_hits=os.environ.get("DNSFAILOVER_UDP", "thread") != "python",
            steering=self.steering,
            limits=self.limits,
        )
        self.server.keyring = keyring  # signed queries of any type are checked and signed
        bound = await self.server.start()
        self.embedded.attach(self.server)
        if self._workers > 1:
            level = log.getEffectiveLevel()
            embedded = self.embedded
            self._pool = WorkerPool(
                self._workers - 1,
                *bound,
                lambda: embedded.contents.values(),  # as published now: a restart's zones
                rrl=rrl_settings(config),
                log_level=level,
            )
            self.embedded.subscribe(self._pool.publish)
            await self._pool.start(keyring, self.steering, self.limits)
        # NOTIFY secondaries of every later serial, and now: they may hold an older one.
        self._notifier = Notifier(secondaries(config, keyring))
        self.embedded.subscribe(self._notifier)
        self._notifier.notify(self.embedded.contents.values())
        return bound

    async def restage(self, old: Config, config: Config) -> Steering | None:
        """A reload's steering, built on a thread: the running one when neither the rules,
        the CIDR map nor the database file changed; else the new config's rules over the
        database read again (a new release of the file is picked up here).

        :raises DatabaseError: the database does not open (the reload fails, nothing changes).
        """
        current = self.steering
        same = (
            current is not None
            and (old.geo.database_path, old.geo.nets) == (config.geo.database_path, config.geo.nets)
            and steering_rules(config) == current.rules
        )
        if current is not None and same:
            fresh = await asyncio.to_thread(current.reloaded)
            return fresh if fresh is not None else current
        return await asyncio.to_thread(open_steering, config)

    async def resteer(self, config: Config, steering: Steering | None) -> None:
        """Swap in a reload's steering (one step: a query sees the old or the new), here and
        in the worker processes."""
        if steering is self.steering and source_limits(config) == self.limits:
            return
        self.steering, self.limits = steering, source_limits(config)
        if self.server is not None:
            self.server.set_steering(steering, limits=self.limits)
        if self._pool is not None:
            await asyncio.wrap_future(self._pool.set_steering(steering, self.limits))

    async def retarget(self, old: Config, config: Config) -> None:
        """A reload: new transfer ACLs, TSIG keys and NOTIFY targets, when they changed."""
        if (config.tsig_keys, [z.allow_transfer for z in config.zones.values()]) == (
            old.tsig_keys,
            [z.allow_transfer for z in old.zones.values()],
        ) and [z.also_notify for z in config.zones.values()] == [
            z.also_notify for z in old.zones.values()
        ]:
            return
        keyring = await asyncio.to_thread(make_keyring, config.tsig_keys)  # reads files
        if self._transfers is not None:
            self._transfers.update(transfer_acl(config), keyring)
        if self.server is not None:
            self.server.keyring = keyring
        if self._pool is not None:
            self._pool.set_keyring(keyring)
        if self._notifier is not None:
            self._notifier.retarget(secondaries(config, keyring))

    def workers_status(self) -> dict[str, Any]:
        """The `--workers` processes besides this one: how many, alive, their pids, restarts
        and the problem while one is down (count 0 without `--workers`)."""
        if self._pool is None:
            return {"count": 0, "alive": 0, "pids": [], "restarts": 0, "problem": None,
                    "responses": []}  # fmt: skip
        return self._pool.status()

    def response_counts(self) -> list[int] | None:
        """Responses sent by rcode (`DnsServer.response_counts`), the `--workers`
        processes' included; None before the server started."""
        if self.server is None:
            return None
        counts = self.server.response_counts()
        if self._pool is not None:
            counts = [a + b for a, b in zip(counts, self._pool.response_counts(), strict=True)]
        return counts

    async def stop_notify(self) -> None:
        if self._notifier is not None:
            await self._notifier.stop()

    async def stop(self) -> None:
        await self.stop_notify()
        if self._pool is not None:
            await self._pool.stop()
        if self.server is not None:
            await self.server.stop()
