"""Fixtures: a real BIND 9 primary per test (`bind`), or each of BIND, Knot and PowerDNS in
turn (`primary`), and providers built the way the core builds them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dnsfailover_rfc2136.provider import Rfc2136Provider
from dnsfailover_rfc2136.testing import BindPrimary, RunningPrimary, start_bind_primary
from dnsfailover_rfc2136.testing_primaries import start_knot_primary, start_pdns_primary
from rfc2136_support import FAST, ZONE, MakeProvider

from dnsfailover.provider.contract import create_provider


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[BindPrimary]:
    primary = start_bind_primary(tmp_path / "bind", ZONE)
    yield primary
    primary.stop()


STARTERS: dict[str, Callable[[Path, str], RunningPrimary]] = {
    "bind": start_bind_primary,
    "knot": start_knot_primary,
    "pdns": start_pdns_primary,
}


@pytest.fixture(params=sorted(STARTERS))
def primary(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningPrimary]:
    """Each real primary in turn: BIND 9, Knot DNS, PowerDNS (gsqlite3)."""
    server = STARTERS[request.param](tmp_path / request.param, ZONE)
    yield server
    server.stop()


@pytest.fixture
async def make_for() -> AsyncIterator[Callable[..., MakeProvider]]:
    """`make_for(server)`: a `make` for any running primary."""
    made: list[Rfc2136Provider] = []

    def bind_to(server: RunningPrimary) -> MakeProvider:
        def build(**options: Any) -> Rfc2136Provider:
            base: dict[str, Any] = {
                "server": "127.0.0.1",
                "port": server.port,
                "key_name": server.key.name,
                "secret_file": str(server.key_file),
                **FAST,
            }
            p = create_provider("rfc2136", ZONE, base | options)
            assert isinstance(p, Rfc2136Provider)
            made.append(p)
            return p

        return build

    yield bind_to
    for p in made:
        await p.close()


@pytest.fixture
async def make(bind: BindPrimary) -> AsyncIterator[MakeProvider]:
    """Build (not start) a provider for `bind`'s zone; options override the defaults."""
    made: list[Rfc2136Provider] = []

    def build(**options: Any) -> Rfc2136Provider:
        base: dict[str, Any] = {
            "server": "127.0.0.1",
            "port": bind.port,
            "key_name": bind.key.name,
            "secret_file": str(bind.key_file),
            **FAST,
        }
        p = create_provider("rfc2136", ZONE, base | options)
        assert isinstance(p, Rfc2136Provider)
        made.append(p)
        return p

    yield build
    for p in made:
        await p.close()
