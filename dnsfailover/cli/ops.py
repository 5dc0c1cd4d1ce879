"""The operator commands that mirror the HTTP API: status, endpoints, explain, events,
drain, undrain, force, failover, failback, reload, reset-breaker.

Each talks to a running `dnsfailover serve` over its API (`--api URL`, $DNSFAILOVER_API,
default http://127.0.0.1:8053).  Output is a human table, or the API's JSON with `--json`.
Exit codes: 0 done; 1 the server could not be reached, refused (an interlock) or failed;
2 the request was wrong (unknown name, missing token...), as for every other command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from dnsfailover.cli.args import EXIT_ERROR, EXIT_OK, EXIT_USAGE, who
from dnsfailover.cli.client import ApiError, Client, Unreachable, base_url, read_token

Command = Callable[[Client, argparse.Namespace], Any]


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell; the last column is left ragged."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers) - 1)]
    lines = []
    for r in cells:
        padded = [c.ljust(w) for c, w in zip(r, widths, strict=False)]
        lines.append("  ".join([*padded, r[-1]]).rstrip())
    return "\n".join(lines)


def when(at: float | None, now: float | None = None) -> str:
    if not at:
        return "-"
    shown = time.strftime("%H:%M:%S", time.localtime(at))
    if now is None:
        return shown
    s = max(0, int(now - at))
    rel = f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"
    return f"{shown} ({rel} ago)"


# -- read-only --------------------------------------------------------------------------------


def sync_state(sync: dict[str, Any]) -> str:
    if sync["in_sync"]:
        return "in sync"
    held = sync.get("held") or {}
    return f"{len(held)} held back (dnsfailover sync ZONE)" if held else "pending"


def show_status(data: dict[str, Any]) -> str:
    c = data["cluster"]
    # "mode" in the CLI is only the policy mode (live/shadow); the API's `mode` here is the
    # node's setup (single, cluster), and a name's `mode` is its health
    setup = "standalone" if data["mode"] == "single" else data["mode"]
    head = f"node {data['node']}, region {data['region']}, {setup}"
    if c.get("leader") is not None:
        head += ", leader" if c["leader"] else ", follower"
    if c.get("degraded"):
        head += f", degraded: {c['degraded']}"
    if c.get("isolated_regions"):
        head += f", isolated regions: {', '.join(c['isolated_regions'])}"
    names = table(
        [
            (
                n["name"],
                ", ".join(n["answer"]) or "(NODATA)",
                n.get("state_text", n["mode"] or "-")
                + (" (shadow mode)" if n.get("shadow") else ""),
                n["tier"] or "-",
                n["reason"],
            )
            for n in data["names"]
        ],
        ["NAME", "ANSWER", "HEALTH", "TIER", "WHY"],
    )
    zones = table(
        [
            (
                z["zone"],
                z["serial"],
                z["provider"],
                "-" if z["sync"] is None else sync_state(z["sync"]),
                dnssec_state(z.get("dnssec")),
            )
            for z in data["zones"]
        ],
        ["ZONE", "SERIAL", "PROVIDER", "SYNC", "DNSSEC"],
    )
    out = [head, "", names, "", zones]
    if "summary" in data:  # the line to read first: `3 names: 1 healthy, 1 failed over, ...`
        out.insert(0, data["summary"]["text"])
    if data["overrides"]:
        out += ["", "overrides:", *(f"  {o['id']}  {o['description']}" for o in data["overrides"])]
    return "\n".join(out)


def dnssec_state(signed: dict[str, Any] | None) -> str:
    """`CSK 12345 NSEC, expires 2026-12-15 18:00Z` (the first signature), or its problem."""
    if not signed:
        return "-"
    if signed.get("problem"):
        return f"PROBLEM: {signed['problem']}"
    keys = " ".join(f"{k['role'].upper()} {k['tag']}" for k in signed["keys"])
    expiry = time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(signed["next_expiry"]))
    return f"{keys} {signed['denial'].upper()}, expires {expiry}"


def endpoint_state(e: dict[str, Any]) -> str:
    """`UP serving`, `UP standby` (its tier is not serving), `DOWN`, `DRAINED`..."""
    role: str | None = e.get("role")
    state = str(e["state"]).upper()
    if role is None:  # an older server
        return state + ("" if e["in_answer"] else " (out)")
    if role in ("serving", "standby"):
        return f"UP {role}"
    if role == "held":
        return "UP held out"
    if role == "drained":
        return f"DRAINED ({state})"
    return role.upper() + (" (answered)" if e["in_answer"] else "")


def show_endpoints(data: dict[str, Any]) -> str:
    now = data.get("now")
    rows = []
    for e in data["endpoints"]:
        regions = " ".join(
            f"{r['region']}={r['state']}"
            + (f"/{r['latency'] * 1000:.0f}ms" if r.get("latency") is not None else "")
            + ("(stale)" if r.get("stale") else "")
            for r in e["regions"]
        )
        flags = " ".join(f"{o['action']}:{o['id']}" for o in e["overrides"])
        rows.append(
            (
                e["name"],
                e["tier"],
                e["address"],
                endpoint_state(e),
                when(e.get("since"), now),
                regions or "-",
                flags or "-",
                e["reason"],
            )
        )
    headers = ["NAME", "TIER", "ENDPOINT", "STATE", "SINCE", "REGIONS", "OVERRIDES", "WHY"]
    return table(rows, headers)


def show_events(data: dict[str, Any]) -> str:
    lines = []
    for e in reversed(data["events"]):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
        lines.append(f"{at} {e['kind']:<9} {e['subject']} {e['message']}")
    if data.get("next_before"):
        lines.append(f"(older: --before {data['next_before']})")
    return "\n".join(lines) or "(no events)"


def show_override(data: dict[str, Any]) -> str:
    o = data["override"]
    return f"override {o['id']} set: {o['description']}\n(undo: dnsfailover undrain {o['id']})"


def do_status(client: Client, args: argparse.Namespace) -> Any:
    return client.get("/api/v1/status")


def do_endpoints(client: Client, args: argparse.Namespace) -> Any:
    return client.get("/api/v1/endpoints")


def do_explain(client: Client, args: argparse.Namespace) -> Any:
    from urllib.parse import quote

    path = f"/api/v1/explain/{quote(args.name, safe='')}"
    if args.client:
        return client.get(path, client=args.client)
    return client.get(path)


def do_events(client: Client, args: argparse.Namespace) -> Any:
    if args.state is not None:
        return read_events(args.state, args.limit, args.before)
    return client.get("/api/v1/events", limit=args.limit, before=args.before)


def read_events(path: str, limit: int, before: int | None) -> Any:
    """The history straight from a node's state file: for when its server is not running
    (a post-mortem).  Same shape as `GET /api/v1/events`."""
    from pathlib import Path

    from dnsfailover.api.views import events
    from dnsfailover.errors import StoreError
    from dnsfailover.runtime.store import Store

    if not Path(path).exists():
        raise ApiError(f"no state file at {path}", 400)
    if Path(path).stat().st_size == 0:
        raise ApiError(f"state file {path} is empty (0 bytes): it holds no history", 400)
    try:
        store = Store(path, readonly=True)
    except StoreError as e:
        raise ApiError(str(e), 400) from None
    try:
        return events(store.events(limit, before), limit)
    except StoreError as e:  # damaged pages: said, never a traceback
        raise ApiError(str(e), 400) from None
    finally:
        store.close()


# -- mutating ---------------------------------------------------------------------------------


def _override(args: argparse.Namespace, action: str, **target: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"action": action, "reason": args.reason, "who": args.who or who()}
    body.update({k: v for k, v in target.items() if v is not None})
    if args.expires is not None:
        body["expires_in"] = args.expires
    if args.force:
        body["force"] = True
    return body


def do_drain(client: Client, args: argparse.Namespace) -> Any:
    body = _override(args, "drain", endpoint=args.endpoint, name=args.name)
    return client.post("/api/v1/overrides", body)


def do_force(client: Client, args: argparse.Namespace) -> Any:
    if args.endpoint is None and args.tier is None:
        raise ApiError("force needs an ENDPOINT, or --tier TIER with --name NAME", 400)
    target = {"endpoint": args.endpoint, "tier": args.tier, "name": args.name}
    return client.post("/api/v1/overrides", _override(args, f"force_{args.state}", **target))


def do_failover(client: Client, args: argparse.Namespace) -> Any:
    body = _override(args, "failover", name=args.name, tier=args.to)
    return client.post("/api/v1/overrides", body)


def do_failback(client: Client, args: argparse.Namespace) -> Any:
    return client.post("/api/v1/overrides", _override(args, "failback", name=args.name))


def do_undrain(client: Client, args: argparse.Namespace) -> Any:
    """Remove the override with that id, or every drain of that endpoint (within --name)."""
    active = client.get("/api/v1/overrides")["overrides"]
    ids = [o["id"] for o in active if o["id"] == args.target]
    if not ids:
        name = (args.name or "").lower()
        ids = [
            o["id"]
            for o in active
            if o["action"] == "drain"
            and o["endpoint"] == args.target
            and (
                not name
                or o["name"] in (name, f"{name}.")
                or (o["name"] or "").split(".")[0] == name
            )
        ]
    if not ids:
        listed = ", ".join(f"{o['id']} ({o['description']})" for o in active) or "none"
        raise ApiError(f"no override or drain matches {args.target!r}; active: {listed}", 404)
    body = {"reason": args.reason, "who": args.who or who()}
    return {"removed": [client.delete(f"/api/v1/overrides/{i}", body)["removed"] for i in ids]}


def do_reload(client: Client, args: argparse.Namespace) -> Any:
    return client.post("/api/v1/reload", {})


def do_reset_breaker(client: Client, args: argparse.Namespace) -> Any:
    body = {"reason": args.reason, "who": args.who or who()}
    return client.post("/api/v1/breaker/reset", body)


SHOW: dict[str, Callable[[dict[str, Any]], str]] = {
    "reload": lambda d: f"reloaded: {d['reloaded']}",
    "reset-breaker": lambda d: (
        "circuit breaker released"
        if d["was_frozen"]
        else "the circuit breaker was not tripped; the next decision takes today's health as its "
        "baseline"
    ),
    "status": show_status,
    "endpoints": show_endpoints,
    "explain": lambda d: "\n".join(d["lines"]),
    "events": show_events,
    "undrain": lambda d: "\n".join(f"override {i} removed" for i in d["removed"]),
}


def run(command: Command, args: argparse.Namespace) -> int:
    """Call the API, print the result (a table, or --json), map failures to exit codes."""
    try:
        client = Client(base_url(args.api), read_token(args.token_file))
        data = command(client, args)
    except Unreachable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.status is not None and 400 <= e.status < 500 and e.status != 409:
            return EXIT_USAGE
        return EXIT_ERROR
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(SHOW.get(args.command, show_override)(data))
    return EXIT_OK


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add the API commands to the `dnsfailover` parser."""

    def add(name: str, help: str, command: Command) -> argparse.ArgumentParser:
        sp = subparsers.add_parser(name, help=help, description=help, parents=list(parents))
        sp.add_argument("--api", metavar="URL", help="API base URL (default $DNSFAILOVER_API or "
                        "http://127.0.0.1:8053)")  # fmt: skip
        sp.add_argument("--json", action="store_true", help="print the API's JSON")
        sp.set_defaults(func=lambda args: run(command, args), token_file=None)
        return sp

    def mutating(sp: argparse.ArgumentParser, *, expires: bool = True) -> None:
        sp.add_argument("--reason", required=True, help="why (recorded in the history)")
        sp.add_argument("--who", default=None, help="recorded as the author (default user@host)")
        sp.add_argument("--token-file", metavar="PATH", help="bearer token (default "
                        "$DNSFAILOVER_API_TOKEN)")  # fmt: skip
        if expires:
            sp.add_argument("--expires", metavar="DURATION", help="end it after e.g. 30m, 2h")
            sp.add_argument("--force", action="store_true", help="bypass the interlocks")

    add("status", "show every name's answer and why, zones and serials", do_status)
    add("endpoints", "show every endpoint's health, per region", do_endpoints)
    sp = add("explain", "explain why a name answers what it answers", do_explain)
    sp.add_argument("name", metavar="NAME", help="managed name (www.example.test. or www)")
    sp.add_argument(
        "--client",
        metavar="ADDRESS[/PREFIX]",
        help="for a steered name: which location group this client is in, why, and its answer",
    )
    sp = add("events", "show the history of health, answers and overrides", do_events)
    sp.add_argument("--limit", type=int, default=50, help="how many, newest (default 50)")
    sp.add_argument("--before", type=int, default=None, metavar="ID", help="older than event ID")
    sp.add_argument(
        "--state",
        metavar="PATH",
        help="read a node's state file directly instead of asking its API (server stopped)",
    )
    sp = add("drain", "keep an endpoint out of answers (still probed)", do_drain)
    sp.add_argument("endpoint", metavar="ENDPOINT", help="endpoint address")
    sp.add_argument("--name", help="only within this managed name (default: every name)")
    mutating(sp)
    sp = add("undrain", "remove an override (by id) or the drains of an endpoint", do_undrain)
    sp.add_argument("target", metavar="ID|ENDPOINT")
    sp.add_argument("--name", help="only drains within this managed name")
    mutating(sp, expires=False)
    sp = add("force", "treat an endpoint or a tier as up or down whatever the checks say",
             do_force)  # fmt: skip
    sp.add_argument("state", choices=["up", "down"])
    sp.add_argument("endpoint", metavar="ENDPOINT", nargs="?", help="endpoint address")
    sp.add_argument("--tier", help="a whole tier of --name instead of one endpoint")
    sp.add_argument("--name", help="the managed name (needed with --tier)")
    mutating(sp)
    sp = add("failover", "move a name off its serving tier until failback", do_failover)
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--to", metavar="TIER", help="the tier to serve (default: the next one)")
    mutating(sp)
    sp = add("failback", "return a name to its best healthy tier now", do_failback)
    sp.add_argument("name", metavar="NAME")
    mutating(sp)
    sp = add(
        "reload",
        "make the server re-read its config file (as SIGHUP); a bad one is refused",
        do_reload,
    )
    sp.add_argument("--token-file", metavar="PATH", help="bearer token (default "
                    "$DNSFAILOVER_API_TOKEN)")  # fmt: skip
    sp = add(
        "reset-breaker",
        "release a tripped circuit breaker: today's health becomes the baseline",
        do_reset_breaker,
    )
    mutating(sp, expires=False)
