"""Fixtures over the real parts in support.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import HttpEndpoints, Server


@pytest.fixture
def http_endpoints() -> Iterator[HttpEndpoints]:
    pool = HttpEndpoints()
    yield pool
    pool.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `dnsfailover serve CONFIG` subprocesses; all are stopped after the test."""
    started: list[Server] = []

    def start(config: Path, *extra: str, state: Path | None = None) -> Server:
        s = Server(config, state or tmp_path / "state.db", *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
