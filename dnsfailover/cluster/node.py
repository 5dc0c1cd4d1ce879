"""One node's membership in an etcd-backed cluster: shared reports, election, the decision.

A background session connects, reads everything under the prefix, delivers it through
the callbacks, then watches the prefix from the next revision while it keeps its lease
alive (every ttl/3) and writes this node's reports and beat.  Any failure ends the session
and a new one starts with backoff: the node keeps serving its last decision meanwhile
(static stability) and reports itself degraded through `on_connected(False)`.

Leadership is the `{prefix}/leader` key under the node's lease; its create revision is the
term and the fencing token: `publish` only writes when the leader key still has it, so an
old leader that was paused or partitioned can never overwrite a newer one's decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aetcd

from dnsfailover.backoff import Backoff
from dnsfailover.cluster import codec
from dnsfailover.cluster.etcd import (
    ClusterUnavailable,
    Credentials,
    load_credentials,
    make_client,
    read_prefix,
)
from dnsfailover.cluster.keys import Keys
from dnsfailover.cluster.outbox import Outbox, call
from dnsfailover.cluster.types import NameEntry, NodeBeat, Published, RegionReport, SharedDecision
from dnsfailover.cluster.view import View
from dnsfailover.config.cluster import ClusterConfig
from dnsfailover.engine.overrides import Override
from dnsfailover.tasks import cancel_and_wait

__all__ = ["INLINE_ENTRIES", "ClusterUnavailable", "EtcdCluster"]

log = logging.getLogger("dnsfailover.cluster")

_OPS_PER_TXN = 100  # etcd's default --max-txn-ops is 128
_BYTES_PER_TXN = 256 * 1024  # etcd's default --max-request-bytes is 1.5 MiB
INLINE_ENTRIES = 500  # a publish of more is packed and encoded on a thread: keep-alives go on


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _dumps(items: list[tuple[str, NameEntry]]) -> list[bytes]:
    return [codec.dumps(entry) for _name, entry in items]


def _why(exc: BaseException | None) -> str:
    exc = None if exc is None else _first_leaf(exc)
    return "session ended" if exc is None else f"{type(exc).__name__}: {exc}".strip()


class EtcdCluster:
    """This node's link to the cluster; see the module docstring.  Callbacks run on the loop."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        node: str,
        region: str,
        on_reports: Callable[[list[RegionReport]], None],
        on_reports_gone: Callable[[str, str], None],
        on_beat: Callable[[NodeBeat], None],
        on_decision: Callable[[Published], None],
        on_overrides: Callable[[list[Override]], None],
        on_leader: Callable[[bool], None],
        on_connected: Callable[[bool], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = config
        self._node, self._region = node, region
        self._on_leader, self._on_connected = on_leader, on_connected
        self._clock = clock
        self._keys = Keys(config.etcd.prefix)
        self._view = View(self._keys, node)
        self._out = Outbox(on_reports, on_reports_gone, on_beat, on_decision, on_overrides,
                           self._view.override_list)  # fmt: skip
        self._backoff = Backoff(base=0.1, cap=1.0)
        self._creds = Credentials()
        self._client: Any = None  # aetcd.Client of the current session
        self._endpoint = 0
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()  # the first session connected or failed
        self._stopping = False
        self._connected = False
        self._told = False  # on_connected was called at least once
        self._down_since: float | None = None
        self._lease: int | None = None
        self._ttl = float(config.lease_ttl)
        self._deadline = 0.0  # loop time when our lease may have expired in etcd
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._lease_lock = asyncio.Lock()
        self._leader = False
        self._term: int | None = None
        self._mine: dict[str, RegionReport] = {}  # latest report per target, re-put on a new lease
        self._dirty: dict[str, RegionReport] = {}
        self._beat: NodeBeat | None = None
        self._beat_dirty = False
        self._wake = asyncio.Event()
        self._leader_seen = asyncio.Event()  # the watch saw the leader key change
        self.publish_error = ""  # why the last publish wrote nothing ("" when it did)

    # -- what the service reads ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def leader(self) -> bool:
        return self._leader

    @property
    def term(self) -> int | None:
        return self._term

    @property
    def last_decision(self) -> SharedDecision | None:
        """The newest head."""
        return self._view.decision

    @property
    def leader_node(self) -> str | None:
        """Who holds the leader key, as last seen (None when nobody or unknown)."""
        return None if self._view.leader is None else self._view.leader.node

    @property
    def degraded_since(self) -> float | None:
        """Wall-clock time (the `clock`) since which etcd has been unreachable."""
        return self._down_since

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background; wait at most one call timeout for the first outcome.

        :raises ClusterConfigError: the password variable or a TLS file is missing.
        """
        if self._task is not None:
            return
        self._creds = await load_credentials(self._cfg.etcd)
        self._task = asyncio.create_task(self._run(), name=f"etcd-cluster-{self._node}")
        # If etcd is slow or paused the session keeps trying in the background.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), self._cfg.etcd.timeout + 0.5)

    async def stop(self) -> None:
        """Resign: revoke the lease so the others take over (and drop our reports) at once."""
        self._stopping = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        self._out.cancel()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        if self._leader:
            self._lose("stopping")
        client, lease = self._client, self._lease
        self._lease = None
        if client is not None and lease is not None:
            try:
                await asyncio.wait_for(client.revoke_lease(lease), self._cfg.etcd.timeout)
            except Exception as e:  # the lease then expires on its own after the TTL
                log.warning("stop: cannot revoke the lease: %s", _why(e))
        await self._drop_client()
        self._connected = False

    # -- writes ------------------------------------------------------------------------------

    def report(self, reports: Iterable[RegionReport]) -> None:
        """Queue reports to write now; during a write in flight the latest per target waits."""
        for r in reports:
            self._mine[r.target] = r
            self._dirty[r.target] = r
        self._wake.set()

    def beat(self, beat: NodeBeat) -> None:
        """Queue this node's beat; the latest one wins."""
        self._beat = beat
        self._beat_dirty = True
        self._wake.set()

    async def publish(
        self, decision: SharedDecision, entries: Mapping[str, NameEntry] | None = None
    ) -> bool:
        """Write the decision if we still hold the leader key of `decision.term` (fenced): the
        name entries first, then the head that brings them into effect.

        etcd takes at most 128 operations per transaction, so many entries (a regional
        outage) go in several, each fenced, and the head in the last: a node serves none of
        them before the head is there, and a leader fenced out half-way wrote nothing any
        node serves.

        :return: False when not leader, fenced out (leadership is then lost) or etcd failed.
        """
        client, term = self._client, self._term
        if not self._holding() or client is None or term is None:
            self.publish_error = "not the leader" if self._connected else "etcd unreachable"
            return False
        if decision.term != term:
            log.warning("publish: decision of term %s, ours is %s", decision.term, term)
            self.publish_error = f"a decision of term {decision.term}, ours is {term}"
            return False
        t = client.transactions
        items = list((entries or {}).items())
        values = (
            await asyncio.to_thread(_dumps, items) if len(items) > INLINE_ENTRIES else _dumps(items)
        )
        batches: list[list[Any]] = [[]]
        size = 0
        for (name, _entry), value in zip(items, values, strict=True):
            key = self._keys.name(name)
            full = len(batches[-1]) >= _OPS_PER_TXN or size + len(value) > _BYTES_PER_TXN
            if full and batches[-1]:
                batches.append([])
                size = 0
            batches[-1].append(t.put(key, value))
            size += len(key) + len(value)
        batches[-1].append(t.put(self._keys.decision, codec.dumps(decision)))
        for batch in batches:
            if not self._holding():
                self.publish_error = "leadership lost while publishing"
                return False  # what went out is never served (no head)
            try:
                ok, _ = await client.transaction(
                    compare=[t.create(self._keys.leader) == term], success=batch, failure=[]
                )
            except Exception as e:
                self.publish_error = f"etcd: {_why(e)}"
                # the node's link logs it at ERROR, once per streak, and retries
                log.debug("publish: term=%s failed: %s", term, self.publish_error)
                return False
            if not ok:
                self.publish_error = f"fenced: the leader key no longer has term {term}"
                self._lose(f"publish {self.publish_error}")
                return False
        self.publish_error = ""
        return True

    @property
    def names(self) -> Mapping[str, NameEntry]:
        """The name entries in effect (those the newest head brought in)."""
        return self._view.names

    @property
    def seq(self) -> int:
        """The newest decision number written to etcd (staged entries included)."""
        return self._view.seq

    async def still_leader(self) -> bool:
        """Confirm with a linearizable read that the leader key is still ours (our term)."""
        client = self._client
        if not self._holding() or client is None:
            return False
        try:
            kv = await client.get(self._keys.leader)
        except Exception as e:
            log.warning("leader: cannot confirm term=%s: %s", self._term, _why(e))
            return False
        if kv is None or kv.create_revision != self._term or kv.lease != self._lease:
            self._lose("the leader key is no longer ours")
            return False
        return self._holding()

    async def put_override(self, override: Override) -> None:
        """Store an override (no lease: it outlives every node).

        :raises ClusterUnavailable: etcd cannot be reached; nothing was stored.
        """
        client = self._require_client("the override was not stored")
        try:
            await client.put(self._keys.override(override.id), override.to_json().encode())
        except Exception as e:
            raise ClusterUnavailable(f"etcd: the override was not stored: {_why(e)}") from e

    async def delete_override(self, override_id: str) -> bool:
        """Delete an override; False when there was none with that id.

        :raises ClusterUnavailable: etcd cannot be reached; nothing was deleted.
        """
        client = self._require_client("the override was not deleted")
        try:
            deleted = await client.delete(self._keys.override(override_id))
        except Exception as e:
            raise ClusterUnavailable(f"etcd: the override was not deleted: {_why(e)}") from e
        return deleted is not None

    def _require_client(self, what: str) -> Any:
        if self._client is None or not self._connected:
            raise ClusterUnavailable(f"etcd is unreachable: {what}")
        return self._client

    # -- the session -------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            endpoints = self._cfg.etcd.endpoints
            endpoint = endpoints[self._endpoint % len(endpoints)]
            error: BaseException | None = None
            try:
                await self._session(endpoint)
            except Exception as e:
                error = e
                if not isinstance(_first_leaf(e), aetcd.ClientError | TimeoutError | OSError):
                    log.error("etcd: session failed unexpectedly", exc_info=e)
            was_up = self._connected
            await self._drop_client()
            self._endpoint += 1
            self._set_connected(False, endpoint, error)
            self._first.set()
            attempt = 0 if was_up else attempt + 1
            await asyncio.sleep(self._backoff.delay(attempt))

    async def _session(self, endpoint: str) -> None:
        client = make_client(endpoint, self._creds, self._cfg.etcd.timeout)
        self._client = client
        await client.connect()
        await self._ensure_lease(client)
        kvs, revision = await read_prefix(client, self._keys.root, self._cfg.etcd.timeout)
        self._out.emit(self._view.load(kvs))
        watch = await client.watch_prefix(self._keys.root, start_revision=revision + 1)
        self._rewrite_all()
        self._set_connected(True, endpoint, None)
        self._first.set()
        await self._reconcile(client)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch_loop(client, watch))
            tg.create_task(self._keepalive_loop(client))
            tg.create_task(self._writer_loop(client))
            tg.create_task(self._leader_loop(client))

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), self._cfg.etcd.timeout)
            except Exception as e:
                log.debug("etcd: close: %s", _why(e))

    def _set_connected(self, up: bool, endpoint: str, error: BaseException | None) -> None:
        if up and self._down_since is not None:
            log.info(
                "etcd: %s reachable again after %.1f s; state re-read",
                endpoint,
                self._clock() - self._down_since,
            )
        elif up:
            log.info("etcd: connected to %s as node %s (%s)", endpoint, self._node, self._region)
        elif self._connected or not self._told:
            log.warning(
                "etcd: %s unreachable (%s); serving the last decision, retrying",
                endpoint,
                _why(error),
            )
        else:
            log.debug("etcd: %s still unreachable: %s", endpoint, _why(error))
        if not up and (self._connected or not self._told):
            self._down_since = self._clock()
        elif up:
            self._down_since = None
        changed = up != self._connected or not self._told
        self._connected, self._told = up, True
        self._out.flush()
        if changed:
            call(self._on_connected, up)

    async def _watch_loop(self, client: Any, watch: Any) -> None:
        async for event in watch:
            if event.kind == "PUT":
                self._out.emit(self._view.put(event.kv))
            else:
                self._out.emit(self._view.delete(event.kv.key))
            if self._keys.parse(event.kv.key).kind == "leader":
                self._leader_seen.set()
        raise ConnectionError("the watch ended")

    async def _leader_loop(self, client: Any) -> None:
        """Campaign or step down once the watch batch that moved the leader key is applied:
        a lease expiry deletes the leader key with the dead node's reports in one batch, and
        a node that won on the first event would decide with the dead node's votes."""
        while True:
            await self._leader_seen.wait()
            self._leader_seen.clear()
            await self._reconcile(client)

    async def _writer_loop(self, client: Any) -> None:
        """Write this node's dirty reports and beat: at once, coalescing while one is in flight."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            lease = self._lease
            if lease is None or not (self._dirty or self._beat_dirty):
                continue
            batch, self._dirty = self._dirty, {}
            beat, self._beat_dirty = (self._beat if self._beat_dirty else None), False
            t = client.transactions
            ops = [
                t.put(
                    self._keys.report(self._region, self._node, r.target),
                    codec.dumps(r),
                    lease=lease,
                )
                for r in batch.values()
            ]
            if beat is not None:
                ops.append(t.put(self._keys.node(self._node), codec.dumps(beat), lease=lease))
            try:
                for i in range(0, len(ops), _OPS_PER_TXN):
                    await client.transaction(
                        compare=[], success=ops[i : i + _OPS_PER_TXN], failure=[]
                    )
            except aetcd.ClientError as e:
                for target, r in batch.items():
                    self._dirty.setdefault(target, r)
                self._beat_dirty = self._beat_dirty or beat is not None
                self._wake.set()
                if "lease not found" not in str(e):
                    raise
                if lease == self._lease:  # not already replaced by the keep-alive
                    await self._replace_lease(client, "etcd no longer knows it")

    async def _keepalive_loop(self, client: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._ttl / 3)
            lease, sent = self._lease, loop.time()
            reply = await client.refresh_lease(lease)
            if lease != self._lease:
                continue
            if reply is None or reply.TTL <= 0:
                await self._replace_lease(client, "expired")
            else:
                self._arm(sent + reply.TTL)
                await self._reconcile(client)

    # -- lease and leadership ----------------------------------------------------------------

    async def _ensure_lease(self, client: Any) -> None:
        """Keep the lease from before an outage if etcd still has it, else take a new one."""
        if self._lease is not None:
            sent = asyncio.get_running_loop().time()
            reply = await client.refresh_lease(self._lease)
            if reply is not None and reply.TTL > 0:
                self._arm(sent + reply.TTL)
                return
            self._lease_gone("it expired while etcd was unreachable")
        await self._grant(client)

    async def _grant(self, client: Any) -> None:
        sent = asyncio.get_running_loop().time()
        lease = await client.lease(self._cfg.lease_ttl)
        self._lease, self._ttl = lease.id, float(lease.ttl)  # etcd may raise a too-short TTL
        self._arm(sent + lease.ttl)

    async def _replace_lease(self, client: Any, why: str) -> None:
        """Our lease is gone (and our keys with it): step down, re-put, re-campaign."""
        async with self._lease_lock:
            self._lease_gone(why)
            await self._grant(client)
            self._rewrite_all()
            await self._reconcile(client)

    def _lease_gone(self, why: str) -> None:
        log.warning("lease: %s; taking a new one", why)
        self._lease = None
        if self._leader:
            self._lose(f"lease {why}")

    def _rewrite_all(self) -> None:
        self._dirty = dict(self._mine)
        self._beat_dirty = self._beat is not None
        self._wake.set()

    def _arm(self, deadline: float) -> None:
        """After `deadline` etcd may have dropped our lease: a leader must not believe it leads."""
        self._deadline = deadline
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = asyncio.get_running_loop().call_at(deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        if self._leader:
            self._lose("no keep-alive answer within the lease TTL")

    def _holding(self) -> bool:
        loop = asyncio.get_running_loop()
        return self._leader and self._term is not None and loop.time() < self._deadline

    async def _reconcile(self, client: Any) -> None:
        """Match our leadership to the leader key: win, lose, or campaign when it is free."""
        lease, key = self._lease, self._view.leader
        if lease is None or self._stopping:
            return
        ours = key is not None and key.lease == lease
        if self._leader and not (ours and key is not None and key.term == self._term):
            self._lose("the leader key changed")
        if key is None:
            await self._campaign(client, lease)
        elif ours and not self._leader and asyncio.get_running_loop().time() < self._deadline:
            self._win(key.term)

    async def _campaign(self, client: Any, lease: int) -> None:
        t = client.transactions
        leader = self._keys.leader
        ok, responses = await client.transaction(
            compare=[t.create(leader) == 0],
            success=[t.put(leader, self._node.encode(), lease=lease), t.get(leader)],
            failure=[t.get(leader)],
        )
        rows = responses[-1] if responses else []
        if rows:
            self._view.put(rows[0][1])
        key = self._view.leader
        if ok and key is not None and key.lease == lease and lease == self._lease:
            self._win(key.term)

    def _win(self, term: int) -> None:
        self._leader, self._term = True, term
        log.info("leader: node %s leads, term=%d", self._node, term)
        self._out.flush()
        call(self._on_leader, True)

    def _lose(self, why: str) -> None:
        self._leader, self._term = False, None
        log.warning("leader: node %s no longer leads: %s", self._node, why)
        self._out.flush()
        call(self._on_leader, False)
