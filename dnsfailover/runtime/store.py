"""SQLite (WAL) persistence: serials, last health, engine state, events, overrides.

Every method is synchronous and short; the service runs them on one dedicated thread
(`store_thread.AsyncStore`) so the event loop never waits on the disk.  The CLI uses `Store`
directly.

Damage never stops a node: a row that does not parse is skipped and named in `skipped` (the
node logs it and records an event); pages SQLite cannot read raise `StateDamaged`, whose
message names the way forward (`serve --state-recover`, see `recovery.py`).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsfailover.cluster.codec import CodecError, decode, encode
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.values import EngineState, NameState, Transition
from dnsfailover.errors import StoreError
from dnsfailover.model import Event, HealthChange, State, answer_text
from dnsfailover.runtime.floors import SerialFloors
from dnsfailover.runtime.serials import MAX_AHEAD, SERIAL_MAX

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
CREATE TABLE IF NOT EXISTS saved (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The history keeps the newest EVENTS_KEEP events, none older than EVENTS_MAX_AGE seconds.
EVENTS_KEEP = 100_000
EVENTS_MAX_AGE = 90 * 86400
PRUNE_EVERY = 1000  # events written between two prunings
RECOVER_HINT = (
    "restart with `dnsfailover serve --state-recover` to move it aside (it is kept, "
    "renamed) and start from a cold state; serials stay monotonic"
)

log = logging.getLogger("dnsfailover.store")

Row = tuple[float, str, str, str]  # (at, kind, subject, message)


class StateDamaged(StoreError):
    """The state file is damaged; the message says how to go on."""

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(f"{description}; {RECOVER_HINT}")


@dataclass(frozen=True, slots=True)
class SavedHealth:
    target: str
    region: str
    state: State
    since: float
    reason: str


@dataclass(frozen=True, slots=True)
class Restored:
    """What a node starts from, and what could not be read (each skipped row, said why)."""

    serials: dict[str, int]
    health: list[SavedHealth]
    engine: EngineState
    overrides: list[Override]
    problems: list[str] = field(default_factory=list)


def damaged(path: str, e: sqlite3.Error, what: str) -> StoreError:
    """A StateDamaged naming the way forward for a corrupt or foreign file, else a StoreError."""
    name = getattr(e, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StateDamaged(f"state file {path} is damaged ({what}: {e})")
    return StoreError(f"state store {path}: {what}: {e}")


class Store:
    """A SQLite database at `path`; `:memory:` works for tests."""

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        keep_events: int = EVENTS_KEEP,
        prune_every: int = PRUNE_EVERY,
    ) -> None:
        self.path = str(path)
        self._keep_events, self._prune_every = keep_events, prune_every
        writable = not readonly and self.path != ":memory:"
        self.floors = SerialFloors(f"{self.path}-serials" if writable else None)
        self.skipped: list[str] = []  # rows the last read skipped, each said why
        self._written = 0  # events since the last pruning
        db: sqlite3.Connection | None = None
        try:
            if readonly:
                uri = f"file:{Path(path).resolve()}?mode=ro"
                db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA busy_timeout=5000")
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a foreign file?
            else:
                db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=5000")
                db.executescript(SCHEMA)
            self._db = db
            if not readonly:
                self._migrate()
                self._prune()
        except sqlite3.Error as e:
            if db is not None:
                db.close()
            error = damaged(self.path, e, "cannot open it")
            if not isinstance(error, StateDamaged):
                error = StoreError(f"cannot open state store {path}: {e}")
            raise error from e

    def check(self) -> None:
        """SQLite's quick check of every page (reads the whole file).

        :raises StateDamaged: it finds damage.
        """
        found = [str(row[0]) for row in self._rows("every page", "PRAGMA quick_check(5)")]
        if found != ["ok"]:
            raise StateDamaged(f"state file {self.path} is damaged ({'; '.join(found)})")

    def _migrate(self) -> None:
        """Bring an older database up to date; old rows stay readable."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(engine)")}
        if "state" not in columns:
            # The whole NameState as JSON (damping, staged failback, windows...); the older
            # columns are still written so an older version can read what matters most.
            self._db.execute("ALTER TABLE engine ADD COLUMN state TEXT")

    def close(self) -> None:
        self._db.close()

    # -- reads (a row that does not parse is skipped and said in `skipped`) ---------------

    def _rows(self, what: str, sql: str) -> Iterator[tuple[Any, ...]]:
        try:
            yield from self._db.execute(sql).fetchall()
        except sqlite3.Error as e:
            raise damaged(self.path, e, f"cannot read {what}") from e

    def _skip(self, message: str) -> None:
        self.skipped.append(message)

    def restore(self) -> Restored:
        """Everything a node starts from, in one read; bad rows are skipped and listed."""
        self.skipped = []
        serials, health = self.serials(), self.health()
        try:
            for zone, floor in self.floors.load().items():
                serials[zone] = max(floor, serials.get(zone, 0))
        except StoreError as e:
            self._skip(f"{e}; skipped (serials start at now + {MAX_AHEAD}s, above any served)")
        engine, overrides = self.engine_state(), self.overrides()
        return Restored(serials, health, engine, overrides, list(self.skipped))

    def serials(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for zone, serial in self._rows("serials", "SELECT zone, serial FROM serials"):
            if type(serial) is int and 0 <= serial <= SERIAL_MAX:
                out[str(zone)] = serial
            else:
                self._skip(
                    f"serials: zone {zone!r}: {serial!r} is not a serial number; skipped "
                    "(the next serial comes from the clock, above any served)"
                )
        return out

    def health(self) -> list[SavedHealth]:
        out: list[SavedHealth] = []
        sql = "SELECT target, region, state, since, reason FROM health"
        for t, r, s, since, why in self._rows("health", sql):
            try:
                if not isinstance(since, int | float) or not math.isfinite(since):
                    raise ValueError(f"since {since!r} is not a time")
                out.append(SavedHealth(str(t), str(r), State(s), float(since), str(why)))
            except ValueError as e:
                self._skip(f"health: {t!r} in {r!r}: {e}; skipped (probed afresh)")
        return out

    def engine_state(self) -> EngineState:
        names: dict[str, NameState] = {}
        columns = {row[1] for row in self._rows("engine", "PRAGMA table_info(engine)")}
        full = "state" if "state" in columns else "NULL"  # a read-only, never-migrated file
        sql = f"SELECT name, active, answer, healthy_since, {full} FROM engine"
        for name, active, answer, since, state in self._rows("engine", sql):
            restored: NameState | None = None
            if state is not None:
                try:
                    restored = decode(NameState, json.loads(state))
                except (CodecError, ValueError, TypeError, KeyError, AttributeError):
                    restored = None  # fall back to the columns every version writes
            if restored is None:
                try:
                    restored = NameState(active, json.loads(since), tuple(json.loads(answer)))
                except (ValueError, TypeError) as e:
                    self._skip(f"engine: {name!r}: unreadable ({e}); skipped (decided afresh)")
                    continue
            names[str(name)] = restored
        return EngineState(names)

    def events(self, limit: int = 50, before: int | None = None) -> list[Event]:
        """Newest first; `before` pages back from an event id."""
        try:
            rows = self._db.execute(
                "SELECT id, at, kind, subject, message FROM events WHERE id < ? "
                "ORDER BY id DESC LIMIT ?",
                (before if before is not None else 2**62, limit),
            ).fetchall()
        except sqlite3.Error as e:
            raise damaged(self.path, e, "cannot read the history") from e
        return [Event(*row) for row in rows]

    def overrides(self) -> list[Override]:
        """Every stored override, oldest first (expired ones included until removed)."""
        out: list[Override] = []
        for oid, body in self._rows("overrides", "SELECT id, body FROM overrides ORDER BY rowid"):
            try:
                out.append(Override.from_json(body))
            except (ValueError, TypeError, KeyError, AttributeError, CodecError) as e:
                self._skip(
                    f"overrides: {oid!r}: unreadable ({type(e).__name__}: {e}); skipped "
                    "(it is not in force; set it again)"
                )
        return sorted(out, key=lambda o: o.created_at)

    # -- writes (each one transaction) --------------------------------------------------------

    def _tx(self, work: Callable[[sqlite3.Connection], None], *, durable: bool = False) -> None:
        """Run `work` in one transaction.  `durable`: what an operator was told is done (an
        override, an event posted to the API) is also checkpointed into the main file, so
        losing the WAL (a `kill -9`, then `state.db-wal` deleted) cannot lose it."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                work(self._db)
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if durable:
                _busy, frames, copied = self._db.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)"
                ).fetchone()
                if copied < frames:  # a reader (`events --state`) holds old frames: wait for it
                    self._db.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        except sqlite3.Error as e:
            raise damaged(self.path, e, "cannot write") from e
        if self._written >= self._prune_every:
            self._prune()

    def _events(self, db: sqlite3.Connection, rows: Iterable[Row]) -> None:
        rows = list(rows)
        db.executemany("INSERT INTO events (at, kind, subject, message) VALUES (?, ?, ?, ?)", rows)
        self._written += len(rows)

    def _prune(self, now: float | None = None) -> None:
        """Keep the newest `keep_events` events, none older than EVENTS_MAX_AGE: freed pages
        are reused, so the file stays bounded however many drills and flaps it records.  A
        failure (damaged history pages) is logged: history never stops a node."""
        self._written = 0
        cutoff = (time.time() if now is None else now) - EVENTS_MAX_AGE
        try:
            newest = self._db.execute("SELECT max(id) FROM events").fetchone()[0]
            if newest is not None:
                self._db.execute(
                    "DELETE FROM events WHERE id <= ? OR at < ?",
                    (newest - self._keep_events, cutoff),
                )
        except sqlite3.Error as e:
            log.error("store: cannot prune the history of %s: %s", self.path, e)

    def save_health(self, changes: Iterable[HealthChange], notes: Iterable[Row] = ()) -> None:
        """Health changes (and `notes` for the history), in one transaction."""
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
        events.extend(notes)

        def work(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?, ?)", rows)
            self._events(db, events)

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
        """The serials served (`save_floors` is what keeps them from going backwards)."""
        self._tx(lambda db: self._serials(db, serials))

    def save_floors(self, floors: Mapping[str, int]) -> None:
        """Every zone's serial floor (at least what is about to be served), fsynced in place
        (see `floors.py`): written before serving, so a serial never goes backwards."""
        self.floors.save(dict(floors))

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

    def _state(
        self,
        db: sqlite3.Connection,
        state: EngineState,
        transitions: Iterable[Transition],
        notes: Iterable[tuple[float, str, str, str]],
        changed: Collection[str] | None,
        replace: bool | None = None,
    ) -> None:
        events = [
            (t.at, t.kind, t.name, f"{answer_text(t.old)} -> {answer_text(t.new)}: {t.reason}")
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
        self._events(db, events)

    def save_values(self, values: Mapping[str, str]) -> None:
        """Keep JSON `values` by key (the cluster's last applied decision, see cluster_link)."""

        def work(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO saved VALUES (?, ?)", values.items())

        self._tx(work)

    def saved(self, prefix: str) -> dict[str, str]:
        """The kept values whose key starts with `prefix`."""
        sql = "SELECT key, value FROM saved"
        return {
            str(k): str(v) for k, v in self._rows("saved values", sql) if str(k).startswith(prefix)
        }

    def add_events(self, events: Iterable[Row], *, durable: bool = False) -> None:
        """Append (at, kind, subject, message) rows to the history (`durable`: see `_tx`)."""
        rows = list(events)
        self._tx(lambda db: self._events(db, rows), durable=durable)

    def put_override(self, override: Override, now: float) -> None:
        """Store an override and audit it (who, why, what) in the history."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO overrides VALUES (?, ?)", (override.id, override.to_json())
            )
            self._events(
                db,
                [(now, "override", override.subject, f"set {override.id}: {override.describe()}")],
            )

        self._tx(work, durable=True)

    def delete_override(self, override_id: str, who: str, reason: str, now: float) -> bool:
        """Remove an override (undrain, expiry, a failback taken); False when it is unknown."""
        found: list[Override] = []

        def work(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT body FROM overrides WHERE id = ?", (override_id,)).fetchone()
            if row is None:
                return
            found.append(Override.from_json(row[0]))
            db.execute("DELETE FROM overrides WHERE id = ?", (override_id,))
            message = f"removed {override_id} ({found[0].action.value}) by {who}: {reason}"
            self._events(db, [(now, "override", found[0].subject, message)])

        self._tx(work, durable=True)
        return bool(found)
