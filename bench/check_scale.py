"""How many TCP probes per second one process sustains: the real ProbeScheduler against
10,000 real loopback listeners.

    .venv/bin/python bench/check_scale.py [--targets 10000] [--duration 30] [--profile FILE]

A child process (this script with `--listen`) listens on `--targets` (address, port) pairs
across 127.0.1.1, 127.0.1.2, … and resets every connection; it is pinned to one core, this
process to another.  This process runs ProbeScheduler with one tcp check at `--interval`
for `--warmup` + `--duration` seconds and reports, over the measured part: probes/s, CPU use
of this process, schedule drift (actual - planned start) p50/p99/max, max RSS, failures, and
sockets in TIME_WAIT.  Target: 10k probes/s on one core, drift p99 <= 50 ms, RSS < 300 MB,
no failures.

Ephemeral ports and TIME_WAIT: closing normally, 10k connections/s would leave ~600k sockets
in TIME_WAIT (60 s each), far past `net.ipv4.tcp_max_tw_buckets` (131072 here; beyond it the
kernel drops them early and logs overflows), and every connect() would search ever fuller
port buckets.  So the probe closes with SO_LINGER 0: it sends RST and neither side keeps a
TIME_WAIT entry (the listener resets its accepted sockets the same way).  The targets are
also spread over 2,500 addresses x 4 ports, so each destination sees one connection per
interval; the kernel only needs the 4-tuple to be unique, so the ~28k ephemeral ports
(32768-60999) are never short for any one destination.  On loopback both ends of each
handshake run in the prober's connect() call, so its system time is about twice what a
prober talking to remote targets pays.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import cProfile
import os
import platform
import pstats
import resource
import selectors
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

from dnsfailover.checks.scheduler import ProbeScheduler
from dnsfailover.config.checks import CheckConfig
from dnsfailover.model import Observation, Target

# -- the listener process (run as `check_scale.py --listen COUNT PER_ADDRESS BASE CPU`) --

LINGER_RST = struct.pack("ii", 1, 0)
PER_SUBNET = 250


def addresses(count: int) -> Iterator[str]:
    """127.0.1.1 … 127.0.1.250, 127.0.2.1 …: `count` loopback addresses."""
    for i in range(count):
        subnet, host = divmod(i, PER_SUBNET)
        yield f"127.0.{1 + subnet}.{1 + host}"


def endpoints(count: int, ports_per_address: int, base_port: int) -> list[tuple[str, int]]:
    n_addresses = -(-count // ports_per_address)
    pairs = [
        (address, base_port + p)
        for address in addresses(n_addresses)
        for p in range(ports_per_address)
    ]
    return pairs[:count]


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def serve(pairs: list[tuple[str, int]]) -> None:
    selector = selectors.EpollSelector()
    listeners = []
    for address, port in pairs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(1024)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        listeners.append(sock)
    selector.register(sys.stdin, selectors.EVENT_READ)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _events in selector.select():
            if key.fileobj is sys.stdin:
                return  # the benchmark ended (or died): stop
            server = key.fileobj
            assert isinstance(server, socket.socket)
            while True:
                try:
                    conn, _peer = server.accept()
                except BlockingIOError:
                    break
                except ConnectionAbortedError:
                    continue
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                conn.close()


def listen(argv: list[str]) -> None:
    """Listen on COUNT endpoints, print `ready`, reset every connection until stdin closes."""
    count, per_address, base_port, cpu = (int(a) for a in argv)
    os.sched_setaffinity(0, {cpu})
    raise_fd_limit()
    serve(endpoints(count, per_address, base_port))


# -- the measuring process ------------------------------------------------------------------


def machine() -> str:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"nproc={os.cpu_count()} cpu={model!r} python={platform.python_version()} "
        f"kernel={platform.release()} loop=asyncio(selector)"
    )


def time_wait() -> int:
    """Sockets in TIME_WAIT, from /proc/net/sockstat (`TCP: inuse N orphan N tw N ...`)."""
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    return -1


def cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.details: collections.Counter[str] = collections.Counter()

    def __call__(self, obs: Observation) -> None:
        if obs.ok:
            self.ok += 1
        else:
            self.failed += 1
            self.details[obs.detail] += 1


async def measure(args: argparse.Namespace, pairs: list[tuple[str, int]], child: int) -> None:
    check = CheckConfig(type="tcp", port=args.base_port, interval=args.interval, timeout=0.5)
    targets = {}
    for address, port in pairs:
        target = Target(check="bench", address=address, port=port)
        targets[target.key] = (target, check)
    tally = Tally()
    sched = ProbeScheduler(
        targets, region="bench", on_observation=tally, max_in_flight=args.max_in_flight
    )
    sched.start()
    drift = array.array("d")
    seen = 0

    def collect() -> None:
        nonlocal seen
        started = sched.stats.started
        recent = sched.drift
        new = min(started - seen, len(recent))
        if new > 0:
            drift.extend(recent[-new:])
        seen = started

    tw_before = time_wait()
    await asyncio.sleep(args.warmup)
    collect()
    drift = array.array("d")
    ok0, failed0, stats0 = tally.ok, tally.failed, sched.stats
    tally.details.clear()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    child0, wall0 = cpu_seconds(child), time.perf_counter()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    end = wall0 + args.duration
    while (left := end - time.perf_counter()) > 0:
        await asyncio.sleep(min(0.5, left))
        collect()
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - wall0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    child_cpu = cpu_seconds(child) - child0
    stats1 = sched.stats
    await sched.stop()

    user = usage1.ru_utime - usage0.ru_utime
    system = usage1.ru_stime - usage0.ru_stime
    probes = (tally.ok - ok0) + (tally.failed - failed0)
    ordered = sorted(drift)
    print(f"machine: {machine()}")
    print(
        f"config: targets={len(targets)} interval={args.interval:g}s timeout=0.5s "
        f"max_in_flight={args.max_in_flight} warmup={args.warmup:g}s measured={wall:.1f}s"
    )
    print(f"probes/s: {probes / wall:,.0f} (expected {len(targets) / args.interval:,.0f})")
    print(
        f"cpu (prober): {100 * (user + system) / wall:.0f}% of one core "
        f"(user {100 * user / wall:.0f}%, sys {100 * system / wall:.0f}%); "
        f"listener: {100 * child_cpu / wall:.0f}%"
    )
    print(
        f"drift: p50={1000 * percentile(ordered, 0.50):.2f}ms "
        f"p99={1000 * percentile(ordered, 0.99):.2f}ms max={1000 * (ordered or [0.0])[-1]:.2f}ms "
        f"(samples={len(ordered):,})"
    )
    print(f"rss max: {usage1.ru_maxrss / 1024:.0f} MB")
    print(
        f"failures: {tally.failed - failed0} overruns: {stats1.overruns - stats0.overruns} "
        f"late rounds: {stats1.late_rounds - stats0.late_rounds} "
        f"TIME_WAIT on the host: {tw_before} before, {time_wait()} after"
    )
    for detail, count in tally.details.most_common(5):
        print(f"  {count:>8}  {detail}")
    if profiler is not None:
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--ports-per-address", type=int, default=4)
    parser.add_argument("--base-port", type=int, default=20_000)
    parser.add_argument("--max-in-flight", type=int, default=1000)
    parser.add_argument("--profile", help="write a cProfile of the measured part here")
    args = parser.parse_args()
    if not 0 < args.duration <= 3600 or args.targets < 1:
        parser.error("--duration must be in (0, 3600] and --targets at least 1")

    limit = raise_fd_limit()
    if args.targets + 100 > limit:
        parser.error(f"--targets {args.targets} needs more file descriptors than {limit}")
    cpus = sorted(os.sched_getaffinity(0))
    prober_cpu, listener_cpu = cpus[0], cpus[-1]
    pairs = endpoints(args.targets, args.ports_per_address, args.base_port)
    argv = [str(args.targets), str(args.ports_per_address), str(args.base_port)]
    child = subprocess.Popen(
        [sys.executable, __file__, "--listen", *argv, str(listener_cpu)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            sys.exit("listeners failed to start")
        os.sched_setaffinity(0, {prober_cpu})
        print(f"cpus: prober={prober_cpu} listener={listener_cpu}")
        asyncio.run(measure(args, pairs, child.pid))
    finally:
        assert child.stdin is not None
        child.stdin.close()  # the listener exits on EOF
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--listen"]:
        listen(sys.argv[2:])
    else:
        main()
