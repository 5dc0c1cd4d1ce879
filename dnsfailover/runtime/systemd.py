"""What the service tells whoever supervises it: systemd's notify protocol, and the engine
loop's heartbeat, which feeds systemd's watchdog and the API's /livez (Kubernetes).

`Supervision` belongs to the node: the engine loop beats through it while it waits, and a
reload goes through it.  `Supervisor` belongs to `serve`: it turns those beats into
`WATCHDOG=1`, and the node's state into `READY=1` (once the first decision is published and
the DNS server has answered a real query), `STATUS=`, `RELOADING=1` and `STOPPING=1`.

The protocol (sd_notify(3): newline-separated assignments in one datagram to the unix socket
named by $NOTIFY_SOCKET, a path or "@" for an abstract name) is written here in a few lines
rather than taken from a library: `systemd-python` needs libsystemd's headers and a
compiler, and `sdnotify` has been unmaintained since 2017.  Without $NOTIFY_SOCKET nothing is
sent and no socket is opened.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

if TYPE_CHECKING:
    from dnsfailover.api.ports import NodeView
    from dnsfailover.config.schema import Config

log = logging.getLogger("dnsfailover.service")

T = TypeVar("T")

BEAT = 5.0  # seconds between two beats of an idle engine loop
STALE_AFTER = 60.0  # /livez fails when the engine loop has not beaten for this long
READY_TRIES = 10  # self-queries (one second each) before `serve` gives up on READY=1


class Observer(Protocol):
    """Told what the engine loop does (the systemd `Supervisor`)."""

    def beat(self) -> None: ...

    def reloading(self) -> None: ...

    def reloaded(self) -> None: ...


class Supervision:
    """The node's side: the engine loop beats here at least every `period` seconds while it
    waits, and after every decision.  A loop that wedges (a decision that never ends, a
    blocked event loop) stops beating: `alive()` turns false after `stale_after` seconds and
    systemd's watchdog stops being fed."""

    def __init__(self, period: float = BEAT, stale_after: float = STALE_AFTER) -> None:
        self.period, self.stale_after = period, stale_after
        self.last: float | None = None  # monotonic time of the last beat
        self.beats = 0
        self.observer: Observer | None = None

    def beat(self) -> None:
        self.last = time.monotonic()
        self.beats += 1
        if self.observer is not None:
            self.observer.beat()

    def age(self) -> float | None:
        """Seconds since the engine loop last beat; None before it first ran."""
        return None if self.last is None else time.monotonic() - self.last

    def alive(self) -> bool:
        """The engine loop beat recently, or has not started yet (readiness covers that)."""
        age = self.age()
        return age is None or age <= self.stale_after

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:  # noqa: ASYNC109
        """`asyncio.wait_for(event.wait(), timeout)`, beating every `period` meanwhile.

        :raises TimeoutError: `timeout` seconds passed and `event` is still not set.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            self.beat()
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0 and not event.is_set():
                raise TimeoutError
            try:
                async with asyncio.timeout(self.period if left is None else min(left, self.period)):
                    await event.wait()
                return
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise

    async def reloading(self, work: Awaitable[T]) -> T:
        """Run a reload, telling the observer before and after (whatever its outcome)."""
        if self.observer is not None:
            self.observer.reloading()
        try:
            return await work
        finally:
            if self.observer is not None:
                self.observer.reloaded()


def notify_address(value: str | None) -> str | None:
    """The socket address $NOTIFY_SOCKET names: a path, or "@name" (abstract); None when
    unset or of a kind this does not speak (systemd 254's "vsock:")."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    return value if value.startswith("/") else None


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between two `WATCHDOG=1` (half of $WATCHDOG_USEC); None when systemd watches
    nothing, or watches another process ($WATCHDOG_PID)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0"))
        pid = int(environ.get("WATCHDOG_PID", str(os.getpid())))
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 2e6


class Notifier:
    """Sends sd_notify datagrams to `address`; does nothing when it is None."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._failed = False
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)  # never stalls the event loop, at worst drops one

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> None:
        if self._sock is None or self.address is None:
            return
        try:
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as e:  # systemd gone or its queue full: the next one may pass
            log.log(logging.DEBUG if self._failed else logging.WARNING,
                    "systemd: cannot notify %r: %s", self.address, e)  # fmt: skip
            self._failed = True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _first_tiers(config: Config) -> dict[str, str | None]:
    return {
        name: record.tiers[0].name if record.policy == "active-passive" else None
        for _origin, name, record in config.managed()
    }


def status_line(view: NodeView) -> str:
    """One line for `systemctl status`: names served and how they do, and what is wrong."""
    published = view.published
    if published is None:
        return "starting: no decision published yet"
    config, decided = view.config, published.decision.names
    counts: Counter[str] = Counter()
    # name -> its first tier (active-passive) or None: built once per config
    first = config.derived("systemd.first_tiers", _first_tiers)
    for name, tier in first.items():
        nd = decided.get(name)
        if nd is None:
            counts["undecided"] += 1
        elif nd.mode in ("all_down", "no_data"):
            counts["all down"] += 1
        elif tier is not None and nd.tier not in (None, tier):
            counts["failed over"] += 1
        elif nd.mode == "healthy":
            counts["healthy"] += 1
        else:
            counts[nd.mode.replace("_", " ")] += 1
    line = f"serving {len(first)} name(s) in {len(config.zones)} zone(s)"
    if counts:
        line += ": " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    cluster = view.cluster_status()
    if cluster.get("degraded"):
        line += f"; {cluster['degraded']}"
    if published.decision.frozen is not None:
        line += "; circuit breaker frozen"
    return line


class Supervisor:
    """`serve`'s side: tells systemd how the node does (see the module's docstring)."""

    def __init__(
        self, view: NodeView, supervision: Supervision, notifier: Notifier, watchdog: float | None
    ) -> None:
        self.view, self.notifier, self.watchdog = view, notifier, watchdog
        self._ready = False
        self._fed = 0.0  # monotonic time of the last WATCHDOG=1
        self._status = ""
        self._seen: tuple[object, object] = (None, None)  # what `_status` was made from
        if notifier.enabled:
            if watchdog is not None:  # beat at least twice per watchdog period
                supervision.period = min(supervision.period, watchdog)
            supervision.observer = self

    @classmethod
    def from_environ(
        cls, view: NodeView, supervision: Supervision, environ: Mapping[str, str] = os.environ
    ) -> Supervisor:
        address = notify_address(environ.get("NOTIFY_SOCKET"))
        watchdog = watchdog_interval(environ) if address is not None else None
        if address is not None:
            log.info(
                "systemd: notifying %s%s",
                environ["NOTIFY_SOCKET"],
                "" if watchdog is None else f", watchdog fed every {watchdog:g}s",
            )
        return cls(view, supervision, Notifier(address), watchdog)

    def starting(self) -> None:
        self.notifier.send("STATUS=starting: restoring state, probing every target once")

    async def ready(
        self, address: tuple[str, int], *, tries: int = READY_TRIES, wait: float = 1.0
    ) -> bool:
        """READY=1 once the DNS server at `address` answers a query (any rcode) within `wait`
        seconds; False (and no READY=1: systemd's start times out) when `tries` went
        unanswered."""
        if not self.notifier.enabled:
            return False
        host, port = address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        origin = next(iter(self.view.config.zones), ".")
        for _ in range(tries):
            query = dns.message.make_query(origin, dns.rdatatype.SOA)
            try:
                await dns.asyncquery.udp(query, host, port=port, timeout=wait)
            except (dns.exception.DNSException, OSError) as e:
                log.warning("systemd: the DNS server on %s:%d does not answer yet: %s", *address, e)
                continue
            self._ready = True
            self._seen = (self.view.published, self.view.cluster_status().get("degraded"))
            self._status = status_line(self.view)
            self.notifier.send("READY=1", f"STATUS={self._status}")
            self.beat()  # the watchdog is armed from here on: feed it at once
            return True
        log.error("systemd: the DNS server on %s:%d never answered; not ready", *address)
        return False

    def beat(self) -> None:
        """The engine loop is alive: feed the watchdog when due, and say what changed."""
        if not self._ready:
            return
        now = time.monotonic()
        lines = []
        if self.watchdog is not None and now - self._fed >= self.watchdog / 2:
            lines.append("WATCHDOG=1")
            self._fed = now
        # Counting every name costs at 10k names: only when the decision or etcd changed.
        seen = (self.view.published, self.view.cluster_status().get("degraded"))
        if seen[0] is not self._seen[0] or seen[1] != self._seen[1]:
            self._seen, status = seen, status_line(self.view)
            if status != self._status:
                lines.append(f"STATUS={status}")
                self._status = status
        if lines:
            self.notifier.send(*lines)

    def reloading(self) -> None:
        if not self._ready:  # a SIGHUP while starting: READY=1 comes from `ready` only
            return
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")

    def reloaded(self) -> None:
        if not self._ready:
            return
        self._status = status_line(self.view)
        self.notifier.send("READY=1", f"STATUS={self._status}")

    def stopping(self) -> None:
        self._ready = False
        self.notifier.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        self.notifier.close()
