"""DNS queries per second: `dnsfailover serve` against gdnsd, measured with dnsperf.

    .venv/bin/python bench/dns_qps.py [--seconds 10] [--skip-gdnsd] [--micro-only]
    .venv/bin/python bench/dns_qps.py --ecs 3 --seconds 3   # plain vs EDNS Client Subnet

Needs `dnsperf` and `gdnsd` (Debian: `apt-get install -y dnsperf gdnsd`).  Both servers serve
the same zone: a health-checked active-active `www` whose two endpoints are real TCP
listeners on 127.0.0.21/22 (one port, as gdnsd's tcp_connect wants), and static records.
The server is pinned to core 0 and dnsperf to core 1 (`taskset`), dnsperf runs closed-loop
(`-c 4 -q 100 -l SECONDS`) on a file of the health-checked name and then on a mix.  Reported:
QPS, server CPU per query (utime+stime of the server and its workers from /proc, over the
queries completed) and dnsperf's average latency.  Runs: asyncio, uvloop (if installed),
uvloop with --workers 2 (pinned to cores 0-1, shared with dnsperf: CPU/query is the figure
to read), and gdnsd (1 UDP thread).  A micro-benchmark first compares, in-process, the full
path `respond()` with the fast path's replayed templates.

`--ecs ROUNDS` measures instead what EDNS Client Subnet costs: `serve config/example.yaml`
answers plain EDNS queries and queries with an ECS /24 option (dnsperf `-E`) in interleaved
rounds; ECS queries take the full path (the fast path replays plain OPTs only).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query

from dnsfailover.model import RecordSet, Soa, ZoneContent
from dnsfailover.server.fast import FastTable
from dnsfailover.server.wire import respond
from dnsfailover.server.zone import ZoneSnapshot

# DNSFAILOVER_BIN runs another build (bench/revisions.py compares two)
BIN = Path(os.environ.get("DNSFAILOVER_BIN") or Path(sys.executable).with_name("dnsfailover"))
EP1, EP2 = "127.0.0.21", "127.0.0.22"
HEALTH_QUERIES = ["www.example.test A"]
MIX_QUERIES = [
    "www.example.test A",
    "www.example.test A",
    "mail.example.test A",
    "example.test MX",
    "txt.example.test TXT",
    "www.example.test AAAA",
    "nothere.example.test A",
    "example.test SOA",
]
TICKS = os.sysconf("SC_CLK_TCK")


class Listeners:
    """Accept-and-close TCP listeners on these addresses (EP1 and EP2), all on one port."""

    def __init__(self, addresses: tuple[str, ...] = (EP1, EP2)) -> None:
        self.socks: list[socket.socket] = []
        port = 0
        for addr in addresses:
            sock = socket.create_server((addr, port))
            port = sock.getsockname()[1]
            sock.settimeout(0.1)
            self.socks.append(sock)
        self.port = port
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(s,)) for s in self.socks]
        for t in self._threads:
            t.start()

    def _run(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        for s in self.socks:
            s.close()


@dataclass
class Result:
    label: str
    queries: str
    qps: float
    completed: int
    lost: int
    latency_ms: float
    cpu_us: float


def machine() -> str:
    """Cores, CPU model and Python version, for the report."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICKS


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
    port: int, queries: list[str], seconds: int, tmp: Path, extra: tuple[str, ...] = ()
) -> tuple[float, int, int, float]:
    data = tmp / "queries.txt"
    data.write_text("\n".join(queries) + "\n")
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data)]
    cmd += ["-c", "4", "-q", "100", "-l", str(seconds), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def grab(pattern: str) -> str:
        m = re.search(pattern, out)
        if m is None:
            raise SystemExit(f"unexpected dnsperf output:\n{out}")
        return m.group(1)

    qps = float(grab(r"Queries per second:\s+([\d.]+)"))
    completed = int(grab(r"Queries completed:\s+(\d+)"))
    lost = int(grab(r"Queries lost:\s+(\d+)"))
    latency = float(grab(r"Average Latency \(s\):\s+([\d.]+)"))
    return qps, completed, lost, latency * 1000


def wait_answering(port: int, timeout: float = 20) -> None:
    q = dns.message.make_query("www.example.test.", "A")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
            if r.answer:
                return
        except (TimeoutError, OSError, dns.exception.DNSException):
            pass
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not answer www.example.test A")


def measure(
    label: str, proc: subprocess.Popen[str], port: int, seconds: int, tmp: Path
) -> list[Result]:
    wait_answering(port)
    results = []
    for name, queries in (("health", HEALTH_QUERIES), ("mix", MIX_QUERIES)):
        pids = process_tree(proc.pid)
        before = cpu_seconds(pids)
        qps, completed, lost, latency = dnsperf(port, queries, seconds, tmp)
        cpu = cpu_seconds(pids) - before
        results.append(Result(label, name, qps, completed, lost, latency, cpu / completed * 1e6))
    return results


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_ours(
    label: str,
    cores: str,
    extra: list[str],
    env: dict[str, str],
    lport: int,
    seconds: int,
    binary: Path = BIN,
) -> list[Result]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = tmp / "bench.yaml"
        cfg.write_text(f"""\
checks:
  tcp: {{type: tcp, port: {lport}, interval: 1s, timeout: 500ms, rise: 2, fall: 2}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
      mail: {{type: A, values: [192.0.2.25]}}
      "@": {{type: MX, values: ["10 mail.example.test."]}}
      txt: {{type: TXT, values: ['"hello world"']}}
    failover:
      www: {{policy: active-active, check: tcp, endpoints: [{EP1}, {EP2}]}}
""")
        cmd = ["taskset", "-c", cores, str(binary), "serve", str(cfg), "--dns", "127.0.0.1:0"]
        cmd += ["--state", str(tmp / "s.db"), "--log-level", "WARNING", *extra]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
        try:
            assert proc.stdout is not None
            m = re.search(r":(\d+) \(udp", proc.stdout.readline())
            if m is None:
                raise SystemExit(f"{label}: dnsfailover serve did not start")
            return measure(label, proc, int(m.group(1)), seconds, tmp)
        finally:
            stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (DNS servers listen on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def run_gdnsd(lport: int, seconds: int) -> list[Result]:
    gdnsd = shutil.which("gdnsd") or "/usr/sbin/gdnsd"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        (tmp / "zones").mkdir()
        (tmp / "config").write_text(f"""\
options => {{
  listen => [ 127.0.0.1:{port} ]
  run_dir => {tmp}/run
  state_dir => {tmp}/state
  udp_threads => 1
  tcp_threads => 1
}}
service_types => {{
  tcp => {{ plugin => tcp_connect, port => {lport}, interval => 2, timeout => 1 }}
}}
plugins => {{
  multifo => {{
    www => {{ service_types => [ tcp ], ep1 => {EP1}, ep2 => {EP2} }}
  }}
}}
""")
        (tmp / "zones" / "example.test").write_text("""\
$TTL 300
@     SOA ns1 hostmaster 1 7200 900 1209600 300
@     NS  ns1
@     MX  10 mail
ns1   A   127.0.0.1
mail  A   192.0.2.25
txt   TXT "hello world"
www   30  DYNA multifo!www
""")
        log = (tmp / "gdnsd.log").open("w")
        cmd = ["taskset", "-c", "0", gdnsd, "-c", str(tmp), "start"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            return measure("gdnsd 3.8 (1 udp thread)", proc, port, seconds, tmp)
        finally:
            stop(proc)
            log.close()


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
        cmd += ["--state", str(tmp / "s.db"), "--log-level", "WARNING"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            m = re.search(r":(\d+) \(udp", proc.stdout.readline())
            if m is None:
                raise SystemExit("dnsfailover serve did not start")
            port = int(m.group(1))
            wait_answering(port)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--skip-gdnsd", action="store_true")
    ap.add_argument("--micro-only", action="store_true")
    ap.add_argument(
        "--ecs",
        type=int,
        metavar="ROUNDS",
        help="only compare plain and ECS queries: ROUNDS interleaved rounds of each",
    )
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print("micro-benchmark (in-process, www.example.test A, no EDNS unless ECS):")
    micro()
    if args.micro_only:
        return
    missing = [t for t in ("dnsperf", "taskset") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install -y dnsperf util-linux")
    if args.ecs:
        print_ecs(run_ecs(args.ecs, args.seconds), args.seconds)
        return
    has_gdnsd = shutil.which("gdnsd") is not None or Path("/usr/sbin/gdnsd").exists()
    if not has_gdnsd and not args.skip_gdnsd:
        print("gdnsd is not installed (apt-get install -y gdnsd): skipping the reference run")
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    if not has_uvloop:
        print("uvloop is not installed (pip install 'dnsfailover[fast]'): asyncio runs only")
    listeners = Listeners()
    results: list[Result] = []
    try:
        s = args.seconds
        loop_only = {"DNSFAILOVER_UDP": "loop"}
        results += run_ours(
            "dnsfailover UDP on asyncio loop",
            "0",
            [],
            {"DNSFAILOVER_LOOP": "asyncio", **loop_only},
            listeners.port,
            s,
        )
        results += run_ours("dnsfailover UDP thread (default)", "0", [], {}, listeners.port, s)
        if has_uvloop:
            results += run_ours("dnsfailover UDP on uvloop", "0", [], loop_only, listeners.port, s)
            results += run_ours(
                "dnsfailover uvloop --workers 2 (cores 0-1)",
                "0,1",
                ["--workers", "2"],
                {},
                listeners.port,
                s,
            )
        if has_gdnsd and not args.skip_gdnsd:
            results += run_gdnsd(listeners.port, s)
    finally:
        listeners.close()
    print(f"dnsperf -c 4 -q 100 -l {args.seconds}, server on core 0, dnsperf on core 1")
    print(f"{'server':<44}{'queries':<8}{'QPS':>10}{'lost':>7}{'avg ms':>8}{'CPU us/q':>10}")
    for r in results:
        print(
            f"{r.label:<44}{r.queries:<8}{r.qps:>10,.0f}{r.lost:>7}{r.latency_ms:>8.3f}"
            f"{r.cpu_us:>10.2f}"
        )


if __name__ == "__main__":
    main()
