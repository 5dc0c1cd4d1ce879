"""The `dnsfailover` command.  The only module that prints."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dnsfailover import __version__
from dnsfailover.config import load
from dnsfailover.errors import ConfigError, DnsFailoverError
from dnsfailover.oneshot import PlanResult
from dnsfailover.schema import ActivePassive, Config

log = logging.getLogger("dnsfailover.cli")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DEFAULT_DNS = "127.0.0.1:5353"
DEFAULT_STATE = "dnsfailover.db"


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


def _load(path: str) -> Config:
    return load(path)


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    names = config.managed()
    print(
        f"{args.config}: ok ({len(config.zones)} zone(s), {len(names)} managed name(s), "
        f"{len(config.targets())} probe target(s))"
    )
    return EXIT_OK


async def _serve(config: Config, args: argparse.Namespace) -> int:
    from dnsfailover.service import Service

    host, port = args.dns
    service = Service(
        config,
        region=args.region,
        dns_host=host,
        dns_port=port,
        state_path=args.state,
        workers=args.workers,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        bound_host, bound_port = await service.start()
    except OSError as e:
        await service.stop()
        print(f"error: cannot serve DNS on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(
        f"dnsfailover: serving {len(config.zones)} zone(s) on {shown}:{bound_port} (udp+tcp)"
        f", state {args.state}",
        flush=True,
    )
    await stop.wait()
    log.info("stop: signal received, shutting down")
    await service.stop()
    print("dnsfailover: stopped", flush=True)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from dnsfailover.server.workers import loop_factory

    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    config = _load(args.config)
    # uvloop when installed (the `fast` extra); DNSFAILOVER_LOOP=asyncio turns it off.
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_serve(config, args))


def _print_plan(result: PlanResult, *, applied: bool) -> int:
    print(f"probes ({len(result.observations)} target(s), one round):")
    for obs in sorted(result.observations, key=lambda o: o.target):
        verdict = "ok  " if obs.ok else "FAIL"
        print(f"  {verdict} {obs.target:<40} {obs.detail} ({obs.latency * 1000:.0f}ms)")
    print("answers:")
    for name, nd in result.decision.names.items():
        answer = " ".join(nd.answer) if nd.answer else "(none: NODATA)"
        tier = f" tier={nd.tier}" if nd.tier else ""
        print(f"  {name} {nd.policy}{tier} [{nd.mode}] -> {answer}")
        print(f"      why: {nd.reason}")
    code = EXIT_OK
    for zp in result.zones:
        print(f"provider {zp.provider}, zone {zp.zone}:")
        if zp.plan is not None:
            print(f"  {zp.plan.summary() if zp.plan else 'in sync: no changes'}")
            for change in zp.plan.changes:
                print(f"    {change.describe()}")
            for reason in zp.unsafe:
                print(f"  UNSAFE: {reason}")
        if zp.result is not None:
            print(
                f"  applied: {zp.result.applied} change(s) in {zp.result.calls} call(s), "
                f"confirmed={zp.result.confirmed}"
            )
        elif applied and zp.plan:
            print("  not applied")
        if zp.error:
            print(f"  error: {zp.error}")
            code = EXIT_ERROR
    return code


def cmd_plan(args: argparse.Namespace) -> int:
    from dnsfailover.oneshot import plan

    config = _load(args.config)
    return _print_plan(asyncio.run(plan(config, args.state, args.region)), applied=False)


def cmd_apply(args: argparse.Namespace) -> int:
    from dnsfailover.oneshot import plan

    config = _load(args.config)
    result = asyncio.run(plan(config, args.state, args.region, push=True, force=args.force))
    return _print_plan(result, applied=True)


def cmd_failback(args: argparse.Namespace) -> int:
    from dnsfailover.store import Store

    config = _load(args.config)
    name = args.name.lower() if args.name.endswith(".") else None
    matches = [
        (n, r)
        for _o, n, r in config.managed()
        if n == name or (name is None and n.split(".")[0] == args.name.lower())
    ]
    if len(matches) != 1:
        known = ", ".join(n for _o, n, _r in config.managed()) or "none"
        print(
            f"error: {args.name!r} names no single managed record; managed: {known}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    fqdn, record = matches[0]
    if not isinstance(record, ActivePassive):
        print(
            f"error: {fqdn} is {record.policy}; only active-passive records fail back",
            file=sys.stderr,
        )
        return EXIT_USAGE
    store = Store(args.state)
    try:
        store.add_request("failback", fqdn, args.reason, time.time())
    finally:
        store.close()
    print(
        f"failback of {fqdn} queued in {args.state}; a running server takes it within a second "
        "(see `dnsfailover events`)"
    )
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    from dnsfailover.store import Store

    if not Path(args.state).exists():
        print(f"error: no state store at {args.state}", file=sys.stderr)
        return EXIT_ERROR
    store = Store(args.state, readonly=True)
    try:
        events = store.events(limit=args.limit)
    finally:
        store.close()
    for e in reversed(events):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        print(f"{at}.{int(e.at * 1000) % 1000:03d} {e.kind:<9} {e.subject} {e.message}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from dnsfailover.demo import run_demo

    return asyncio.run(run_demo(args.dns, args.state))


def _logging_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show tracebacks and debug logs",
    )
    p.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=argparse.SUPPRESS if suppress else "INFO",
        help="default INFO",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsfailover",
        description="DNS-based failover: health checks, a failover engine and an "
        "authoritative DNS server.",
    )
    p.add_argument("--version", action="version", version=f"dnsfailover {__version__}")
    _logging_options(p, suppress=False)
    # Also accepted after the command; SUPPRESS keeps a subcommand from resetting them.
    common = argparse.ArgumentParser(add_help=False)
    _logging_options(common, suppress=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_parser(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    def state(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--state",
            default=DEFAULT_STATE,
            metavar="PATH",
            help=f"SQLite state store (default ./{DEFAULT_STATE})",
        )

    sp = add_parser("validate", help="check a config file; exit 2 listing every problem")
    sp.add_argument("config", metavar="CONFIG")
    sp.set_defaults(func=cmd_validate)

    sp = add_parser("serve", help="probe endpoints and serve the zones over DNS")
    sp.add_argument("config", metavar="CONFIG")
    sp.add_argument(
        "--dns",
        type=parse_hostport,
        default=parse_hostport(DEFAULT_DNS),
        metavar="HOST:PORT",
        help=f"UDP+TCP listen address (default {DEFAULT_DNS}; port 0 picks a free port)",
    )
    sp.add_argument("--region", default="local", help="this node's region (default local)")
    sp.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes answering UDP queries on the same port (SO_REUSEPORT; default 1)",
    )
    state(sp)
    sp.set_defaults(func=cmd_serve)

    sp = add_parser(
        "plan",
        help="probe once and show the answers and provider changes it would publish (dry run)",
    )
    sp.add_argument("config", metavar="CONFIG")
    sp.add_argument("--region", default="local", help="this node's region (default local)")
    state(sp)
    sp.set_defaults(func=cmd_plan)

    sp = add_parser(
        "failback",
        help="ask a running server to fail a manual-failback "
        "active-passive record back to its preferred tier",
    )
    sp.add_argument("config", metavar="CONFIG")
    sp.add_argument(
        "name",
        metavar="NAME",
        help="managed name, absolute (api.example.test.) or its first label (api)",
    )
    sp.add_argument("--reason", default="operator request", help="recorded in the history")
    state(sp)
    sp.set_defaults(func=cmd_failback)

    sp = add_parser("events", help="show the recorded history of health and answers")
    sp.add_argument("--limit", type=int, default=50, help="how many, newest (default 50)")
    state(sp)
    sp.set_defaults(func=cmd_events)

    sp = add_parser("demo", help="start local endpoints and a server, and watch failover")
    sp.add_argument(
        "--dns",
        type=parse_hostport,
        default=parse_hostport("127.0.0.1:0"),
        metavar="HOST:PORT",
        help="DNS listen address (default 127.0.0.1:0)",
    )
    sp.add_argument(
        "--state", default=None, metavar="PATH", help="state store (default: a temporary file)"
    )
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.debug:
        # APScheduler logs every job run at INFO: one line per check per interval.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except DnsFailoverError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
