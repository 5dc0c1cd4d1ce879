"""SQLite (WAL) persistence: serials, last health, engine state, events, overrides.

Every method is synchronous and short; the service runs them on one dedicated thread
(`AsyncStore`) so the event loop never waits on the disk.  The CLI uses `Store` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dnsfailover.cluster.codec import CodecError, decode, encode
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.values import EngineState, NameState, Transition
from dnsfailover.errors import StoreError
from dnsfailover.model import Event, HealthChange, State

SCHEMA = """
CREATE TABLE IF NOT EXISTS serials (zone TEXT PRIMARY KEY, serial INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS health (
    target TEXT NOT NULL, region TEXT NOT NULL, state TEXT NOT NULL,
    since REAL NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (target, region));
CREATE TABLE IF NOT EXISTS engine (
    name TEXT PRIMARY KEY, active TEXT, answer TEXT NOT NULL, healthy_since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS overrides (id TEXT PRIMARY KEY, body TEXT NOT NULL);
"""

SERIAL_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class SavedHealth:
    target: str
    region: str
    state: State
    since: float
    reason: str


def next_serial(previous: int | None, now: float) -> int:
    """A serial larger than `previous`: seconds since the epoch when that is larger.

    Time-based serials keep increasing even if the store is lost; +1 covers several
    changes within one second.  Kept below 2**32 (RFC 1982 serial space).
    """
    candidate = max((previous or 0) + 1, int(now))
    if candidate > SERIAL_MAX:
        raise StoreError(f"SOA serial would exceed {SERIAL_MAX}")
    return candidate


class Store:
    """A SQLite database at `path`; `:memory:` works for tests."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        try:
            if readonly:
                uri = f"file:{Path(path).resolve()}?mode=ro"
                self._db = sqlite3.connect(
                    uri, uri=True, check_same_thread=False, isolation_level=None
                )
                self._db.execute("PRAGMA busy_timeout=5000")
            else:
                self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA busy_timeout=5000")
                self._db.executescript(SCHEMA)
                self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open state store {path}: {e}") from e
        self.path = str(path)

    def _migrate(self) -> None:
        """Bring an older database up to date; old rows stay readable."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(engine)")}
        if "state" not in columns:
            # The whole NameState as JSON (damping, staged failback, windows...); the older
            # columns are still written so an older version can read what matters most.
            self._db.execute("ALTER TABLE engine ADD COLUMN state TEXT")

    def close(self) -> None:
        self._db.close()

    # -- reads ------------------------------------------------------------------------------

    def serials(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT zone, serial FROM serials").fetchall())

    def health(self) -> list[SavedHealth]:
        rows = self._db.execute("SELECT target, region, state, since, reason FROM health")
        return [SavedHealth(t, r, State(s), since, why) for t, r, s, since, why in rows]

    def engine_state(self) -> EngineState:
        names: dict[str, NameState] = {}
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(engine)")}
        full = "state" if "state" in columns else "NULL"  # a read-only, never-migrated file
        for name, active, answer, since, state in self._db.execute(
            f"SELECT name, active, answer, healthy_since, {full} FROM engine"
        ):
            restored: NameState | None = None
            if state is not None:
                try:
                    restored = decode(NameState, json.loads(state))
                except (CodecError, ValueError):
                    restored = None  # fall back to the columns every version writes
            names[name] = restored or NameState(
                active, json.loads(since), tuple(json.loads(answer))
            )
        return EngineState(names)

    def events(self, limit: int = 50, before: int | None = None) -> list[Event]:
        """Newest first; `before` pages back from an event id."""
        rows = self._db.execute(
            "SELECT id, at, kind, subject, message FROM events WHERE id < ? "
            "ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        )
        return [Event(*row) for row in rows]

    def overrides(self) -> list[Override]:
        """Every stored override, oldest first (expired ones included until removed)."""
        rows = self._db.execute("SELECT body FROM overrides ORDER BY rowid")
        return sorted((Override.from_json(body) for (body,) in rows), key=lambda o: o.created_at)

    # -- writes (each one transaction) --------------------------------------------------------

    def _tx(self, work: Callable[[sqlite3.Connection], None]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                work(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"state store {self.path}: {e}") from e

    def save_health(self, changes: Iterable[HealthChange]) -> None:
        rows = [
            (c.target, c.region, c.new.value, c.at, c.reason)
            for c in changes
            if c.region is not None
        ]
        events = [
            (
                c.at,
                "health",
                c.target,
                f"{c.region or 'voted'}: {c.old.value} -> {c.new.value}: {c.reason}",
            )
            for c in changes
        ]

        def work(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO events (at, kind, subject, message) VALUES (?, ?, ?, ?)", events
            )

        self._tx(work)

    def save_publish(
        self,
        serials: Mapping[str, int],
        state: EngineState,
        transitions: Iterable[Transition],
        notes: Iterable[tuple[float, str, str, str]] = (),
        changed: Collection[str] | None = None,
    ) -> None:
        """Record a decision: serials, engine state and why (`save_serials`, then
        `save_state`, in one transaction)."""

        def work(db: sqlite3.Connection) -> None:
            self._serials(db, serials)
            self._state(db, state, transitions, notes, changed)

        self._tx(work)

    def save_serials(self, serials: Mapping[str, int]) -> None:
        """The serials about to be served: written first, so a serial never goes backwards."""
        self._tx(lambda db: self._serials(db, serials))

    def save_state(
        self,
        state: EngineState,
        transitions: Iterable[Transition],
        notes: Iterable[tuple[float, str, str, str]] = (),
        changed: Collection[str] | None = None,
        *,
        replace: bool | None = None,
    ) -> None:
        """The engine state and the history of a decision.  Only the `changed` names' state
        is written; `replace` (by default: None, or every name changed) replaces the whole
        state with them."""
        self._tx(lambda db: self._state(db, state, transitions, notes, changed, replace))

    @staticmethod
    def _serials(db: sqlite3.Connection, serials: Mapping[str, int]) -> None:
        db.executemany("INSERT OR REPLACE INTO serials VALUES (?, ?)", serials.items())

    @staticmethod
    def _state(
        db: sqlite3.Connection,
        state: EngineState,
        transitions: Iterable[Transition],
        notes: Iterable[tuple[float, str, str, str]],
        changed: Collection[str] | None,
        replace: bool | None = None,
    ) -> None:
        events = [
            (t.at, t.kind, t.name, f"{list(t.old)} -> {list(t.new)}: {t.reason}")
            for t in transitions
        ]
        events.extend(notes)
        if replace is None:
            replace = changed is None or len(changed) >= len(state.names)
        names: Iterable[str] = state.names if changed is None else changed
        if replace:
            db.execute("DELETE FROM engine")
        names = [n for n in names if n in state.names]
        db.executemany(
            "INSERT OR REPLACE INTO engine (name, active, answer, healthy_since, state) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (
                    name,
                    ns.active,
                    json.dumps(list(ns.answer)),
                    json.dumps(dict(ns.healthy_since)),
                    json.dumps(encode(ns), sort_keys=True),
                )
                for name in names
                for ns in [state.names[name]]
            ],
        )
        db.executemany(
            "INSERT INTO events (at, kind, subject, message) VALUES (?, ?, ?, ?)", events
        )

    def add_events(self, events: Iterable[tuple[float, str, str, str]]) -> None:
        """Append (at, kind, subject, message) rows to the history."""
        rows = list(events)

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO events (at, kind, subject, message) VALUES (?, ?, ?, ?)", rows
            )

        self._tx(work)

    def put_override(self, override: Override, now: float) -> None:
        """Store an override and audit it (who, why, what) in the history."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO overrides VALUES (?, ?)", (override.id, override.to_json())
            )
            db.execute(
                "INSERT INTO events (at, kind, subject, message) VALUES (?, ?, ?, ?)",
                (now, "override", override.subject, f"set {override.id}: {override.describe()}"),
            )

        self._tx(work)

    def delete_override(self, override_id: str, who: str, reason: str, now: float) -> bool:
        """Remove an override (undrain, expiry, a failback taken); False when it is unknown."""
        found: list[Override] = []

        def work(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT body FROM overrides WHERE id = ?", (override_id,)).fetchone()
            if row is None:
                return
            found.append(Override.from_json(row[0]))
            db.execute("DELETE FROM overrides WHERE id = ?", (override_id,))
            db.execute(
                "INSERT INTO events (at, kind, subject, message) VALUES (?, ?, ?, ?)",
                (
                    now,
                    "override",
                    found[0].subject,
                    f"removed {override_id} ({found[0].action.value}) by {who}: {reason}",
                ),
            )

        self._tx(work)
        return bool(found)


T = TypeVar("T")


class AsyncStore:
    """Runs a `Store` on one dedicated thread so SQLite never blocks the event loop.

    Jobs run in the order they are given, except `urgent` ones (the serial floor of a
    publish), which go before any job that has not started: a regional outage's history,
    written in chunks behind the answers, never holds up the next publish for long.
    """

    def __init__(self, store: Store, worker: _Worker) -> None:
        self.store = store
        self._worker = worker

    @classmethod
    async def open(cls, path: str | Path) -> AsyncStore:
        """Open the database on the thread that will use it from then on."""
        worker = _Worker()
        store = await worker.submit(lambda: Store(path), urgent=False)
        return cls(store, worker)

    async def run(self, fn: Callable[[Store], T], *, urgent: bool = False) -> T:
        return await self._worker.submit(lambda: fn(self.store), urgent=urgent)

    def later(self, fn: Callable[[Store], None]) -> asyncio.Future[None]:
        """Queue `fn` without waiting for it (what is read later is queued after it)."""
        return self._worker.submit(lambda: fn(self.store), urgent=False)

    async def close(self) -> None:
        await self.run(Store.close)
        self._worker.stop()


class _Worker:
    """One thread running jobs from a queue: urgent ones first, each kind in order."""

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None]]] = (
            queue.PriorityQueue()
        )
        self._count = itertools.count()
        self._thread = threading.Thread(target=self._run, name="dnsfailover-store", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T], *, urgent: bool) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn()
            except BaseException as e:  # handed to the awaiting coroutine
                outcome: tuple[Any, BaseException | None] = (None, e)
            else:
                outcome = (result, None)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, *outcome)

        self._queue.put((0 if urgent else 1, next(self._count), job))
        return future

    def stop(self) -> None:
        self._queue.put((2, next(self._count), _STOP))

    def _run(self) -> None:
        while True:
            _priority, _seq, job = self._queue.get()
            if job is _STOP:
                return
            job()


def _STOP() -> None:
    """Marks the end of a worker's queue."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled() or future.get_loop().is_closed():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
