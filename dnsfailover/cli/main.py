"""The `dnsfailover` command: its parser, and the commands that run the node or probe once.

Every `print` of dnsfailover is in this package (`cli/`); the rest logs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dnsfailover import __version__
from dnsfailover.cli.args import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    config_argument,
    parse_api,
    parse_hostport,
    region_problem,
    resolve_config,
)
from dnsfailover.errors import ConfigError, DnsFailoverError, UserError
from dnsfailover.logs import setup_logging

# Only what the parser needs is imported here: `--version` and `--help` must not pay for
# pydantic, aiohttp, dnslib... (tests/test_packaging.py); each command imports its own.
if TYPE_CHECKING:
    from dnsfailover.checks.process import Started
    from dnsfailover.config.schema import Config
    from dnsfailover.runtime.node import Node
    from dnsfailover.runtime.oneshot import PlanResult

log = logging.getLogger("dnsfailover.cli")

DEFAULT_DNS = "127.0.0.1:5353"
DEFAULT_STATE = "dnsfailover.db"
DEFAULT_API = "127.0.0.1:8053"


def _load(path: str) -> Config:
    from dnsfailover.config.load import load

    return load(path)


def cmd_validate(args: argparse.Namespace) -> int:
    if args.json:
        from dnsfailover.cli.report import validate_json

        try:
            loaded = _load(args.config)
        except ConfigError as e:
            print(json.dumps(validate_json(args.config, None, list(e.problems)), indent=2))
            return EXIT_USAGE
        print(json.dumps(validate_json(args.config, loaded, []), indent=2))
        return EXIT_OK
    config = _load(args.config)
    names = config.managed()
    print(
        f"{args.config}: ok ({len(config.zones)} zone(s), {len(names)} managed name(s), "
        f"{len(config.targets())} probe target(s))"
    )
    return EXIT_OK


async def _serve(config: Config, args: argparse.Namespace, early: Started | None) -> int:
    import asyncio

    from dnsfailover.runtime.node import Node
    from dnsfailover.runtime.systemd import Supervisor

    host, port = args.dns
    service = Node(
        config,
        region=args.region,
        dns_host=host,
        dns_port=port,
        state_path=args.state,
        workers=args.workers,
        node_id=args.node_id,
        api=args.api,
        config_path=args.config,
        state_recover=args.state_recover,
        probe_process=args.probes == "process",
        early_probes=early,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(reload_service(service))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    supervisor = Supervisor.from_environ(service, service.supervision)  # systemd; or nothing
    supervisor.starting()
    try:
        bound_host, bound_port = await service.start()
    except OSError as e:
        await service.stop()
        print(f"error: cannot serve DNS on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except DnsFailoverError as e:
        await service.stop()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    api = ""
    if service.api_address is not None:
        api_host, api_port = service.api_address
        api = f", api http://{f'[{api_host}]' if ':' in api_host else api_host}:{api_port}"
    print(
        f"dnsfailover: serving {len(config.zones)} zone(s) on {shown}:{bound_port} (udp+tcp)"
        f"{api}, state {args.state}",
        flush=True,
    )
    await supervisor.ready((bound_host, bound_port))  # READY=1 once it answers a query
    await stop.wait()
    log.info("stop: signal received, shutting down")
    supervisor.stopping()
    await service.stop()
    supervisor.close()
    print("dnsfailover: stopped", flush=True)
    return EXIT_OK


async def reload_service(service: Node) -> None:
    """SIGHUP: re-read and validate the config; a bad one is reported (logged at ERROR and
    recorded by the node) and the running one stays."""
    try:
        summary = await service.reload_from_file()
    except (ConfigError, UserError):  # reported by the node (ERROR, event); nothing changed
        return
    except Exception:  # after the swap (the engine loop retries a failed decision)
        log.exception("reload: %s applied, then failed", service.config_path)
        return
    log.info("reload: %s applied (%s)", service.config_path, summary)


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from dnsfailover.tasks import loop_factory

    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    early = None
    if args.probes == "process":
        from dnsfailover.checks.process import start_probe_process

        early = start_probe_process()  # it imports while the config loads (a big one: ~10 s)
    try:
        config = _load(args.config)
        if (wrong := region_problem(config, args.region)) is not None:
            print(f"error: {wrong}", file=sys.stderr)
            return EXIT_USAGE
        # uvloop when installed (the `fast` extra); DNSFAILOVER_LOOP=asyncio turns it off.
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(_serve(config, args, early))
    finally:
        if early is not None:
            _end_unused(early)


def _end_unused(early: Started) -> None:
    """End a probe process the node never took over (a bad config, say); one it took over
    it has stopped and closed already."""
    try:
        if not early.proc.is_alive():
            return
    except ValueError:  # closed: the node stopped it
        return
    early.conn.close()  # it ends at the end of its pipe
    early.proc.join(5)
    if early.proc.exitcode is None:
        early.proc.kill()
        early.proc.join(5)


def _print_plan(result: PlanResult, *, applied: bool) -> int:
    print(f"probes ({len(result.observations)} target(s), one round):")
    for obs in sorted(result.observations, key=lambda o: o.target):
        verdict = "ok  " if obs.ok else "UNKN" if obs.unknown else "FAIL"  # unknown: not run
        print(f"  {verdict} {obs.target:<40} {obs.detail} ({obs.latency * 1000:.0f}ms)")
    print("answers:")
    for name, nd in result.decision.names.items():
        answer = " ".join(nd.answer) if nd.answer else "(none: NODATA)"
        tier = f" tier={nd.tier}" if nd.tier else ""
        shadow = " mode=shadow" if nd.shadow else ""  # "mode" is only the policy mode
        print(f"  {name} {nd.policy}{tier} health={nd.mode}{shadow} -> {answer}")
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
    import asyncio

    from dnsfailover.cli.report import detailed_exit, plan_json
    from dnsfailover.runtime.oneshot import plan

    # --detailed-exitcode: 2 means "changes", so every failure is 1 (as terraform)
    usage = EXIT_ERROR if args.detailed_exitcode else EXIT_USAGE
    try:
        config = _load(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return usage
    if (wrong := region_problem(config, args.region)) is not None:
        print(f"error: {wrong}", file=sys.stderr)
        return usage
    result = asyncio.run(plan(config, args.state, args.region))
    if args.json:
        print(json.dumps(plan_json(result), indent=2))
        code = EXIT_ERROR if any(zp.error for zp in result.zones) else EXIT_OK
    else:
        code = _print_plan(result, applied=False)
    return detailed_exit(result) if args.detailed_exitcode else code


def cmd_apply(args: argparse.Namespace) -> int:
    import asyncio

    from dnsfailover.runtime.oneshot import plan

    config = _load(args.config)
    if (wrong := region_problem(config, args.region)) is not None:
        print(f"error: {wrong}", file=sys.stderr)
        return EXIT_USAGE
    result = asyncio.run(plan(config, args.state, args.region, push=True, force=args.force))
    return _print_plan(result, applied=True)


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from dnsfailover.cli.demo import run_demo

    return asyncio.run(run_demo(args.dns, args.state, args.api))


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
    p.add_argument(
        "--log-format",
        choices=["human", "json"],
        default=argparse.SUPPRESS if suppress else "human",
        help="human (default) or json: one object per line, for log shippers",
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
    config_argument(sp)
    sp.add_argument(
        "--json",
        action="store_true",
        help="print {valid, problems: [{file, line, path, message}]} on stdout",
    )
    sp.set_defaults(func=cmd_validate)

    sp = add_parser("serve", help="probe endpoints and serve the zones over DNS")
    config_argument(sp)
    sp.add_argument(
        "--dns",
        type=parse_hostport,
        default=parse_hostport(DEFAULT_DNS),
        metavar="HOST:PORT",
        help=f"UDP+TCP listen address (default {DEFAULT_DNS}; port 0 picks a free port)",
    )
    sp.add_argument("--region", default="local", help="this node's region (default local)")
    sp.add_argument(
        "--node-id",
        default=None,
        metavar="ID",
        help="this node's name in a cluster (default: the host name)",
    )
    sp.add_argument(
        "--api",
        type=parse_api,
        default=parse_api(DEFAULT_API),
        metavar="HOST:PORT|off",
        help=f"HTTP API, metrics and status page (default {DEFAULT_API}; off to disable)",
    )
    sp.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes answering UDP queries on the same port (SO_REUSEPORT; default 1)",
    )
    sp.add_argument(
        "--probes",
        choices=("process", "inline"),
        default="process",
        help="run the health probes in their own process (default), so probing thousands of "
        "endpoints never slows a decision; inline: in the node's process (one process less)",
    )
    state(sp)
    sp.add_argument(
        "--state-recover",
        action="store_true",
        help="if the state file is damaged (empty, truncated, not SQLite), move it aside "
        "(kept as PATH.damaged-TIME) and start from a cold state; serials stay monotonic",
    )
    sp.set_defaults(func=cmd_serve)

    sp = add_parser(
        "plan",
        help="probe once and show the answers and provider changes it would publish (dry run)",
    )
    config_argument(sp)
    sp.add_argument("--region", default="local", help="this node's region (default local)")
    sp.add_argument("--json", action="store_true", help="print the probes, answers and "
                    "each zone's changes as JSON")  # fmt: skip
    sp.add_argument("--detailed-exitcode", action="store_true", help="exit 0 when no zone "
                    "has changes, 2 when one has, 1 on any error (as terraform)")  # fmt: skip
    state(sp)
    sp.set_defaults(func=cmd_plan)

    sp = add_parser(
        "apply",
        help="probe once and push each external zone's plan to its provider (unsafe plans "
        "refused unless --force)",
    )
    config_argument(sp)
    sp.add_argument("--region", default="local", help="this node's region (default local)")
    sp.add_argument("--force", action="store_true", help="apply even an unsafe plan")
    state(sp)
    sp.set_defaults(func=cmd_apply)

    from dnsfailover.cli.drill import add_parser as add_drill
    from dnsfailover.cli.importer import add_parsers as add_import
    from dnsfailover.cli.ops import register
    from dnsfailover.cli.simulate import add_parser as add_simulate
    from dnsfailover.cli.sync import register as add_sync

    add_simulate(sub)
    register(sub, parents=[common])
    add_sync(sub, parents=[common])
    add_drill(sub, parents=[common])
    add_import(sub, parents=[common])
    from dnsfailover.cli.dnssec import register as add_dnssec

    add_dnssec(sub, [common], DEFAULT_STATE)

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
    sp.add_argument("--api", type=parse_api, default=parse_api("127.0.0.1:0"),
                    metavar="HOST:PORT|off", help="HTTP API and status page, with a throwaway "
                    "token (default 127.0.0.1:0: a free port, printed)")  # fmt: skip
    sp.set_defaults(func=cmd_demo)
    from dnsfailover.cli.habits import add_examples, add_parsers

    add_parsers(p, sub, [common])
    add_examples(p, sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe or socket: a real error, not the reader of our output leaving
        return _closed_pipe()


def _stdout_gone() -> bool:
    """Whether stdout's reader went away (poll reports an error on a pipe without one)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (OSError, ValueError):
        return False


def _closed_pipe() -> int:
    """stdout's reader went away (`dnsfailover simulate C --json | head -1`): end quietly,
    as a C tool killed by SIGPIPE does (the shell sees 141), without a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
    os.close(devnull)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    return 128 + signal.SIGPIPE  # not reached


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if (missing := resolve_config(args, os.environ)) is not None:
            from dnsfailover.cli.habits import subcommands

            subcommands(parser)[args.command].error(missing)  # usage, the message, exit 2
    except SystemExit as e:
        # plan --detailed-exitcode: 2 means "changes", so a usage error is 1 (as terraform)
        wrong = e.code == EXIT_USAGE and "--detailed-exitcode" in (argv or sys.argv[1:])
        return EXIT_ERROR if wrong else e.code if isinstance(e.code, int) else EXIT_USAGE
    setup_logging(
        logging.DEBUG if args.debug else getattr(logging, args.log_level), args.log_format
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
    sys.stdout.flush()  # a closed pipe shows here, inside main, not at the interpreter's exit
    return code


if __name__ == "__main__":
    sys.exit(main())
