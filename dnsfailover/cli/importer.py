"""`dnsfailover import` (a zone from a zone file, an AXFR or Route 53, as config YAML) and
`dnsfailover schema` (the config's JSON Schema, for editors).

Both import their machinery when they run, so `dnsfailover --version` stays quick.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dnsfailover.cli.args import EXIT_ERROR, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from dnsfailover.importing.sources import TsigKey
    from dnsfailover.importing.zone import ImportedZone

_KEY_BLOCK = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{')
_ALGORITHM = re.compile(r"algorithm\s+\"?([A-Za-z0-9-]+)\"?\s*;")


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    about = (
        "read a zone from a BIND zone file, an AXFR or a Route 53 hosted zone and print it as "
        "config YAML (records it cannot express are listed, with a warning each)"
    )
    sp = sub.add_parser("import", help=about, description=about, parents=parents)
    sp.add_argument("zone", metavar="ZONE", help="the zone's name, e.g. example.com.")
    source = sp.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-file", metavar="FILE", type=Path, help="a zone (master) file")
    source.add_argument(
        "--axfr", metavar="HOST[:PORT]", help="transfer the zone from this server (port 53)"
    )
    source.add_argument("--route53", action="store_true", help="list the Route 53 hosted zone")
    tsig = sp.add_argument_group("AXFR with TSIG (the secret is never printed)")
    secret = tsig.add_mutually_exclusive_group()
    secret.add_argument(
        "--tsig-key-file",
        metavar="FILE",
        help="the key: a `tsig-keygen` block (name and algorithm from it) or a base64 secret",
    )
    secret.add_argument("--tsig-secret-env", metavar="VAR", help="the base64 secret's variable")
    tsig.add_argument("--tsig-name", metavar="NAME", help="the key's name (if not in the file)")
    tsig.add_argument("--tsig-algorithm", metavar="ALG", help="default hmac-sha256")
    tsig.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="default 30")
    r53 = sp.add_argument_group("Route 53 (credentials from the usual AWS chain)")
    r53.add_argument("--hosted-zone-id", metavar="ID", help="default: the zone found by name")
    r53.add_argument("--profile", metavar="NAME", help="a profile of the shared AWS config")
    r53.add_argument("--region", metavar="REGION", help="default us-east-1")
    r53.add_argument("--endpoint-url", metavar="URL", help="another endpoint (a VPC one, moto)")
    out = sp.add_argument_group("output")
    out.add_argument(
        "--config",
        dest="whole",
        action="store_true",
        help="a whole minimal config (zones: and the zone) instead of the zone's entry",
    )
    out.add_argument("-o", "--output", metavar="FILE", type=Path, help="write here, not stdout")
    out.add_argument(
        "--strict", action="store_true", help="exit 1 when any record set is not imported"
    )
    sp.set_defaults(func=cmd_import)

    about = "print the config's JSON Schema (for editors: yaml-language-server, VS Code)"
    sp = sub.add_parser("schema", help=about, description=about, parents=parents)
    sp.add_argument("-o", "--output", metavar="FILE", type=Path, help="write here, not stdout")
    sp.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    from dnsfailover.config.json_schema import schema_text

    return _write(schema_text(), args.output)


def cmd_import(args: argparse.Namespace) -> int:
    from dnsfailover.importing.emit import render
    from dnsfailover.importing.sources import absolute_origin
    from dnsfailover.importing.zone import ImportFailed

    try:
        origin = absolute_origin(args.zone)
        key = _tsig_key(args)
        server = _host_port(args.axfr) if args.axfr is not None else None
    except (ImportFailed, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not args.debug:  # boto3 says where it found credentials: not news for an import
        logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        zone, source = _read(args, origin, key, server)
        text = render(zone, source, whole=args.whole)
    except ImportFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    for warning in zone.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    if (code := _write(text, args.output)) != EXIT_OK:
        return code
    skipped = f", {len(zone.skipped)} not imported" if zone.skipped else ""
    where = f" to {args.output}" if args.output else ""
    print(f"{origin}: {zone.set_count} record set(s) imported{where}{skipped}", file=sys.stderr)
    return EXIT_ERROR if args.strict and zone.skipped else EXIT_OK


def _read(
    args: argparse.Namespace, origin: str, key: TsigKey | None, server: tuple[str, int] | None
) -> tuple[ImportedZone, str]:
    from dnsfailover.importing.route53 import from_route53
    from dnsfailover.importing.sources import from_axfr, from_file

    if args.from_file is not None:
        return from_file(args.from_file, origin), f"zone file {args.from_file}"
    if server is not None:
        host, port = server
        signed = f" (TSIG {key.name})" if key else ""
        return from_axfr(host, port, origin, key, args.timeout), f"AXFR {args.axfr}{signed}"
    zone = from_route53(
        origin,
        hosted_zone_id=args.hosted_zone_id,
        region=args.region,
        profile=args.profile,
        endpoint_url=args.endpoint_url,
    )
    return zone, f"Route 53 {args.hosted_zone_id or origin}"


def _host_port(text: str) -> tuple[str, int]:
    """`192.0.2.1`, `192.0.2.1:5353`, `::1`, `[::1]:5353` → (address, port)."""
    host, port = text.strip(), "53"
    if host.startswith("[") and "]" in host:
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif host.count(":") == 1:
        host, port = host.split(":")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--axfr {text}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--axfr {text}: {port!r} is not a port")
    return host, int(port)


def _tsig_key(args: argparse.Namespace) -> TsigKey | None:
    """The TSIG key of `--tsig-*`, or None; errors name the key and the source, never the
    secret."""
    from dnsfailover.config.schema import TsigKeyConfig
    from dnsfailover.config.secrets import TsigSecretError, read_secret
    from dnsfailover.importing.sources import ALGORITHMS, TsigKey

    if args.tsig_key_file is None and args.tsig_secret_env is None:
        if args.tsig_name or args.tsig_algorithm:
            raise ValueError("--tsig-name and --tsig-algorithm need --tsig-key-file or "
                             "--tsig-secret-env")  # fmt: skip
        return None
    if args.axfr is None:
        raise ValueError("a TSIG key is for --axfr")
    block = ""
    if args.tsig_key_file is not None:
        try:
            block = Path(args.tsig_key_file).read_text(errors="replace")[:65536]
        except OSError:
            block = ""  # read_secret says why, below
    name = args.tsig_name or (m.group(1) if (m := _KEY_BLOCK.search(block)) else None)
    if not name:
        raise ValueError('--tsig-name is needed: the key file holds no `key "NAME" {` block')
    found = _ALGORITHM.search(block)
    algorithm = (args.tsig_algorithm or (found.group(1) if found else "hmac-sha256")).lower()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"TSIG algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    source = TsigKeyConfig(secret_file=args.tsig_key_file, secret_env=args.tsig_secret_env)
    try:
        secret = read_secret(name, source)
    except TsigSecretError as e:
        raise ValueError(str(e)) from None
    return TsigKey(name.rstrip(".").lower(), algorithm, secret)


def _write(text: str, output: Path | None) -> int:
    if output is None:
        sys.stdout.write(text)
        return EXIT_OK
    partial = output.with_name(f".{output.name}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, output)
    except OSError as e:
        print(f"error: cannot write {output}: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
