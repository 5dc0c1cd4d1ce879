"""`dnsfailover sync ZONE`: make a running server re-read an external provider's zone and
apply the latest decision to it now (after removing a conflicting record by hand, say),
through the API like the other operator commands (`POST /api/v1/zones/ZONE/sync`).

Exit codes: 0 the zone is in sync; 1 it is not (names held back, a provider failure: the
output says which and why), or the server could not be reached; 2 a wrong request (unknown
zone, missing token).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

from dnsfailover.cli.args import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from dnsfailover.cli.client import ApiError, Client, Unreachable, base_url, read_token

#: seconds to wait for the round (a provider's deadline and confirmation may take a while)
DEFAULT_TIMEOUT = 120.0


def show_sync(data: dict[str, Any]) -> str:
    sync = data["sync"]
    zone = data["zone"]
    if sync["in_sync"]:
        return f"{zone}: in sync ({sync['applies']} apply(s), {sync['plans']} plan(s) so far)"
    lines = [f"{zone}: NOT in sync"]
    held = sync.get("held") or {}
    if held:
        lines.append(f"  {len(held)} record set(s) held back:")
        lines += [f"    {key}: {why}" for key, why in sorted(held.items())]
    elif sync.get("last_error"):
        lines.append(f"  {sync['last_error']}")
    elif not sync["plans"]:
        lines.append("  nothing planned yet (no decision, or this node does not write to it)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        client = Client(base_url(args.api), read_token(args.token_file), timeout=args.timeout)
        zone = urllib.parse.quote(args.zone, safe="")
        data = client.post(f"/api/v1/zones/{zone}/sync", {})
    except Unreachable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.status is not None and 400 <= e.status < 500:
            return EXIT_USAGE
        return EXIT_ERROR
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else show_sync(data))
    return EXIT_OK if data["sync"]["in_sync"] else EXIT_ERROR


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `sync` to the `dnsfailover` parser."""
    help = "re-read an external provider's zone and apply the latest decision to it now"
    sp = subparsers.add_parser("sync", help=help, description=help, parents=list(parents))
    sp.add_argument("zone", metavar="ZONE", help="the zone's origin (example.com.)")
    sp.add_argument("--api", metavar="URL", help="API base URL (default $DNSFAILOVER_API or "
                    "http://127.0.0.1:8053)")  # fmt: skip
    sp.add_argument("--json", action="store_true", help="print the API's JSON")
    sp.add_argument("--token-file", metavar="PATH", help="bearer token (default "
                    "$DNSFAILOVER_API_TOKEN)")  # fmt: skip
    sp.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the round (default {DEFAULT_TIMEOUT:g})",
    )
    sp.set_defaults(func=run)
