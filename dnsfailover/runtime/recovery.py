"""Opening the state file a node starts from, whatever shape it is in.

- A new file is created whole (schema written, then renamed into place), so a zero-length
  file is never one of ours: it is damage, like a truncated or foreign file.
- A row that does not parse is skipped; each is logged at ERROR and recorded as an event
  (`store` kind) on every start until it is rewritten, and the node serves.
- A damaged file refuses to start with a message naming `--state-recover`; with it, the file
  (and its -wal/-shm) is renamed `NAME.damaged-YYYYmmddTHHMMSS` and kept, and the node starts
  from a cold state.  Serials stay monotonic: the serial floors file (`NAME-serials`, see
  floors.py) is kept; a zone without a floor starts at now + MAX_AHEAD, above anything served
  (see `store.next_serial`), or above what the damaged file still says if that is higher.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from dnsfailover.errors import StoreError
from dnsfailover.runtime.serials import MAX_AHEAD
from dnsfailover.runtime.store import Restored, StateDamaged, Store

log = logging.getLogger("dnsfailover.store")

SUFFIXES = ("", "-wal", "-shm")


def open_state(path: str | Path, *, recover: bool = False) -> tuple[Store, Restored]:
    """The store at `path` and what it restores; problems are logged and recorded.

    :raises StateDamaged: the file is damaged and `recover` is not set (the message says how
        to go on).
    :raises StoreError: the file cannot be opened or created at all.
    """
    p = Path(path)
    try:
        store, restored = _open(p, check=recover)
        problems = restored.problems
    except StateDamaged as e:
        if not recover:
            raise
        aside = move_aside(p)
        floors = salvage_serials(aside)
        store, restored = _open(p)
        store.save_serials(floors)
        for zone, floor in floors.items():
            restored.serials[zone] = max(floor, restored.serials.get(zone, 0))
        note = (
            f"{e.description}; moved aside to {aside} (--state-recover) and started from a "
            "cold state: overrides, health and history are not restored"
        )
        problems = [note, *restored.problems]
    if problems:
        now = time.time()
        for problem in problems:
            log.error("store: %s", problem)
        try:
            store.add_events([(now, "store", str(p), m) for m in problems], durable=True)
        except StoreError as e:
            log.error("store: cannot record the problems above: %s", e)
    return store, Restored(
        restored.serials, restored.health, restored.engine, restored.overrides, problems
    )


def _open(p: Path, *, check: bool = False) -> tuple[Store, Restored]:
    if str(p) == ":memory:":
        store = Store(p)
        return store, store.restore()
    if p.is_file() and p.stat().st_size == 0:
        raise StateDamaged(
            f"state file {p} is empty (0 bytes): the overrides, serials and history it held "
            "are gone"
        )
    if not p.exists():
        _create(p)
    store = Store(p)
    try:
        if check:  # --state-recover: damage only the history's pages hold counts too
            store.check()
        return store, store.restore()
    except BaseException:
        store.close()
        raise


def _create(p: Path) -> None:
    """A new state file, complete before it has its name."""
    tmp = p.with_name(p.name + ".new")
    for suffix in SUFFIXES:
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    try:
        Store(tmp).close()
        os.replace(tmp, p)
    except (StoreError, OSError) as e:
        raise StoreError(f"cannot create state store {p}: {e.__cause__ or e}") from e


def move_aside(p: Path) -> Path:
    """Rename a damaged state file (and its -wal/-shm) out of the way; returns its new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = p.with_name(f"{p.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = p.with_name(f"{p.name}.damaged-{stamp}.{n}")
    for suffix in SUFFIXES:
        src = Path(f"{p}{suffix}")
        if src.exists():
            os.replace(src, f"{aside}{suffix}")
    return aside


def salvage_serials(aside: Path) -> dict[str, int]:
    """Serials the damaged file still holds that are above what a cold start would pick (an
    older version let serials run further ahead); best effort."""
    try:
        old = Store(aside, readonly=True)
    except StoreError:
        return {}
    try:
        serials = old.serials()
    except StoreError:
        return {}
    finally:
        old.close()
    ceiling = int(time.time()) + MAX_AHEAD
    return {zone: s for zone, s in serials.items() if s > ceiling}
