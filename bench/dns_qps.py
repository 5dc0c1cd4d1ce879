"""DNS queries per second: `dnsfailover serve` against gdnsd and Knot, UDP and TCP, in
interleaved rounds, measured with dnsperf.

    .venv/bin/python bench/dns_qps.py [--rounds 5] [--seconds 10] [--transport udp|tcp|both]
        [--servers gdnsd,knot,dnsfailover] [--skip-gdnsd] [--micro-only]
    .venv/bin/python bench/dns_qps.py --ecs 3 --seconds 3   # plain vs EDNS Client Subnet

Needs `dnsperf`, `gdnsd` and `knotd` (Debian: `apt-get install -y dnsperf gdnsd knot`).  The
servers (bench/qps_servers.py) serve the same zone: a health-checked active-active `www` whose
two endpoints are real TCP listeners on 127.0.0.21/22 (one port, as gdnsd's tcp_connect
wants), and static records (`mail` is the static name measured).  Knot has no health checks:
its `www` is a static RRset of both endpoints.

Each round starts every server in turn (the order rotates from round to round, so the shared
machine's noise hits all alike), waits until `www` answers both endpoints over UDP and TCP,
measures it and stops it: a server is started once per round.  The server is pinned to core 0
and dnsperf to core 1 (`taskset`); dnsperf runs closed-loop (`-c 4 -q 100 -l SECONDS`), over
UDP and/or over 4 persistent TCP connections (`-m tcp`: dnsperf keeps each client's
connection open and pipelines up to 100 queries in flight over them), on a file of the
health-checked name, then of the static name.  Reported per round and as medians: QPS,
server CPU per query (utime+stime of the server's processes and threads, its probe
process and workers included, from /proc, over the queries completed), dnsperf's average
latency, and the median of the per-round ratios dnsfailover/gdnsd and dnsfailover/Knot.
`--servers` may add the other UDP paths of `serve` (asyncio, uvloop, workers2).  A
micro-benchmark first compares, in-process, the full path `respond()` with the fast path's
replayed templates.

`--ecs ROUNDS` measures instead what EDNS Client Subnet costs: `serve config/example.yaml`
answers plain EDNS queries and queries with an ECS /24 option (dnsperf `-E`) in interleaved
rounds; ECS queries take the full path (the fast path replays plain OPTs only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import qps_servers
from qps_servers import BIN as BIN
from qps_servers import EP1 as EP1
from qps_servers import EP2 as EP2
from qps_servers import Listeners as Listeners
from qps_servers import dnsperf_field
from qps_servers import free_port as free_port
from qps_servers import stop as stop

from dnsfailover.model import RecordSet, Soa, ZoneContent
from dnsfailover.server.fast import FastTable
from dnsfailover.server.wire import respond
from dnsfailover.server.zone import ZoneSnapshot

QUERY_SETS = {
    "health": [f"{qps_servers.HEALTH_NAME} A"],
    "static": [f"{qps_servers.STATIC_NAME} A"],
}
"""dnsperf's query files: the health-checked name alone, the static name alone."""
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    label: str
    queries: str
    qps: float
    completed: int
    lost: int
    latency_ms: float
    cpu_us: float
    sys_share: float = 0.0  # of the CPU, the part spent in the kernel
    round: int = 0
    server: str = ""
    transport: str = "udp"


def machine() -> str:
    """Cores, CPU model and Python version, for the report."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of these processes (all their threads), from /proc."""
    user = system = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11])  # utime, stime (fields 14 and 15)
        system += int(fields[12])
    return user / TICKS, system / TICKS


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_times(pids))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (our workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def dnsperf(
    port: int,
    queries: list[str],
    seconds: int,
    tmp: Path,
    extra: tuple[str, ...] = (),
    *,
    strict: bool = False,
) -> tuple[float, int, int, float]:
    """QPS, queries completed, lost, average latency (ms) of a closed-loop dnsperf run;
    `strict`: SystemExit unless every reply was NOERROR and no TCP connection was reopened."""
    data = tmp / "queries.txt"
    data.write_text("\n".join(queries) + "\n")
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data)]
    cmd += ["-c", "4", "-q", "100", "-l", str(seconds), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def grab(pattern: str) -> str:
        return dnsperf_field(out, pattern)

    qps = float(grab(r"Queries per second:\s+([\d.]+)"))
    completed = int(grab(r"Queries completed:\s+(\d+)"))
    lost = int(grab(r"Queries lost:\s+(\d+)"))
    latency = float(grab(r"Average Latency \(s\):\s+([\d.]+)"))
    if strict:
        noerror = int(grab(r"Response codes:\s+NOERROR (\d+)") if "NOERROR" in out else 0)
        reconnections = re.search(r"Reconnections:\s+(\d+)", out)
        if noerror != completed or (reconnections is not None and int(reconnections[1])):
            raise SystemExit(f"not every reply NOERROR on persistent connections:\n{out}")
    return qps, completed, lost, latency * 1000


def answers(port: int, qname: str, tcp: bool) -> set[str]:
    """The A addresses `qname` answers over UDP or TCP (none on a timeout or error)."""
    q = dns.message.make_query(qname, "A")
    send = dns.query.tcp if tcp else dns.query.udp
    try:
        reply = send(q, "127.0.0.1", port=port, timeout=1.0)
    except (OSError, dns.exception.DNSException):
        return set()
    return {r.to_text() for s in reply.answer if s.rdtype == dns.rdatatype.A for r in s}


def wait_ready(server: qps_servers.Running, timeout: float = 30) -> None:
    """Until the health-checked name answers both (healthy) endpoints and the static name its
    address, over UDP and TCP; SystemExit when not within `timeout` seconds."""
    want = {
        qps_servers.HEALTH_NAME: {EP1, EP2},
        qps_servers.STATIC_NAME: {qps_servers.STATIC_ADDRESS},
    }
    deadline = time.monotonic() + timeout
    got: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.label} exited with {server.proc.returncode}")
        got = {
            f"{name} over {'TCP' if tcp else 'UDP'}": answers(server.port, name, tcp)
            for name in want
            for tcp in (False, True)
        }
        if all(got[k] == want[k.split(" over ")[0]] for k in got):
            return
        time.sleep(0.1)
    raise SystemExit(f"{server.label} did not answer as it should within {timeout:.0f}s: {got}")


def measure(
    server: qps_servers.Running, transports: list[str], seconds: int, tmp: Path, round: int = 0
) -> list[Result]:
    """dnsperf over each transport on each query set; CPU of the server's processes."""
    wait_ready(server)
    pids = process_tree(server.proc.pid)
    results = []
    for transport in transports:
        for queries, lines in QUERY_SETS.items():
            user, system = cpu_times(pids)
            qps, done, lost, ms = dnsperf(
                server.port, lines, seconds, tmp, ("-m", transport), strict=True
            )
            user, system = (a - b for a, b in zip(cpu_times(pids), (user, system), strict=True))
            cpu = (user + system) / done * 1e6
            share = system / (user + system) if user + system else 0.0
            result = Result(server.label, queries, qps, done, lost, ms, cpu, share)
            result.round, result.server, result.transport = round, server.name, transport
            results.append(result)
            print(
                f"  round {round} {server.name:<12}{transport:<4}{queries:<7}{qps:>10,.0f} QPS"
                f"{cpu:7.2f} us/q",
                flush=True,
            )
    return results


def run_ours(
    label: str,
    cores: str,
    extra: list[str],
    env: dict[str, str],
    lport: int,
    seconds: int,
    binary: Path = BIN,
) -> list[Result]:
    """One `serve` (bench/revisions.py's builds): UDP on the health-checked name, then the
    static one.  ``label``, ``cores``, ``extra`` and ``env`` make a variant of its own."""
    variant = (label, cores, extra, env)
    with (
        tempfile.TemporaryDirectory() as d,
        qps_servers.started(label, Path(d) / "serve", lport, binary, variant) as server,
    ):
        return measure(server, ["udp"], seconds, Path(d))


def run_rounds(
    names: list[str], transports: list[str], rounds: int, seconds: int
) -> tuple[dict[str, str], list[Result]]:
    """Every server measured in every round, in an order rotated from round to round; the
    servers' labels and the results."""
    listeners = qps_servers.Listeners()
    labels: dict[str, str] = {}
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    where = tmp / f"{name}-{r + 1}"
                    with qps_servers.started(name, where, listeners.port) as server:
                        labels[name] = server.label
                        results += measure(server, transports, seconds, tmp, r + 1)
    finally:
        listeners.close()
    return labels, results


def ratios(
    results: list[Result], num: str, den: str, key: Callable[[Result], float]
) -> dict[tuple[str, str], list[float]]:
    """Per (transport, query set): key(num) / key(den) in each round both were measured."""
    by = {(r.transport, r.queries, r.round, r.server): r for r in results}
    out: dict[tuple[str, str], list[float]] = {}
    for r in sorted(results, key=lambda r: r.round):
        other = by.get((r.transport, r.queries, r.round, den))
        if r.server == num and other is not None:
            out.setdefault((r.transport, r.queries), []).append(key(r) / key(other))
    return out


def report(labels: dict[str, str], results: list[Result], rounds: int, seconds: int) -> None:
    print(f"machine: {machine()}")
    print(
        f"{rounds} interleaved rounds (every server started once per round, measured, stopped; "
        f"the order rotates), dnsperf -c 4 -q 100 -l {seconds} on core 1, servers on core 0"
    )
    for name, label in labels.items():
        print(f"  {name:<12}{label}")
    if "knot" in labels:
        print("  (Knot has no health checks: its www is static; gdnsd's and ours are probed)")
    head = f"{'round':<6}{'server':<12}{'mode':<5}{'queries':<8}{'QPS':>10}{'lost':>7}"
    print(f"{head}{'avg ms':>8}{'CPU us/q':>10}{'kernel':>8}")
    for r in results:
        print(
            f"{r.round:<6}{r.server:<12}{r.transport:<5}{r.queries:<8}{r.qps:>10,.0f}"
            f"{r.lost:>7}{r.latency_ms:>8.3f}{r.cpu_us:>10.2f}{r.sys_share:>8.0%}"
        )
    print("medians")
    for transport in dict.fromkeys(r.transport for r in results):
        for queries in QUERY_SETS:
            for name in labels:
                rs = [
                    r
                    for r in results
                    if (r.server, r.transport, r.queries) == (name, transport, queries)
                ]
                if rs:
                    print(
                        f"  {transport:<4}{queries:<7}{name:<12}"
                        f"{statistics.median(r.qps for r in rs):>10,.0f} QPS"
                        f"{statistics.median(r.cpu_us for r in rs):7.2f} us/q"
                        f" ({statistics.median(r.sys_share for r in rs):.0%} in the kernel)"
                        f"{statistics.median(r.latency_ms for r in rs):7.3f} ms"
                    )
    print("median of per-round ratios (QPS; CPU per query)")
    for num in (n for n in labels if n not in ("gdnsd", "knot")):
        for den in (n for n in ("gdnsd", "knot") if n in labels):
            qps = ratios(results, num, den, lambda r: r.qps)
            cpu = ratios(results, num, den, lambda r: r.cpu_us)
            for (transport, queries), values in qps.items():
                print(
                    f"  {transport:<4}{queries:<7}{num}/{den}: QPS x"
                    f"{statistics.median(values):.2f} "
                    f"({', '.join(f'{v:.2f}' for v in values)}); "
                    f"CPU x{statistics.median(cpu[transport, queries]):.2f}"
                )


EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"
EXAMPLE_QUERIES = [
    "www.example.test A",
    "www.example.test A",
    "api.example.test A",
    "ns1.example.test A",
    "example.test MX",
    "nothere.example.test A",
    "example.test SOA",
]
ECS_OPTION = "8:00011800c00002"
"""dnsperf -E: EDNS Client Subnet (code 8), family 1, SOURCE /24, SCOPE 0, 192.0.2."""


def run_ecs(rounds: int, seconds: int, config: Path = EXAMPLE) -> list[tuple[Result, Result]]:
    """Plain EDNS queries against ECS queries, interleaved rounds on one `serve` of ``config``.

    The same process answers every round (server on core 0, dnsperf on core 1), so the
    ratio per round compares the two kinds of query under the same machine load.  Plain
    queries (`-e`: an OPT without options) take the fast path; ECS queries the full one.
    """
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cmd = ["taskset", "-c", "0", str(BIN), "serve", str(config), "--dns", "127.0.0.1:0"]
        cmd += ["--api", "off", "--state", str(tmp / "s.db"), "--log-level", "WARNING"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            m = re.search(r":(\d+) \(udp", proc.stdout.readline())
            if m is None:
                raise SystemExit("dnsfailover serve did not start")
            port = int(m.group(1))
            deadline = time.monotonic() + 20
            while not answers(port, "www.example.test.", tcp=False):
                if time.monotonic() > deadline:
                    raise SystemExit(f"serve {config.name} did not answer www.example.test. A")
                time.sleep(0.1)
            pids = process_tree(proc.pid)
            pairs = []
            for _ in range(rounds):
                pair = []
                for label, extra in (("plain", ("-e",)), ("ecs", ("-E", ECS_OPTION))):
                    before = cpu_seconds(pids)
                    qps, done, lost, ms = dnsperf(port, EXAMPLE_QUERIES, seconds, tmp, extra)
                    cpu = (cpu_seconds(pids) - before) / done * 1e6
                    pair.append(Result(f"serve {config.name}", label, qps, done, lost, ms, cpu))
                pairs.append((pair[0], pair[1]))
            return pairs
        finally:
            stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def print_ecs(pairs: list[tuple[Result, Result]], seconds: int) -> None:
    print(f"plain EDNS vs ECS (/24), {len(pairs)} interleaved rounds of {seconds}s, mix of")
    print(f"{len(EXAMPLE_QUERIES)} names, dnsperf -c 4 -q 100, server on core 0, dnsperf on core 1")
    print(f"{'round':<7}{'queries':<8}{'QPS':>10}{'lost':>7}{'avg ms':>8}{'CPU us/q':>10}")
    for index, pair in enumerate(pairs, 1):
        for r in pair:
            print(
                f"{index:<7}{r.queries:<8}{r.qps:>10,.0f}{r.lost:>7}{r.latency_ms:>8.3f}"
                f"{r.cpu_us:>10.2f}"
            )
    qps = statistics.median(e.qps / p.qps for p, e in pairs)
    cpu = statistics.median(e.cpu_us / p.cpu_us for p, e in pairs)
    print(f"median ECS/plain: QPS x{qps:.2f}, CPU per query x{cpu:.2f}")


def micro(rounds: int = 200_000) -> None:
    soa = Soa("ns1.example.test.", "hostmaster.example.test.", 1, 7200, 900, 1209600, 300, 3600)
    records = (
        RecordSet("ns1.example.test.", "A", 300, ("127.0.0.1",)),
        RecordSet("www.example.test.", "A", 30, (EP1, EP2)),
    )
    snapshot = ZoneSnapshot.build([ZoneContent("example.test.", soa, records)])
    query = dns.message.make_query("www.example.test.", "A").to_wire()
    edns = dns.message.make_query("www.example.test.", "A", use_edns=0).to_wire()
    subnet = dns.edns.ECSOption("192.0.2.0", 24)
    ecs = dns.message.make_query("www.example.test.", "A", use_edns=0, options=[subnet]).to_wire()
    table = FastTable(snapshot)
    table.answer(query, tcp=False)
    table.answer(query, tcp=False)
    assert table.lookup(query, tcp=False) == respond(snapshot, query, tcp=False)
    calls: list[tuple[str, Callable[[], bytes | None]]] = [
        ("full path respond()", lambda: respond(snapshot, query, tcp=False)),
        ("fast path FastTable.answer()", lambda: table.answer(query, tcp=False)),
        ("OPT: full path respond()", lambda: respond(snapshot, edns, tcp=False)),
        ("OPT+ECS /24: full path respond()", lambda: respond(snapshot, ecs, tcp=False)),
    ]
    for label, call in calls:
        n = rounds if "fast" in label else rounds // 20
        start = time.perf_counter()
        for _ in range(n):
            call()
        per = (time.perf_counter() - start) / n
        print(f"  {label:<33} {per * 1e6:8.2f} us/query  ({1 / per:>10,.0f} /s on one core)")


SERVERS = ("gdnsd", "knot", "dnsfailover", *(n for n in qps_servers.OURS if n != "dnsfailover"))


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--transport", choices=("udp", "tcp", "both"), default="both")
    ap.add_argument(
        "--servers",
        default="gdnsd,knot,dnsfailover",
        help=f"a comma-separated list of {', '.join(SERVERS)}",
    )
    ap.add_argument("--skip-gdnsd", action="store_true", help="leave gdnsd out of --servers")
    ap.add_argument("--micro-only", action="store_true")
    ap.add_argument(
        "--ecs",
        type=int,
        metavar="ROUNDS",
        help="only compare plain and ECS queries: ROUNDS interleaved rounds of each",
    )
    args = ap.parse_args()
    names = [s for s in args.servers.split(",") if s and not (s == "gdnsd" and args.skip_gdnsd)]
    if not names or set(names) - set(SERVERS):
        raise SystemExit(f"--servers: a comma-separated list of {', '.join(SERVERS)}")
    print(f"machine: {machine()}")
    print("micro-benchmark (in-process, www.example.test A, no EDNS unless ECS):")
    micro()
    if args.micro_only:
        return
    needed = ["dnsperf", "taskset"] + [
        {"gdnsd": "gdnsd", "knot": "knotd"}[n] for n in names if n in ("gdnsd", "knot")
    ]
    missing = [t for t in needed if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: apt-get install -y dnsperf util-linux gdnsd knot"
        )
    if args.ecs:
        print_ecs(run_ecs(args.ecs, args.seconds), args.seconds)
        return
    transports = ["udp", "tcp"] if args.transport == "both" else [args.transport]
    labels, results = run_rounds(names, transports, args.rounds, args.seconds)
    report(labels, results, args.rounds, args.seconds)


if __name__ == "__main__":
    main()
