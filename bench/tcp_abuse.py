"""Failover latency with and without hostile TCP clients, against the real `dnsfailover serve`.

    .venv/bin/python bench/tcp_abuse.py [--rounds 8] [--flooders 4] [--slowloris 200]

Two HTTP endpoints on 127.0.0.x back an active-active name checked every --interval.  Rounds
alternate: idle, abuse, idle, abuse...  An abuse round starts another process that streams
zero-length TCP frames over --flooders connections and holds --slowloris connections that
sent one byte of a length prefix (both reconnect whenever the server closes them), then
stops an endpoint and polls over UDP until the answer drops it.  Reports the median of the
per-round ratios abuse/idle (target <= 1.5), how long after the abuse stops a new TCP query
is answered (target <= 1 s), whether TCP was answered during the abuse, and UDP p95.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dns.exception
import dns.message
import dns.query
from failover_latency import arguments, machine, percentile, two_endpoint_config
from support import HttpEndpoints, Server

NAME = "www.example.test."
JUNK = b"\0\0" * 32768  # zero-length frames


# --- the abuser (its own process, so that its GIL is not the measurer's) -----------------


def abuse(port: int, flooders: int, slowloris: int) -> None:
    """Flood and hold connections until SIGTERM; print one line of counts on the way out."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    sel = selectors.DefaultSelector()
    counts = {"flood": 0, "slow": 0}

    def connect(kind: str) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        events = selectors.EVENT_WRITE if kind == "flood" else selectors.EVENT_READ
        if kind == "slow":
            try:
                sock.setblocking(True)
                sock.settimeout(1)
                sock.send(b"\0")  # half a length prefix, then nothing
                sock.setblocking(False)
            except OSError:
                sock.close()
                return
        counts[kind] += 1
        sel.register(sock, events, kind)

    for _ in range(flooders):
        connect("flood")
    for _ in range(slowloris):
        connect("slow")
    print("ready", flush=True)
    parent = os.getppid()
    while not stopping and os.getppid() == parent:  # never outlive the benchmark
        for key, _ in sel.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if key.data == "flood":
                    sock.send(JUNK)
                    continue
                if sock.recv(4096):
                    continue
            except BlockingIOError:
                continue
            except OSError:
                pass
            sel.unregister(sock)  # closed by the server: come back
            sock.close()
            connect(key.data)
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    print(f"connections opened: flood {counts['flood']}, slowloris {counts['slow']}", flush=True)


class Abuser:
    def __init__(self, port: int, args: argparse.Namespace) -> None:
        cmd = [sys.executable, __file__, "--abuse", str(port)]
        cmd += ["--flooders", str(args.flooders), "--slowloris", str(args.slowloris)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the abuser did not start")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out.strip()


# --- measuring ----------------------------------------------------------------------------


class Probe:
    """UDP and TCP queries to the server, with each UDP query's time kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.udp_times: list[float] = []

    def answer(self) -> tuple[str, ...]:
        query = dns.message.make_query(NAME, "A")
        start = time.perf_counter()
        reply = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=2)
        self.udp_times.append(time.perf_counter() - start)
        return tuple(sorted(rd.to_text() for rrset in reply.answer for rd in rrset))

    def tcp_ok(self, timeout: float) -> bool:
        query = dns.message.make_query(NAME, "A")
        try:
            reply = dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=timeout)
        except (OSError, EOFError, dns.exception.DNSException):
            return False
        return bool(reply.answer)

    def wait(self, want: tuple[str, ...], limit: float) -> float:
        start = time.perf_counter()
        while self.answer() != want:
            if time.perf_counter() - start > limit:
                raise SystemExit(f"answer did not become {want} within {limit}s")
            time.sleep(0.002)
        return time.perf_counter() - start


def run(args: argparse.Namespace) -> None:
    endpoints = HttpEndpoints()
    a, b = "127.0.0.133", "127.0.0.134"
    ports = {addr: endpoints.start(addr) for addr in (a, b)}
    latency: dict[str, list[float]] = {"idle": [], "abuse": []}
    udp: dict[str, list[float]] = {"idle": [], "abuse": []}
    recovery: list[float] = []
    tcp_during: list[bool] = []
    counts = ""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(two_endpoint_config(args, a, b, ports))
        server = Server(cfg, Path(tmp) / "state.db", "--log-level", "WARNING")
        probe = Probe(server.port)
        try:
            probe.wait((a, b), 10)
            for i in range(args.rounds * 2):
                kind = "abuse" if i % 2 else "idle"
                victim, survivor = (a, b) if (i // 2) % 2 else (b, a)
                abuser = Abuser(server.port, args) if kind == "abuse" else None
                try:
                    time.sleep(0.5)  # the abuse in full swing (or the same pause idle)
                    probe.udp_times = []
                    tcp_during += [probe.tcp_ok(2) for _ in range(3)] if abuser else []
                    time.sleep(0.05 + (i * 0.037) % 0.1)  # vary the phase against the probes
                    endpoints.stop(victim)
                    latency[kind].append(probe.wait((survivor,), 60))
                    endpoints.start(victim)
                    probe.wait((a, b), 60)
                    udp[kind] += probe.udp_times
                finally:
                    counts = abuser.stop() if abuser is not None else counts
                if abuser is not None:
                    start = time.perf_counter()
                    while not probe.tcp_ok(0.2):
                        if time.perf_counter() - start > 60:
                            raise SystemExit("TCP not answered within 60 s of the abuse")
                    recovery.append(time.perf_counter() - start)
        finally:
            server.stop()
            endpoints.close()

    ratios = [ab / idle for idle, ab in zip(latency["idle"], latency["abuse"], strict=True)]
    print(f"machine: {machine()}")
    print(
        f"config: interval {args.interval}, timeout {args.timeout}, fall {args.fall}, "
        f"rise {args.rise}; {args.rounds} rounds each, interleaved; abuse: {args.flooders} "
        f"connections streaming zero-length frames + {args.slowloris} slowloris sockets"
    )
    print(f"abuser, last round: {counts}")
    for kind in ("idle", "abuse"):
        ms = [v * 1000 for v in latency[kind]]
        udp_ms = [v * 1000 for v in udp[kind]]
        print(
            f"killed -> answer changed, {kind:<5}  median {statistics.median(ms):6.0f} ms"
            f"   max {max(ms):6.0f} ms   UDP p50 {percentile(udp_ms, 50):.2f} ms"
            f"  p95 {percentile(udp_ms, 95):.2f} ms  ({len(udp_ms)} queries)"
        )
    print(
        f"abuse/idle ratio: median {statistics.median(ratios):.2f} (target <= 1.5), "
        f"per round {' '.join(f'{r:.2f}' for r in ratios)}"
    )
    print(
        f"TCP answered during the abuse: {sum(tcp_during)}/{len(tcp_during)}; "
        f"after it stops: max {max(recovery) * 1000:.0f} ms (target <= 1000 ms)"
    )


def main() -> None:
    if "--abuse" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--abuse", type=int, required=True)
        ap.add_argument("--flooders", type=int, default=4)
        ap.add_argument("--slowloris", type=int, default=200)
        args = ap.parse_args()
        abuse(args.abuse, args.flooders, args.slowloris)
        return
    ap = arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8, help="rounds of each kind")
    ap.add_argument("--flooders", type=int, default=4)
    ap.add_argument("--slowloris", type=int, default=200)
    run(ap.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
