"""Idle and half-sent HTTP API connections against `dnsfailover serve` with few descriptors.

    .venv/bin/python bench/api_abuse.py [--nofile 1024] [--idle 1100] [--half 1000]
        [--hold 18] [--bin PATH]

Starts `serve` (its file-descriptor limit set to `--nofile`) with one active-active name over
two TCP-checked endpoints (fall 2, every 100 ms), then opens `--idle` connections to its API
that send nothing and `--half` that send half a request, holds them `--hold` seconds while
asking DNS every 0.2 s, and reports: connections the client got, the most descriptors the
server held, the answers seen, whether the serial changed, health transitions to DOWN, how
many of the held connections the server had closed by the end, log lines (all, accept
errors, tracebacks), and how long `/healthz` took to answer 200 once the clients left.
Issue 15 measured the old code at 1,024 descriptors: every endpoint DOWN, the serial changed,
2,000 connections still open after 150 s, 94,324 accept errors in 18 s.  `--bin` runs
another build (e.g. a checkout of the old revision's venv).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.message
import dns.query

A, B = "127.0.0.91", "127.0.0.92"
WWW = "www.example.test."


class Listeners:
    """TCP endpoints that accept and close, on a thread."""

    def __init__(self, *addresses: str) -> None:
        self.socks = [socket.create_server((a, 0)) for a in addresses]
        self.ports = [int(s.getsockname()[1]) for s in self.socks]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            for s in self.socks:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self.socks:
            s.close()


def config(ports: list[int]) -> str:
    eps = ", ".join(
        f"{{address: {a}, check_port: {p}}}" for a, p in zip((A, B), ports, strict=True)
    )
    return f"""\
checks:
  tcp: {{type: tcp, port: 1, interval: 100ms, timeout: 100ms, fall: 2, rise: 2}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      www: {{policy: active-active, check: tcp, endpoints: [{eps}]}}
"""


def query(port: int, name: str, rtype: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rtype), "127.0.0.1", port=port, timeout=2)


def closed(sock: socket.socket) -> bool:
    """True when the server has closed `sock` (whatever it sent first)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def healthz(api: tuple[str, int]) -> int:
    try:
        with socket.create_connection(api, timeout=2) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return int(s.recv(64).split(b" ")[1])
    except (OSError, IndexError, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--idle", type=int, default=1100)
    parser.add_argument("--half", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=18.0)
    parser.add_argument("--bin", default=str(Path(sys.executable).with_name("dnsfailover")))
    args = parser.parse_args()
    listeners = Listeners(A, B)
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "c.yaml"
        conf.write_text(config(listeners.ports))
        log = Path(tmp) / "serve.log"
        nofile = args.nofile

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with log.open("wb") as err:
            proc = subprocess.Popen(
                [args.bin, "serve", str(conf), "--dns", "127.0.0.1:0", "--api", "127.0.0.1:0",
                 "--state", str(Path(tmp) / "s.db")],
                stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=limit,
            )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        dns_m = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        api_m = re.search(r"api http://([\d.]+):(\d+)", line)
        if dns_m is None or api_m is None:
            raise SystemExit(f"serve did not start: {line!r}\n{log.read_text()}")
        port, api = int(dns_m.group(1)), (api_m.group(1), int(api_m.group(2)))
        socks: list[socket.socket] = []
        try:
            time.sleep(1.0)
            serial = query(port, "example.test.", "SOA").answer[0][0].serial
            started = time.monotonic()
            idle = half = 0
            failures = 0
            for i in range(args.idle + args.half):
                if failures >= 5:  # the server no longer accepts: its backlog stays full
                    break
                try:
                    s = socket.create_connection(api, timeout=3)
                except OSError:
                    failures += 1
                    continue
                failures = 0
                socks.append(s)
                if i >= args.idle:
                    with contextlib.suppress(OSError):
                        s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    half += 1
                else:
                    idle += 1
            opened = time.monotonic() - started
            answers: set[tuple[str, ...]] = set()
            fds = 0
            end = time.monotonic() + args.hold
            while time.monotonic() < end:
                r = query(port, WWW, "A")
                answers.add(tuple(sorted(rd.to_text() for rr in r.answer for rd in rr)))
                fds = max(fds, len(list(Path(f"/proc/{proc.pid}/fd").iterdir())))
                time.sleep(0.2)
            still_open = sum(not closed(s) for s in socks)
            changed = query(port, "example.test.", "SOA").answer[0][0].serial != serial
            for s in socks:
                s.close()
            socks = []
            left = time.monotonic()
            while healthz(api) != 200 and time.monotonic() - left < 60:
                time.sleep(0.05)
            recovered = time.monotonic() - left
        finally:
            for s in socks:
                s.close()
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            listeners.close()
        lines = log.read_text(errors="replace").splitlines()
        print(f"nofile {nofile}: opened {idle} idle + {half} half-sent in {opened:.1f}s")
        print(f"held {args.hold:g}s: server fds max {fds}; answers seen {sorted(answers)}")
        print(f"serial changed: {changed}; DOWN transitions: {sum('-> down' in x for x in lines)}")
        print(f"held connections still open at the end: {still_open}")
        print(
            f"log lines {len(lines)}, accept errors {sum('accept' in x for x in lines)}, "
            f"tracebacks {sum(x.startswith('Traceback') for x in lines)}"
        )
        print(f"/healthz 200 {recovered:.2f}s after the clients left")


if __name__ == "__main__":
    main()
