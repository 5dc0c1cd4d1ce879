"""`dnsfailover drill CONFIG --tier NAME [--for 5m]`: a failover drill against a running server.

Through the server's HTTP API it forces the tier down (an override that expires by itself
shortly after the drill, should the drill die), watches the served DNS move off the tier,
holds, removes the override (and asks for the failback a `failback: manual` record needs),
and watches the answer come back.  It prints what it saw and how long each way took.
Exit codes: 0 passed; 1 refused by an interlock (nothing changed), the server could not be
reached, or the answer did not move or come back in time; 2 a bad config or request.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from dnsfailover.cli.args import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    config_argument,
    parse_hostport,
    who,
)
from dnsfailover.cli.client import ApiError, Client, Unreachable, base_url, read_token
from dnsfailover.errors import ConfigError

if TYPE_CHECKING:  # `dnsfailover --help` builds this parser: the rest is imported when used
    from dnsfailover.drills.procedure import DrillOps
    from dnsfailover.drills.spec import Answer, DrillReport

DEFAULT_DNS = "127.0.0.1:5353"
REFUSED_HINT = "; add force to override it"  # the API's advice; a drill is never forced


def _duration(text: str) -> float:
    from dnsfailover.fields import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the drill must last longer than zero")
    return seconds


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `drill` to the `dnsfailover` parser."""
    about = "force a tier down for a while, verify the served answers fail over and come back"
    sp = subparsers.add_parser("drill", help=about, description=about, parents=list(parents))
    config_argument(sp, help="the running server's config")
    sp.add_argument("--tier", required=True, help="the tier to force down (it must be serving)")
    sp.add_argument("--name", help="the managed name, when several have that tier")
    sp.add_argument(
        "--for",
        dest="duration",
        type=_duration,
        default=300.0,
        metavar="DURATION",
        help="how long to hold the tier down (default 5m)",
    )
    sp.add_argument(
        "--dns",
        type=parse_hostport,
        default=parse_hostport(DEFAULT_DNS),
        metavar="HOST:PORT",
        help=f"the served DNS to query (default {DEFAULT_DNS})",
    )
    sp.add_argument(
        "--api",
        metavar="URL",
        help="API base URL (default $DNSFAILOVER_API or http://127.0.0.1:8053)",
    )
    sp.add_argument(
        "--token-file", metavar="PATH", help="bearer token (default $DNSFAILOVER_API_TOKEN)"
    )
    sp.add_argument("--reason", default="failover drill", help="recorded in the history")
    sp.add_argument("--json", action="store_true", help="print the report as JSON")
    sp.set_defaults(func=run)


def api_ops(client: Client, dns: tuple[str, int], author: str) -> DrillOps:
    """A drill over the HTTP API, reading answers from the served DNS at `dns`."""
    import asyncio

    from dnsfailover.drills.procedure import DrillError, DrillOps, DrillRefused, served

    async def call(method: str, path: str, body: dict[str, Any]) -> Any:
        try:
            return await asyncio.to_thread(getattr(client, method), path, body)
        except ApiError as e:
            if e.status == 409:
                raise DrillRefused(str(e).removesuffix(REFUSED_HINT)) from None
            raise DrillError(str(e)) from None

    async def set_override(body: dict[str, Any]) -> str:
        created = await call("post", "/api/v1/overrides", body)
        return str(created["override"]["id"])

    async def remove_override(oid: str, reason: str) -> None:
        try:
            await call(
                "delete",
                f"/api/v1/overrides/{urllib.parse.quote(oid)}",
                {"reason": reason, "who": author},
            )
        except DrillError as e:
            if "no override" not in str(e):  # already expired: nothing left to remove
                raise

    async def query(name: str, rtype: str) -> Answer | None:
        return await served(*dns, name, rtype)

    async def why(name: str) -> str | None:
        try:
            status = await asyncio.to_thread(client.get, "/api/v1/status")
        except ApiError:
            return None
        return next((n["reason"] for n in status["names"] if n["name"] == name), None)

    return DrillOps(set_override, remove_override, query, why)


def report_lines(r: DrillReport) -> list[str]:
    def show(answer: Answer) -> str:
        return ", ".join(answer) or "(empty)"

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}s"

    out = [
        f"drill {r.name} tier {r.tier} (failback: {r.failback}), held {r.duration:g}s, "
        f"override {r.override or '-'}",
        f"  before:  {show(r.before):<32} serial {r.serial_before}",
        f"  during:  {show(r.during):<32} serial {r.serial_during}",
        f"  after:   {show(r.after):<32} serial {r.serial_after}",
        f"  time to fail over: {secs(r.failover_time)}",
        f"  time to recover:   {secs(r.recovery_time)} (from removing the override)",
        f"  hold: answer off tier {r.tier} in {r.verified} check(s)"
        + (f", {r.unanswered} unanswered" if r.unanswered else ""),
        *(f"  note: {n}" for n in r.notes),
    ]
    out.append("result: passed" if r.ok else f"result: FAILED: {r.problem}")
    return out


def run(args: argparse.Namespace) -> int:
    import asyncio

    from dnsfailover.config.drill_targets import DrillTargetError
    from dnsfailover.config.load import load
    from dnsfailover.drills.procedure import DrillError, DrillRefused, run_drill
    from dnsfailover.drills.spec import DrillSpec

    try:
        config = load(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = DrillSpec.of(config, args.tier, args.name, args.duration, args.reason)
        client = Client(base_url(args.api), read_token(args.token_file))
    except (DrillTargetError, ApiError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    author = who()
    host, port = args.dns
    print(
        f"drill: forcing {spec.name} tier {spec.tier} down for {spec.duration:g}s "
        f"(answers from {host}:{port}, API {client.base})",
        file=sys.stderr,
    )
    try:
        report = asyncio.run(run_drill(spec, api_ops(client, args.dns, author), who=author))
    except DrillRefused as e:
        print(f"error: drill refused, nothing changed: {e}", file=sys.stderr)
        return EXIT_ERROR
    except DrillError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:  # the whole report, recovery time included, into the server's history
        client.post(
            "/api/v1/events",
            {"kind": "drill", "subject": spec.name, "message": f"{report.summary()} by {author}"},
        )
    except (ApiError, Unreachable) as e:
        print(f"warning: the report could not be recorded in the history: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps({**asdict(report), "ok": report.ok}, indent=2, sort_keys=True))
    else:
        print("\n".join(report_lines(report)))
    return EXIT_OK if report.ok else EXIT_ERROR
