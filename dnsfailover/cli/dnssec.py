"""`dnsfailover dnssec ds|keys CONFIG ZONE`: a signed zone's keys, and the DS records its
parent publishes.

The keys are the ones the node signs with: `key_files:` when the zone lists them, else
those generated into the state directory beside `--state` (`<state>.keys/<zone>/`, made on
first need here as by the node, in BIND's format).  Only public data is printed: DS
records on stdout (so `> ds.txt` keeps them), what was generated and where on stderr.

Exit codes: 0 done; 1 a key cannot be read or made; 2 a bad config, an unknown zone, or a
zone without `dnssec:`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dnsfailover.cli.args import EXIT_OK, EXIT_USAGE, config_argument

if TYPE_CHECKING:
    from dnsfailover.dnssec.keys import KeySet


def _keyset(args: argparse.Namespace) -> KeySet | None:
    """The zone's keys (generated into the state directory when missing), or None after
    printing why there are none."""
    from dnsfailover.config.load import load
    from dnsfailover.dnssec import keys
    from dnsfailover.fields import absolute_name

    config = load(args.config)
    origin = absolute_name(args.zone, ".")
    zone = config.zones.get(origin)
    if zone is None:
        print(
            f"error: {origin} is not a zone of {args.config} ({', '.join(config.zones)})",
            file=sys.stderr,
        )
        return None
    if zone.dnssec is None:
        print(f"error: zone {origin} has no dnssec: section (docs/dnssec.md)", file=sys.stderr)
        return None
    section = zone.dnssec
    if section.key_paths:
        return keys.load(section.key_paths, origin, section.algorithm, section.keys)
    directory = keys.keys_directory(args.state, origin)
    found = keys.ensure(directory, origin, section.algorithm, section.keys)
    for key in found.keys:
        files = key.files
        if files is not None and files[0] in found.generated:
            print(
                f"dnssec: generated {key.role.upper()} {key.tag} "
                f"({keys.ALGORITHMS[key.algorithm]}) for {origin}: {files[0]}, {files[1]}",
                file=sys.stderr,
            )
    return found


def cmd_ds(args: argparse.Namespace) -> int:
    found = _keyset(args)
    if found is None:
        return EXIT_USAGE
    print(
        f"warning: this version does not serve {found.zone} signed yet: a DS at the parent for"
        " an unsigned zone makes validating resolvers refuse it; publish it only once the"
        " server signs (docs/dnssec.md)",
        file=sys.stderr,
    )
    for key in found.ksks:
        ds = key.ds()
        digest = ds.digest.hex().upper()
        print(f"{found.zone} IN DS {ds.key_tag} {ds.algorithm} {ds.digest_type} {digest}")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from dnsfailover.dnssec.keys import ALGORITHMS

    found = _keyset(args)
    if found is None:
        return EXIT_USAGE
    print(f"{'TAG':>5}  {'ALGORITHM':<19} {'ROLE':<4} {'FLAGS':>5}  FILES")
    for key in found.keys:
        algorithm = f"{key.algorithm} {ALGORITHMS[key.algorithm]}"
        files = ", ".join(str(f) for f in key.files) if key.files else "-"
        print(f"{key.tag:>5}  {algorithm:<19} {key.role:<4} {key.flags:>5}  {files}")
    return EXIT_OK


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
    default_state: str,
) -> None:
    """Add `dnssec ds` and `dnssec keys` to the `dnsfailover` parser."""
    about = "a signed zone's keys and the DS records for its parent (docs/dnssec.md)"
    group = subparsers.add_parser("dnssec", help=about, description=about, parents=list(parents))
    actions = group.add_subparsers(dest="dnssec_command", required=True, metavar="ACTION")
    for name, func, what in (
        ("ds", cmd_ds, "print the DS records (SHA-256) of the zone's KSK or CSK for its parent, "
         "generating the keys into the state directory when missing"),
        ("keys", cmd_keys, "list the zone's keys: tag, algorithm, role and files (no "
         "private material)"),
    ):  # fmt: skip
        sp = actions.add_parser(name, help=what, description=what, parents=list(parents))
        config_argument(sp)
        sp.add_argument("zone", metavar="ZONE", help="the zone's origin (example.com.)")
        sp.add_argument(
            "--state",
            default=default_state,
            metavar="PATH",
            help=f"the node's state store: keys are in PATH.keys/ (default ./{default_state})",
        )
        sp.set_defaults(func=func)
