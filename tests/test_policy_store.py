"""The engine's whole NameState survives a restart, and old databases still load."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dnsfailover.engine.values import EngineState, NameState
from dnsfailover.runtime.store import Store


def test_full_name_state_round_trips(tmp_path: Path) -> None:
    state = EngineState(
        {
            "www.example.test.": NameState(
                "west",
                {"west": 1.5},
                ("127.0.0.31",),
                would_answer=("127.0.0.21",),
                mode="degraded",
                changes=(1.0, 2.0),
                penalties={"": 1800.0},
                penalty_at=2.0,
                suppressed=("",),
                weights={"127.0.0.31": 255},
                staged_from="east",
                staged_since=2.0,
                pin="o1",
            )
        }
    )
    s = Store(tmp_path / "s.db")
    s.save_publish({}, state, [])
    s.close()
    assert Store(tmp_path / "s.db").engine_state() == state


def test_an_old_engine_table_is_migrated_and_its_rows_load(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE engine (name TEXT PRIMARY KEY, active TEXT, answer TEXT NOT NULL, "
        "healthy_since TEXT NOT NULL)"
    )
    db.execute("INSERT INTO engine VALUES ('www.', 'east', '[\"127.0.0.1\"]', '{\"east\": 1.0}')")
    db.commit()
    db.close()
    s = Store(path)
    assert s.engine_state() == EngineState(
        {"www.": NameState("east", {"east": 1.0}, ("127.0.0.1",))}
    )
    s.save_publish({}, EngineState({"www.": NameState("east", penalties={"": 5.0})}), [])
    assert s.engine_state().names["www."].penalties == {"": 5.0}
