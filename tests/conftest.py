"""Fixtures over the real parts in support.py."""

from __future__ import annotations

import socket
import time
import urllib.request
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


@pytest.fixture(scope="session")
def moto_session() -> Iterator[str]:
    """moto's Route 53 over real HTTP on 127.0.0.1 (started once; ~1 s)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_endpoint(moto_session: str) -> str:
    """The moto server, emptied for this test."""
    reset = urllib.request.Request(f"{moto_session}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10) as resp:
        assert resp.status == 200
    return moto_session


@pytest.fixture
def full_listener() -> Iterator[tuple[str, int]]:
    """A TCP listener whose accept queue is full: the kernel drops new SYNs, connects hang
    until the prober's timeout."""
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = server.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    time.sleep(0.05)
    yield "127.0.0.1", port
    for filler in fillers:
        filler.close()
    server.close()
