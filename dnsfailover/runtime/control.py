"""The override book: the operator overrides a node holds, and how they are set and removed.

Setting one validates what it names, asks the interlocks, persists it (etcd first in a
cluster, whose copy is the one that counts; SQLite always, as the audit trail), logs and
notifies, then wakes the engine.  Removing one is audited the same way.  In a cluster the
book follows etcd: any node may set an override, and every node applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from dnsfailover.alerts.notice import Notice
from dnsfailover.config.schema import Config
from dnsfailover.engine.overrides import InvalidOverride, Override, OverrideRefused, target_problem
from dnsfailover.runtime.store_thread import AsyncStore

log = logging.getLogger("dnsfailover.service")


class SharedOverrides(Protocol):
    """Where a cluster keeps its overrides (etcd)."""

    async def put_override(self, override: Override) -> None: ...

    async def delete_override(self, override_id: str) -> bool: ...


class OverrideBook:
    """The overrides of one node.

    :param config: the node's current config (a reload changes it).
    :param vet: why an override would trip an interlock next to `in_force`, or None.
    :param notify: where notices go (the node's current alerter).
    :param wake: re-decide now.
    :param shared: the cluster's copy, when the node is in one.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        config: Callable[[], Config],
        vet: Callable[[Override, list[Override], float], str | None],
        notify: Callable[[Notice], None],
        wake: Callable[[], None],
        shared: SharedOverrides | None = None,
    ) -> None:
        self._clock = clock
        self._config = config
        self._vet = vet
        self._notify = notify
        self._wake = wake
        self._shared = shared
        self._store: AsyncStore | None = None
        self._held: list[Override] = []

    def open(self, store: AsyncStore, held: list[Override]) -> None:
        """Start from what the store kept (cold start)."""
        self._store, self._held = store, list(held)

    def held(self) -> list[Override]:
        """Every override held, expired ones included (until the engine ends them)."""
        return list(self._held)

    def in_force(self) -> list[Override]:
        """The overrides in force now."""
        now = self._clock()
        return [o for o in self._held if o.active(now)]

    def replace(self, overrides: list[Override]) -> None:
        """The cluster's overrides changed (any node may have set them)."""
        self._held = list(overrides)
        self._wake()

    async def add(self, o: Override) -> None:
        """Validate, check interlocks, persist and audit `o`, then wake the engine.

        :raises InvalidOverride: `o` names what does not exist.
        :raises OverrideRefused: an interlock would trip and `o.force` is not set.
        """
        store = self._store
        assert store is not None
        problem = target_problem(self._config(), o)
        if problem is not None:
            raise InvalidOverride(problem)
        now = self._clock()
        refusal = self._vet(o, self.in_force(), now)
        if refusal is not None:
            message = f"refused {o.describe()}: {refusal}"
            log.warning("override: %s", message)
            await store.run(lambda s: s.add_events([(now, "interlock", o.subject, message)]))
            self._notify(Notice("interlock", o.subject, message, now, "warning"))
            raise OverrideRefused(refusal)
        if self._shared is not None:
            await self._shared.put_override(o)
        await store.run(lambda s: s.put_override(o, now))
        self._held = [x for x in self._held if x.id != o.id] + [o]
        log.info("override: set %s: %s", o.id, o.describe())
        self._notify(Notice("override", o.subject, f"set: {o.describe()}", now, "info"))
        self._wake()

    async def remove(self, override_id: str, who: str, reason: str) -> bool:
        """Remove an override, audited; False when there is none of that id."""
        store = self._store
        assert store is not None
        now = self._clock()
        found = False
        if self._shared is not None:
            found = await self._shared.delete_override(override_id)
        local = await store.run(lambda s: s.delete_override(override_id, who, reason, now))
        before = len(self._held)
        self._held = [x for x in self._held if x.id != override_id]
        if found or local or len(self._held) != before:
            log.info("override: removed %s by %s: %s", override_id, who, reason)
            self._notify(
                Notice("override", override_id, f"removed by {who}: {reason}", now, "info")
            )
            self._wake()
            return True
        return False
