"""Failover at scale, through `dnsfailover serve` as users run it.

    .venv/bin/python bench/scale.py [--static 100000] [--names 10000] [--endpoints 1000]
        [--cycles 15] [--outage 500] [--yaml] [--watch serial|sweep]

The zone holds `--static` static records (in a zone file, or in the YAML with `--yaml`) and
`--names` active-active failover names, each over two of `--endpoints` real TCP listeners
(name j uses endpoints j and j+1, so each endpoint serves names/endpoints*2 names), checked
every 100ms with timeout 100ms, fall 3, rise 2.  A child process holds the listeners; the
benchmark closes one to kill it.  Reported:

- start-up: from `serve` to the first answer of a failover name; RSS after start;
- one endpoint killed → every name that uses it answers without it (median, p99), and back;
  the server's CPU during each change against its idle rate (probes) = CPU per change;
- a regional outage: `--outage` endpoints killed at once → the last affected name answers
  without them (checked by sweeping the names still wrong over UDP each time the zone's SOA
  serial changed, polled every 2 ms; `--watch sweep`: every `--pace` seconds instead).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(os.environ.get("DNSFAILOVER_BIN") or Path(sys.executable).with_name("dnsfailover"))
ORIGIN = "example.test."
PORT = 24001
HZ = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), "?",
    )  # fmt: skip
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def address(i: int) -> str:
    return f"127.1.{i // 250}.{1 + i % 250}"


# -- the listener process: `scale.py --listen COUNT`, commands on stdin ------------------------


def listen(count: int) -> None:
    """Serve `count` TCP endpoints until stdin closes; `kill`/`start` IDS close and reopen them.

    The endpoints stand in for servers on other machines, so they should cost this machine
    as little as the kernel allows.  With TCP_DEFER_ACCEPT the kernel answers the SYN and
    completes the prober's connect, but queues the connection for accept only once data
    arrives; a probe sends none and resets at once (SO_LINGER 0), which drops it.  So
    nothing is accepted here, and 30,000 probes a second (three nodes) cost this process
    nothing instead of a third of a core.  Anything that does reach the queue (a client
    that sends data or closes with FIN) is still accepted and closed."""
    import selectors

    selector = selectors.DefaultSelector()
    socks: dict[int, socket.socket] = {}

    def open_(i: int) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 60)
        s.bind((address(i), PORT))
        s.listen(512)
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ, i)
        socks[i] = s

    def close(i: int) -> None:
        s = socks.pop(i, None)
        if s is not None:
            selector.unregister(s)
            s.close()

    for i in range(count):
        open_(i)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    print("ready", flush=True)
    linger = struct.pack("ii", 1, 0)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                line = sys.stdin.readline()
                if not line:
                    return
                verb, *args = line.split()
                ids = [int(a) for a in args]
                for i in ids:
                    (close if verb == "kill" else open_)(i)
                print("ok", flush=True)
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:  # nothing more to accept, or closed by a kill just now
                    break
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                conn.close()


class Listeners:
    def __init__(self, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--listen", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("listeners did not start")

    def command(self, verb: str, ids: list[int]) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{verb} {' '.join(map(str, ids))}\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(5)


# -- DNS over raw UDP: many names per sweep ---------------------------------------------------


def query(name: str, qid: int) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return struct.pack("!6H", qid, 0, 1, 0, 0, 0) + wire + b"\0\0\1\0\1"


PACE = 0.01
"""Seconds between sweeps (--pace): back to back, the sweeping takes a core of this 2-core
machine from the server it measures."""


class Resolver:
    def __init__(self, port: int, pace: float = PACE) -> None:
        self.port = port
        self.pace = pace
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.2)

    def sweep(self, names: list[str]) -> dict[str, bytes]:
        """One query per name, answers by name (names whose answer got lost are left out)."""
        replies: dict[str, bytes] = {}
        for start in range(0, len(names), 200):
            batch = names[start : start + 200]
            for qid, name in enumerate(batch):
                self.sock.sendto(query(name, qid), ("127.0.0.1", self.port))
            deadline = time.monotonic() + 0.5
            while len(replies) < start + len(batch) and time.monotonic() < deadline:
                try:
                    data = self.sock.recv(4096)
                except TimeoutError:
                    break
                qid = struct.unpack("!H", data[:2])[0]
                if qid < len(batch):
                    replies[batch[qid]] = data
        return replies


GATE_PACE = 0.002
"""Seconds between two SOA queries of `until`'s gate."""


def soa_of(resolver: Resolver, zone: str) -> Callable[[], bytes]:
    """The zone's SOA answer as served now (the reply without its ID): what `until` gates
    its sweeps on.  Asked on a socket of its own, so sweeps never read its replies."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    wire = query(zone, 0)[:-4] + b"\0\6\0\1"  # SOA, IN

    def soa() -> bytes:
        sock.sendto(wire, ("127.0.0.1", resolver.port))
        try:
            return sock.recv(4096)[2:]
        except TimeoutError:
            return b""  # lost: differs from any answer, so the names are swept

    return soa


def packed(ip: str) -> bytes:
    return socket.inet_aton(ip)


def until(
    resolver: Resolver,
    names: list[str],
    ok: object,
    limit: float = 15.0,
    gate: Callable[[], bytes] | None = None,
) -> float:
    """Seconds until every name's answer passes `ok(reply)`; sweeps the ones still wrong,
    one sweep every `resolver.pace` seconds.

    `gate` (the zone's SOA, `soa_of`): sweep again only once it differs from what it was at
    the last sweep, checked every `GATE_PACE` seconds.  The embedded server changes an answer
    only with a publish, and a publish changes the serial, so no change is missed; but 500
    names swept 100 times a second took ~60% of a core of this 2-core machine from the node
    it measured, during the very decision it timed.
    """
    start = time.perf_counter()
    left = list(names)
    seen = None
    while left:
        if time.perf_counter() - start > limit:
            raise SystemExit(f"{len(left)} names still wrong after {limit}s")
        if gate is not None:
            now = gate()
            if now == seen:
                time.sleep(GATE_PACE)
                continue
            seen = now
        swept = time.perf_counter()
        replies = resolver.sweep(left)
        left = [n for n in left if n not in replies or not ok(replies[n])]  # type: ignore[operator]
        if left:
            time.sleep(max(0.0, resolver.pace - (time.perf_counter() - swept)))
    return time.perf_counter() - start


# -- the server ---------------------------------------------------------------------------


def write_config(tmp: Path, args: argparse.Namespace, head: str = "") -> Path:
    """The benchmark's config; `head` is YAML put first (a cluster, regions)."""
    records = []
    for i in range(args.static):
        if i % 2:
            records.append(f'h{i} IN TXT "static record {i}"')
        else:
            records.append(f"h{i} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    interval = getattr(args, "interval", "100ms")
    lines = [
        head,
        "checks:",
        f"  tcp: {{type: tcp, port: {PORT}, interval: {interval}, timeout: 100ms, fall: 3, "
        "rise: 2}",
        "zones:",
        f"  {ORIGIN}:",
        f"    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}",
        f"    nameservers: [ns1.{ORIGIN}]",
        "    records:",
        "      ns1: {type: A, value: 127.0.0.1}",
    ]
    if args.yaml:
        for r in records:
            name, _in, rtype, value = r.split(" ", 3)
            lines.append(f"      {name}: {{type: {rtype}, values: [{value!r}]}}")
    else:
        (tmp / "static.zone").write_text(f"$ORIGIN {ORIGIN}\n$TTL 300\n" + "\n".join(records))
        lines.append("    zone_file: static.zone")
    lines.append("    failover:")
    n = args.endpoints
    for j in range(args.names):
        a, b = address(j % n), address((j + 1) % n)
        lines.append(f"      f{j}: {{policy: active-active, check: tcp, endpoints: [{a}, {b}]}}")
    path = tmp / "scale.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def serve(config: Path, state: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """`dnsfailover serve` on a free port; returns once it says where it listens."""
    proc = subprocess.Popen(
        [str(BIN), "serve", str(config), "--dns", "127.0.0.1:0", "--api", "off",
         "--state", str(state), "--log-level", "WARNING", *extra],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " on " not in line:
        proc.kill()
        raise SystemExit(f"serve did not start: {line!r}")
    return proc, int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])


def children(pid: int) -> list[int]:
    """`pid`'s child processes (the probe process, multiprocessing's resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its live children: the node's, probes included."""
    total = 0.0
    for p in [pid, *children(pid)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / HZ
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory(pid: int) -> str:
    """RSS of the node, and of each child process with its share (PSS) when it has one."""
    parts = [f"RSS {rss_mb(pid):.0f} MB"]
    for child in children(pid):
        kind = (
            "probe process"
            if "spawn_main" in Path(f"/proc/{child}/cmdline").read_text()
            else "helper"
        )
        parts.append(f"+ {kind} {rss_mb(child):.0f} MB")
    return " ".join(parts)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def users(endpoint: int, args: argparse.Namespace) -> list[str]:
    """The names that answer `endpoint` (name j uses endpoints j and j+1)."""
    n = args.endpoints
    return [f"f{j}.{ORIGIN}" for j in range(args.names) if endpoint in (j % n, (j + 1) % n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--static", type=int, default=100_000)
    ap.add_argument("--names", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=1_000)
    ap.add_argument("--cycles", type=int, default=15)
    ap.add_argument("--outage", type=int, default=500)
    ap.add_argument("--yaml", action="store_true", help="static records in the YAML")
    ap.add_argument("--probes", choices=("process", "inline"), default="process")
    ap.add_argument("--pace", type=float, default=PACE, help="seconds between sweeps")
    ap.add_argument(
        "--watch",
        choices=("serial", "sweep"),
        default="serial",
        help="the outage: sweep its names whenever the SOA serial changed (default), or "
        "every --pace seconds (the benchmark before 2026-12-03)",
    )
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(
        f"zone: {args.static} static records ({'YAML' if args.yaml else 'zone file'}), "
        f"{args.names} failover names over {args.endpoints} endpoints; tcp 100ms/100ms fall 3"
    )
    listeners = Listeners(args.endpoints)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = write_config(tmp, args)
        started = time.perf_counter()
        # (the default passes nothing, so builds from before --probes run too)
        probes = () if args.probes == "process" else ("--probes", args.probes)
        proc, port = serve(cfg, tmp / "s.db", *probes)
        try:
            resolver = Resolver(port, args.pace)
            first = f"f0.{ORIGIN}"
            until(resolver, [first], lambda r: r[3] & 0xF == 0 and r[6:8] != b"\0\0", 600)
            startup = time.perf_counter() - started
            print(f"start-up to first answer: {startup:.1f} s; {memory(proc.pid)}")
            time.sleep(2)
            idle0 = cpu_seconds(proc.pid)
            time.sleep(3)
            idle_rate = (cpu_seconds(proc.pid) - idle0) / 3
            print(
                f"idle (probing {args.endpoints} endpoints, --probes {args.probes}): "
                f"{idle_rate * 100:.0f}% of a core"
            )
            down: list[float] = []
            back: list[float] = []
            extra: list[float] = []
            rng = random.Random(7)
            for _ in range(args.cycles):
                e = rng.randrange(args.endpoints)
                names, gone = users(e, args), packed(address(e))
                time.sleep(0.3 + rng.random() * 0.1)
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                listeners.command("kill", [e])
                down.append(until(resolver, names, lambda r, g=gone: g not in r))
                cpu1, t1 = cpu_seconds(proc.pid), time.perf_counter()
                extra.append(max(0.0, (cpu1 - cpu0) - idle_rate * (t1 - t0)))
                listeners.command("start", [e])
                back.append(until(resolver, names, lambda r, g=gone: g in r))
            n_users = len(users(0, args))
            print(
                f"one endpoint killed -> its {n_users} names changed: median "
                f"{statistics.median(down) * 1000:.0f} ms, p99 {percentile(down, 99) * 1000:.0f}"
                f" ms (max {max(down) * 1000:.0f}); restored -> back: median "
                f"{statistics.median(back) * 1000:.0f} ms; server CPU per change beyond probing: "
                f"median {statistics.median(extra) * 1000:.0f} ms"
            )
            if args.outage <= 0:
                return
            killed = list(range(0, args.endpoints, args.endpoints // args.outage))[: args.outage]
            hit = sorted({n for e in killed for n in users(e, args)})
            gone_all = [packed(address(e)) for e in killed]

            def fixed(r: bytes) -> bool:
                return not any(g in r for g in gone_all)

            # One name per killed endpoint is watched closely: every name of an endpoint
            # changes in the same publish (one decision takes a key's names together), so
            # the last of them is the last affected name.  All are checked once afterwards,
            # so the watching itself does not load the server with 10k queries a round.
            sentinels = [users(e, args)[0] for e in killed]
            time.sleep(1.0)
            listeners.command("kill", killed)
            gate = None if args.watch == "sweep" else soa_of(resolver, ORIGIN)
            last = until(resolver, sentinels, fixed, limit=30.0, gate=gate)
            wrong = [n for n, r in resolver.sweep(hit).items() if not fixed(r)]
            print(
                f"regional outage: {len(killed)} endpoints killed at once -> the last of "
                f"{len(hit)} affected names answered without them after {last:.2f} s; "
                f"then {len(wrong)} names still wrong"
            )
            print(f"at the end: {memory(proc.pid)}")
            time.sleep(6.0)  # a node trims its heap 5 s after a decision of many names
            print(f"6 s later: {memory(proc.pid)}")
        finally:
            proc.terminate()
            proc.wait(30)
            listeners.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--listen":
        listen(int(sys.argv[2]))
    else:
        main()
