"""`dnsfailover simulate CONFIG --down X ...`: the command around `engine.simulate`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from dnsfailover.cli.args import EXIT_OK, EXIT_USAGE, config_argument
from dnsfailover.errors import ConfigError

if TYPE_CHECKING:  # `dnsfailover --help` builds this parser: the rest is imported by `run`
    from dnsfailover.config.schema import Config
    from dnsfailover.geo.locate import Network


def add_parser(subparsers: Any) -> None:
    """Register `simulate` on the `dnsfailover` command's subparsers."""
    sp = subparsers.add_parser(
        "simulate",
        help="show the answers and loads if regions, tiers or endpoints went down",
        description="What-if: every name's answer, weights and the load each survivor "
        "would carry if the given endpoints, tiers or regions were down.  No probes, no "
        "DNS changes, no state store.",
    )
    config_argument(sp)
    sp.add_argument(
        "--down",
        action="append",
        default=[],
        metavar="REGION|TIER|tier:NAME|ADDRESS",
        help="take this endpoint address, tier, or region (its tier) down; repeatable",
    )
    sp.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="ADDRESS[/PREFIX]",
        help="show where this client (an address or client subnet) goes for each steered "
        "name: its location group and answer; repeatable",
    )
    sp.add_argument("--json", action="store_true", help="print JSON instead of text")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnsfailover.config.geocheck import open_steering
    from dnsfailover.config.load import load as load_config
    from dnsfailover.engine.simulate import (
        SimulateError,
        clients,
        render,
        resolve,
        simulate,
        to_json,
    )

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
    try:
        networks = [client_network(config, text) for text in args.client]
    except ValueError as e:
        print(f"error: --client {e}", file=sys.stderr)
        return EXIT_USAGE
    result = simulate(config, down)
    steering = open_steering(config) if networks else None
    if networks and steering is None:
        print("error: --client: no record of this config is steered", file=sys.stderr)
        return EXIT_USAGE
    seen = clients(config, result, steering, networks)
    if args.json:
        print(json.dumps(to_json(config, args.down, result, seen), indent=2, sort_keys=True))
    else:
        print(render(config, args.down, result, seen))
    return EXIT_OK


def client_network(config: Config, text: str) -> Network:
    """A --client value: an address or client subnet, cut to the config's ECS source limits
    as the server cuts a query's.

    :raises ValueError: naming the value.
    """
    from dnsfailover.geo.ecs import ClientSubnet, SourceLimits, network_of

    try:
        network = network_of(text.strip())
    except ValueError:
        example = "192.0.2.1, 2001:db8::/48"
        raise ValueError(f"{text!r} is not an address or network ({example})") from None
    ecs = config.geo.ecs
    limits = SourceLimits(ecs.max_source_v4, ecs.max_source_v6)
    return limits.lookup(ClientSubnet(network, 0))
