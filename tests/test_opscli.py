"""The operator commands against a live in-process service and API (real HTTP, real DNS)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from pathlib import Path

import pytest
from api_support import API, TOKEN, WWW, A, B, C, D, Live, live_service

from dnsfailover.cli.ops import register


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnsfailover")
    register(p.add_subparsers(dest="command", required=True))
    return p


async def cli(live: Live | None, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run one command on a thread (it blocks on HTTP while this loop serves the API)."""
    extra = ["--api", live.base] if live is not None and "--api" not in argv else []
    args = parser().parse_args([*argv, *extra])
    code = await asyncio.to_thread(args.func, args)
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNSFAILOVER_API_TOKEN", TOKEN)


async def test_read_only_commands_show_tables_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with live_service(tmp_path) as live:
        code, out = await cli(live, capsys, "status")
        assert code == 0
        assert out.splitlines()[0] == "2 names: 2 healthy"  # the summary first
        assert out.splitlines()[1].endswith(", standalone")  # the API's "mode": single
        assert out.splitlines()[3].split() == ["NAME", "ANSWER", "HEALTH", "TIER", "WHY"]
        www_line = next(line for line in out.splitlines() if line.startswith(WWW))
        assert f"{A}, {B}" in www_line
        assert "healthy" in www_line
        assert "example.test." in out
        code, out = await cli(live, capsys, "status", "--json")
        assert code == 0
        assert json.loads(out)["mode"] == "single"

        code, out = await cli(live, capsys, "endpoints")
        assert code == 0
        row = next(line for line in out.splitlines() if line.startswith(API) and D in line)
        assert "backup" in row
        assert "UP standby" in row  # healthy, but the passive tier is not answered
        assert "local=up/" in row

        code, out = await cli(live, capsys, "explain", "api")
        assert code == 0
        assert out.startswith(f"{API} answers {C}")
        assert "tier primary (serving)" in out

        code, out = await cli(live, capsys, "events", "--limit", "5")
        assert code == 0
        assert 0 < len(out.splitlines()) <= 6

        code, out = await cli(live, capsys, "explain", "nope")
        assert code == 2
        assert out.startswith("error: 'nope' is not a managed name")


async def test_drain_undrain_force_failover_failback_take_effect_in_dns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: None
) -> None:
    async with live_service(tmp_path) as live:
        await live.until_answer(WWW, (A, B))
        code, out = await cli(
            live, capsys, "drain", A, "--name", "www", "--reason", "patching", "--expires", "1h"
        )
        assert code == 0, out
        assert "override" in out
        assert f"drain {WWW} {A}" in out
        assert "patching" in out
        await live.until_answer(WWW, (B,))
        code, out = await cli(live, capsys, "undrain", A, "--reason", "patched")
        assert code == 0, out
        assert "removed" in out
        await live.until_answer(WWW, (A, B))

        code, out = await cli(live, capsys, "force", "down", B, "--reason", "test", "--json")
        assert code == 0, out
        forced = json.loads(out)["override"]
        assert forced["action"] == "force_down"
        await live.until_answer(WWW, (A,))
        code, out = await cli(live, capsys, "undrain", forced["id"], "--reason", "done")
        assert code == 0, out
        await live.until_answer(WWW, (A, B))

        code, out = await cli(live, capsys, "failover", "api", "--reason", "drill")
        assert code == 0, out
        await live.until_answer(API, (D,))
        code, out = await cli(live, capsys, "failback", "api", "--reason", "drill over")
        assert code == 0, out
        await live.until_answer(API, (C,))

        code, out = await cli(live, capsys, "events", "--limit", "200")
        assert "patching" in out
        assert "drill over" in out


async def test_refusals_and_bad_requests_exit_nonzero_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: None
) -> None:
    async with live_service(tmp_path) as live:
        await asyncio.to_thread(live.endpoints.stop, B)
        await live.until_answer(WWW, (A,))
        code, out = await cli(live, capsys, "drain", A, "--name", WWW, "--reason", "oops")
        assert code == 1
        assert out.startswith("error: refused by an interlock")
        assert len(out.splitlines()) == 1
        code, out = await cli(live, capsys, "drain", "127.0.0.99", "--reason", "typo")
        assert code == 2
        assert "127.0.0.99 is not an endpoint" in out
        code, out = await cli(live, capsys, "failover", "api", "--to", "moon", "--reason", "r")
        assert code == 2
        assert "no tier 'moon'" in out
        code, out = await cli(live, capsys, "undrain", C, "--reason", "r")
        assert code == 2
        assert "no override or drain matches" in out
        code, out = await cli(live, capsys, "drain", A, "--reason", "r", "--expires", "later")
        assert code == 2
        assert "expires_in" in out
    assert TOKEN not in out


async def test_without_a_token_mutating_commands_say_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DNSFAILOVER_API_TOKEN", raising=False)
    async with live_service(tmp_path) as live:
        code, out = await cli(live, capsys, "drain", A, "--reason", "r")
        assert code == 2
        assert "needs the API token" in out
        secret = tmp_path / "token"
        secret.write_text(TOKEN + "\n")
        code, out = await cli(
            live, capsys, "drain", A, "--reason", "r", "--token-file", str(secret)
        )
        assert code == 0, out


async def test_unreachable_server_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        url = f"http://127.0.0.1:{port}"
        code, out = await cli(None, capsys, "status", "--api", url)
    assert code == 1
    assert out == (
        f"error: cannot reach the dnsfailover API at {url}: connection refused; "
        "is `dnsfailover serve --api` running?\n"
    )
