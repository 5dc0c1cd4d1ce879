"""The DNS servers the benchmarks measure, each started as its users run it, on core 0.

- gdnsd (Debian `gdnsd`): one UDP and one TCP thread; `www` health-checked by its multifo
  plugin with tcp_connect probes of the two endpoints;
- Knot DNS (`knotd`, Debian `knot`): one UDP and one TCP worker, optionally signing the zone;
  `www` is a static RRset of both endpoints (Knot has no health checks);
- `dnsfailover serve CONFIG`: `www` an active-active failover name probed over TCP.

All three serve the same zone (`ZONE_RECORDS`) on 127.0.0.1 and a free port, UDP and TCP.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# DNSFAILOVER_BIN runs another build (bench/revisions.py compares two)
BIN = Path(os.environ.get("DNSFAILOVER_BIN") or Path(sys.executable).with_name("dnsfailover"))
EP1, EP2 = "127.0.0.21", "127.0.0.22"
ORIGIN = "example.test."
ZONE_RECORDS = """\
$TTL 300
@     SOA ns1 hostmaster 1 7200 900 1209600 300
@     NS  ns1
@     MX  10 mail
ns1   A   127.0.0.1
mail  A   192.0.2.25
txt   TXT "hello world"
"""
"""Every server's static records; each adds `www` its own way."""
STATIC_NAME, STATIC_ADDRESS = f"mail.{ORIGIN}", "192.0.2.25"
HEALTH_NAME = f"www.{ORIGIN}"

Variant = tuple[str, str, list[str], dict[str, str]]
"""How `serve` is run: label, cores (taskset), extra arguments, environment."""
OURS: dict[str, Variant] = {
    # name: label, cores, extra arguments, environment
    "dnsfailover": ("dnsfailover serve (default: UDP thread)", "0", [], {}),
    "asyncio": (
        "dnsfailover UDP on the asyncio loop",
        "0",
        [],
        {"DNSFAILOVER_LOOP": "asyncio", "DNSFAILOVER_UDP": "loop"},
    ),
    "uvloop": ("dnsfailover UDP on uvloop", "0", [], {"DNSFAILOVER_UDP": "loop"}),
    "workers2": ("dnsfailover --workers 2 (cores 0-1)", "0,1", ["--workers", "2"], {}),
}
"""`dnsfailover serve` as measured: the default, and the other UDP paths for comparison."""


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


def dnsperf_field(out: str, pattern: str) -> str:
    """The first group of `pattern` in dnsperf's output (SystemExit when it is not there)."""
    m = re.search(pattern, out)
    if m is None:
        raise SystemExit(f"unexpected dnsperf output:\n{out}")
    return m.group(1)


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
class Running:
    """A server up and listening (not necessarily answering yet)."""

    name: str
    label: str
    proc: subprocess.Popen[str]
    port: int
    api: str | None = None  # `serve`'s HTTP API, when a variant turns it on


def start_knot(d: Path, zone: str, *, signing: bool) -> tuple[subprocess.Popen[str], int, str]:
    """`knotd` pinned to core 0 serving `zone` (master-file text) as ORIGIN from directory `d`
    (made): one UDP and one TCP worker; with `signing`, automatic signing with an ECDSA P-256
    CSK and NSEC.  Returns the process, its port and a label naming Knot's version."""
    knotd = shutil.which("knotd") or "/usr/sbin/knotd"
    for sub in ("zones", "db", "run"):
        (d / sub).mkdir(parents=True)
    (d / "zones" / f"{ORIGIN}zone").write_text(zone)
    port = free_port()
    signed = "    dnssec-signing: on\n    dnssec-policy: bench\n" if signing else ""
    (d / "knot.conf").write_text(f"""\
server:
    rundir: {d}/run
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: {d}/db
log:
  - target: stderr
    any: notice
policy:
  - id: bench
    algorithm: ecdsap256sha256
    single-type-signing: on
    nsec3: off
template:
  - id: default
    storage: {d}/zones
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {ORIGIN}
{signed}""")
    with (d / "knot.log").open("w") as log:
        cmd = ["taskset", "-c", "0", knotd, "-c", str(d / "knot.conf")]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    version = subprocess.run([knotd, "--version"], capture_output=True, text=True).stdout
    return proc, port, f"Knot {version.split()[-1]}" if version else "Knot"


def start_gdnsd(d: Path, lport: int) -> Running:
    """gdnsd pinned to core 0, `www` health-checked (tcp_connect to port `lport`)."""
    gdnsd = shutil.which("gdnsd") or "/usr/sbin/gdnsd"
    port = free_port()
    (d / "zones").mkdir(parents=True)
    (d / "config").write_text(f"""\
options => {{
  listen => [ 127.0.0.1:{port} ]
  run_dir => {d}/run
  state_dir => {d}/state
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
    (d / "zones" / ORIGIN.rstrip(".")).write_text(ZONE_RECORDS + "www   30  DYNA multifo!www\n")
    with (d / "gdnsd.log").open("w") as log:
        cmd = ["taskset", "-c", "0", gdnsd, "-c", str(d), "start"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    out = subprocess.run([gdnsd, "-h"], capture_output=True, text=True)
    version = re.search(r"version ([\d.]+)", out.stdout + out.stderr)
    label = f"gdnsd {version[1]}" if version else "gdnsd"
    return Running("gdnsd", f"{label} (multifo, 1 UDP + 1 TCP thread)", proc, port)


def start_ours(
    name: str, d: Path, lport: int, binary: Path = BIN, variant: Variant | None = None
) -> Running:
    """`dnsfailover serve` (`variant`, else OURS[name]) with `www` health-checked over TCP."""
    label, cores, extra, env = variant or OURS[name]
    d.mkdir(parents=True)
    cfg = d / "bench.yaml"
    cfg.write_text(f"""\
checks:
  tcp: {{type: tcp, port: {lport}, interval: 1s, timeout: 500ms, rise: 2, fall: 2}}
zones:
  {ORIGIN}:
    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}
    nameservers: [ns1.{ORIGIN}]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
      mail: {{type: A, values: [{STATIC_ADDRESS}]}}
      "@": {{type: MX, values: ["10 mail.{ORIGIN}"]}}
      txt: {{type: TXT, values: ['"hello world"']}}
    failover:
      www: {{policy: active-active, check: tcp, endpoints: [{EP1}, {EP2}]}}
""")
    cmd = ["taskset", "-c", cores, str(binary), "serve", str(cfg), "--dns", "127.0.0.1:0"]
    cmd += ["--api", "off", "--state", str(d / "s.db"), "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r":(\d+) \(udp", line)
    if m is None:
        stop(proc)
        proc.stdout.close()
        raise SystemExit(f"{name}: dnsfailover serve did not start")
    api = re.search(r"api (http://[^\s,]+)", line)
    return Running(name, label, proc, int(m[1]), api[1] if api else None)


@contextlib.contextmanager
def started(
    name: str, d: Path, lport: int, binary: Path = BIN, variant: Variant | None = None
) -> Iterator[Running]:
    """Server `name` (gdnsd, knot, one of OURS or `variant`) running from directory `d`,
    stopped after."""
    if name == "gdnsd":
        server = start_gdnsd(d, lport)
    elif name == "knot":
        www = f"www 30 A {EP1}\nwww 30 A {EP2}\n"
        proc, port, label = start_knot(d, ZONE_RECORDS + www, signing=False)
        server = Running("knot", f"{label} (1 UDP + 1 TCP worker; www static)", proc, port)
    else:
        server = start_ours(name, d, lport, binary, variant)
    try:
        yield server
    finally:
        stop(server.proc)
        if server.proc.stdout is not None:
            server.proc.stdout.close()
