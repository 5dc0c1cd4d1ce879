"""What every command shares: exit codes and argument helpers."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dnsfailover.config.schema import Config

EXIT_OK = 0
EXIT_ERROR = 1  # it ran and failed: unreachable, refused, an endpoint or provider failed
EXIT_USAGE = 2  # the input is wrong: a bad config, a bad argument, a bad request


def parse_hostport(text: str) -> tuple[str, int]:
    """`127.0.0.1:5353`, `[::1]:0` or `localhost:53` → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IP address") from None
    return host, int(port)


def parse_api(text: str) -> tuple[str, int] | None:
    return None if text.strip().lower() == "off" else parse_hostport(text)


def region_problem(config: Config, region: str) -> str | None:
    """Why `--region` is wrong for `config`: it must name a declared region, or be `local`
    (the one region of a config that declares none); None when it is right."""
    if config.regions:
        if region in config.regions:
            return None
        return f"--region {region} is not one of the config's regions ({', '.join(config.regions)})"
    if region == "local":
        return None
    return (
        f"--region {region}: the config declares no regions, so its only region is local; "
        "declare it under regions: or leave --region out"
    )


def who() -> str:
    """The author recorded for an operator action: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


#: the config path every command that takes CONFIG falls back to
CONFIG_ENV = "DNSFAILOVER_CONFIG"


def config_argument(sp: argparse.ArgumentParser, help: str = "the config file") -> None:
    """The CONFIG positional: optional, $DNSFAILOVER_CONFIG when left out (see
    `resolve_config`)."""
    sp.add_argument(
        "config", metavar="CONFIG", nargs="?", default=None, help=f"{help} (default ${CONFIG_ENV})"
    )


def resolve_config(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """Fill `args.config` from $DNSFAILOVER_CONFIG when CONFIG was left out; the usage error
    when neither is there, else None."""
    if getattr(args, "config", "") is not None:
        return None
    path = environ.get(CONFIG_ENV, "").strip()
    if not path:
        return f"CONFIG is required: give the config file's path or set {CONFIG_ENV}"
    args.config = path
    return None
