"""`dnsfailover simulate CONFIG --down X ...`: the command around `engine.simulate`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dnsfailover.cli.args import EXIT_OK, EXIT_USAGE
from dnsfailover.config.load import load as load_config
from dnsfailover.engine.simulate import SimulateError, render, resolve, simulate, to_json
from dnsfailover.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Register `simulate` on the `dnsfailover` command's subparsers."""
    sp = subparsers.add_parser(
        "simulate",
        help="show the answers and loads if regions, tiers or endpoints went down",
        description="What-if: every name's answer, weights and the load each survivor "
        "would carry if the given endpoints, tiers or regions were down.  No probes, no "
        "DNS changes, no state store.",
    )
    sp.add_argument("config", metavar="CONFIG")
    sp.add_argument(
        "--down",
        action="append",
        default=[],
        metavar="REGION|TIER|tier:NAME|ADDRESS",
        help="take this endpoint address, tier, or region (its tier) down; repeatable",
    )
    sp.add_argument("--json", action="store_true", help="print JSON instead of text")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    try:
        down = resolve(config, args.down)
    except SimulateError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    result = simulate(config, down)
    if args.json:
        print(json.dumps(to_json(config, args.down, result), indent=2, sort_keys=True))
    else:
        print(render(config, args.down, result))
    return EXIT_OK
