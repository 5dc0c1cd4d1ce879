"""The SQLite store: serials never go backwards, state survives a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsfailover.engine.values import EngineState, NameState, Transition
from dnsfailover.errors import StoreError
from dnsfailover.model import HealthChange, State
from dnsfailover.runtime.serials import MAX_AHEAD, SERIAL_MAX, next_serial, serial_wait
from dnsfailover.runtime.store import Store
from dnsfailover.runtime.store_thread import AsyncStore


def test_next_serial_is_time_based_and_strictly_increasing() -> None:
    # Without a stored serial (a new or lost file): above anything a bounded run served.
    assert next_serial(None, 1_700_000_000.5) == 1_700_000_000 + MAX_AHEAD + 1
    # nobody transfers the zone: nothing can see its serial go back, it starts at the clock
    assert next_serial(None, 1_700_000_000.5, held=False) == 1_700_000_000
    assert serial_wait(next_serial(None, 1_700_000_000.5, held=False), 1_700_000_000.5) == 0
    # ... counted from when the state was opened: the run before stopped serving before that
    assert next_serial(None, 1_700_000_009.5, started=1_700_000_001.2) == (
        1_700_000_001 + MAX_AHEAD + 1
    )
    assert next_serial(1_700_000_000, 1_700_000_000.9) == 1_700_000_001
    assert serial_wait(1_700_000_000 + MAX_AHEAD, 1_700_000_000.2) == 0
    assert serial_wait(1_700_000_001 + MAX_AHEAD, 1_700_000_000.25) == 0.75
    assert next_serial(1_800_000_000, 1_700_000_000.0) == 1_800_000_001
    with pytest.raises(StoreError):
        next_serial(SERIAL_MAX, 0)


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = Store(path)
    s.save_health(
        [HealthChange("web@127.0.0.1:80", "local", State.UNKNOWN, State.DOWN, 5.0, "refused")]
    )
    state = EngineState({"www.example.test.": NameState("east", {"east": 1.5}, ("127.0.0.1",))})
    t = Transition("www.example.test.", 6.0, "failover", ("127.0.0.2",), ("127.0.0.1",), "why")
    s.save_publish({"example.test.": 42}, state, [t])
    s.close()

    s = Store(path, readonly=True)
    assert s.serials() == {"example.test.": 42}
    [h] = s.health()
    assert (h.target, h.state, h.reason) == ("web@127.0.0.1:80", State.DOWN, "refused")
    assert s.engine_state() == state
    kinds = [e.kind for e in s.events()]
    assert kinds == ["failover", "health"], "newest first"
    s.close()


async def test_async_store_runs_off_the_loop(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "s.db")
    await store.run(lambda s: s.save_publish({"z.": 7}, EngineState(), []))
    assert await store.run(Store.serials) == {"z.": 7}
    await store.close()


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open state store"):
        Store(tmp_path / "missing-dir" / "state.db")


def test_a_decision_writes_only_the_names_it_changed(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    names = {f"n{i}.example.test.": NameState("east", answer=(f"10.0.0.{i}",)) for i in range(50)}
    s.save_publish({"example.test.": 1}, EngineState(names), [])  # a full decision
    changed = dict(names)
    changed["n7.example.test."] = NameState("west", answer=("10.9.9.9",))
    changed["n8.example.test."] = NameState("west", answer=("10.9.9.8",))
    rows_before = s._db.total_changes
    s.save_publish({"example.test.": 2}, EngineState(changed), [], changed={"n7.example.test."})
    # one serial and one engine row written, not 50: and n8's unsaid change is not stored
    assert s._db.total_changes - rows_before == 2
    stored = s.engine_state().names
    assert stored["n7.example.test."].active == "west"
    assert stored["n8.example.test."].active == "east"
    assert len(stored) == 50
    s.close()


def test_serial_floors_survive_a_torn_write_and_grow_for_more_zones(tmp_path: Path) -> None:
    from dnsfailover.runtime.floors import MIN_SLOT, SerialFloors

    path = tmp_path / "state.db-serials"
    floors = SerialFloors(path)
    floors.save({"a.test.": 10})
    floors.save({"a.test.": 11})
    assert path.stat().st_size == 2 * MIN_SLOT, "allocated once, rewritten in place"
    floors.save({"a.test.": 12})  # the slots alternate: where 10 was
    assert SerialFloors(path).load() == {"a.test.": 12}
    with path.open("r+b") as f:  # a crash tore the newest slot
        f.seek(MIN_SLOT)
        f.write(b"\xff" * 64)
    assert SerialFloors(path).load() == {"a.test.": 11}, "the other slot is whole"

    many = {f"z{i}.test.": 1_800_000_000 + i for i in range(2000)}
    again = SerialFloors(path)
    again.load()
    again.save(many)
    assert SerialFloors(path).load() == many
    path.write_bytes(b"not a floors file")
    assert SerialFloors(path).load() == {}


def test_serial_floors_are_restored_above_the_stored_serials(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    s.save_serials({"a.test.": 100, "b.test.": 500})
    s.save_floors({"a.test.": 116, "b.test.": 200})
    s.close()
    s = Store(tmp_path / "state.db")
    assert s.restore().serials == {"a.test.": 116, "b.test.": 500}
    s.close()
