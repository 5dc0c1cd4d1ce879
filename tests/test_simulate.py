"""`dnsfailover simulate`: what-if answers and loads, through its parser and `run`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dnsfailover.cli import simulate

POLICY = str(Path(__file__).parent.parent / "config" / "policy.yaml")


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    simulate.add_parser(parser.add_subparsers())
    args = parser.parse_args(["simulate", *argv])
    code: int = args.func(args)
    return code


def test_region_down_spreads_load_over_the_next_tiers(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(POLICY, "--down", "us-east", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    api = out["names"]["api.example.test."]
    assert api["tier"] == "us-west"
    assert api["answer"] == ["127.0.0.31", "127.0.0.32", "127.0.0.41"]
    assert all(api["loads"][a] <= api["capacity"][a] for a in api["answer"])
    assert out["endpoints"]["127.0.0.41"]["capacity"] == 500
    assert out["frozen"] is None


def test_text_output_names_loads_and_capacities(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(POLICY, "--down", "127.0.0.11", "--down", "127.0.0.21") == 0
    out = capsys.readouterr().out
    assert "127.0.0.12  weight 255  load 200 / capacity 200" in out
    assert "(shadow: would publish)" in out
    assert "capacity: spread into tier(s) us-west" in out


def test_too_much_down_says_the_breaker_would_freeze(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(POLICY, "--down", "tier:us-east", "--down", "us-west") == 0
    out = capsys.readouterr().out
    assert "WARNING: circuit breaker" in out
    assert "OVER CAPACITY" in out
    assert "127.0.0.99" in out


@pytest.mark.parametrize("down", ["nowhere", "192.0.2.77", "tier:nowhere"])
def test_unknown_down_is_a_usage_error(down: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(POLICY, "--down", down) == 2
    assert "no endpoint, tier or region" in capsys.readouterr().err


def test_bad_config_prints_problems_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(POLICY).read_text().replace("down_pct: 50", "down_pct: 500"))
    assert run(str(bad), "--down", "us-east") == 2
    err = capsys.readouterr().err
    assert "bad.yaml:" in err
    assert "down_pct" in err


STEERING = str(Path(__file__).parent.parent / "config" / "steering.yaml")


def test_clients_are_shown_where_a_region_down_sends_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """config/steering.yaml steers by its `geo.nets` labels: the EU office's clients go to
    us when eu is down; the US office's stay on us; everyone else is the default group."""
    assert run(STEERING, "--down", "eu", "--client", "10.10.1.5", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    (office,) = out["clients"]
    assert office["client"] == "10.10.1.0/24"  # cut to the ECS source limit, as the server
    assert office["group"] == "eu,us"
    assert office["tier"] == "us"
    assert office["answer"] == ["127.0.0.42"]
    assert office["scope"] == 16
    assert out["names"]["www.example.test.@eu,us"]["tier"] == "us"
    assert run(STEERING, "--client", "10.10.1.5", "--client", "fd00:20::1") == 0
    text = capsys.readouterr().out
    assert "client 10.10.1.0/24: www.example.test. group eu,us (net office-eu) tier eu" in text
    assert "client fd00:20::/56: www.example.test. group us,eu (net office-us) tier us" in text


def test_a_client_for_a_config_without_steering_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(POLICY, "--client", "192.0.2.1") == 2
    assert "no record of this config is steered" in capsys.readouterr().err
    assert run(STEERING, "--client", "not-an-address") == 2
    assert "'not-an-address' is not an address or network" in capsys.readouterr().err
