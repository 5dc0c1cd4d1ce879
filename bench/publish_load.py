"""Publishing under load: 100 publishes a second while dnsperf runs, every reply checked.

    .venv/bin/python bench/publish_load.py [--seconds 10] [--rate 100] [--checkers 2]

The real DnsServer (``udp_thread=True``, the C hit path on) serves on 127.0.0.1:0, fed by
the embedded provider's zones (`EmbeddedZones.put`: the path a failover decision takes,
which diffs the versions and tells the server the names that changed).  A publisher thread
puts version N of the zone ``--rate`` times a second: names v0..v9 all answer
A 10.(N>>8).(N&255).i and 10.(N>>8).(N&255).(100+i) and TXT "N", c0..c3 are CNAMEs to
v0..v3, p has an A record (10.x.y.200) in even versions and a TXT "N" in odd ones (so each
answer or NODATA of p says which version it came from), and the SOA serial is N; `static`
never changes (a C hit across every publish).  The publisher is in-process: nothing in the
product takes 100 zone versions a second from outside (a decision publishes at most once
per check interval), so the bench drives the provider's own `put`.

Meanwhile dnsperf runs closed-loop on a mix of those names (its lost queries, short or
unexpected-ID replies and response codes are parsed from its output), and checker threads
send queries one after the other from their own sockets, each in a random spelling, with or
without EDNS/DO, and check every reply: (a) it parses and is the reply to that query, (b)
its records are those of one version N (the two A records agree, the CNAME's target answers
as its name does, p's answer or NODATA and the SOA serial of a NODATA or NXDOMAIN agree on
N's parity), (c) N never goes backwards for one checker, and N is at least the version
whose publish had returned before the query was sent and at most the one being published
when the reply came.  The checkers run in processes of their own (not to take the server's
GIL).  QPS is measured with and without publishing (dnsperf, not pinned).

Figures (2 cores shared with other work; 10 s each, 100 publishes/s):

- 2 checkers: 1,004 publishes in 10.0 s (99.9/s); 1,188 checked replies from 596 versions,
  0 inconsistent, 0 timeouts; dnsperf 49,910 queries, 0 lost, 0 malformed, all NOERROR or
  NXDOMAIN as asked.
- QPS, no checkers, dnsperf asking all 32 questions (21 change at every publish): 114,088
  without publishing, 7,182 while publishing (C hits 29,710 of 72,091).  A publish drops the
  changed names' templates, a key is learnt again only at its second query in the new
  version, and until then the full path answers (3,500 QPS here alone, `fast=False`): at
  100 versions a second the changed names are answered by Python almost always, and while
  Python answers a batch's misses the C loop of that socket waits.
- QPS, no checkers, dnsperf asking only `static` (no publish changes it): 104,871 without
  publishing, 90,949 while publishing: the publish itself costs ~13%.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from qps_servers import dnsperf_field

from dnsfailover.model import RecordSet, Soa, ZoneContent
from dnsfailover.server import DnsServer, ZoneSnapshot
from dnsfailover.server.embedded import EmbeddedZones

ORIGIN = "load.test."
NAMES = 10
STATIC = (
    RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
    RecordSet(f"ns1.{ORIGIN}", "A", 300, ("192.0.2.53",)),
    RecordSet(f"static.{ORIGIN}", "A", 300, ("192.0.2.1",)),
    *(RecordSet(f"c{i}.{ORIGIN}", "CNAME", 300, (f"v{i}.{ORIGIN}",)) for i in range(4)),
)
QUESTIONS = [  # what the checkers and dnsperf ask
    *((f"v{i}.{ORIGIN}", "A") for i in range(NAMES)),
    *((f"v{i}.{ORIGIN}", "TXT") for i in range(NAMES)),
    *((f"v{i}.{ORIGIN}", "AAAA") for i in range(0, NAMES, 3)),  # NODATA
    *((f"c{i}.{ORIGIN}", "A") for i in range(4)),
    (f"p.{ORIGIN}", "A"),
    (f"p.{ORIGIN}", "TXT"),
    (f"static.{ORIGIN}", "A"),
    (f"nope.{ORIGIN}", "A"),  # NXDOMAIN
]


def version(n: int) -> ZoneContent:
    """Version `n` of the zone (see the module's doc)."""
    soa = Soa(f"ns1.{ORIGIN}", f"hostmaster.{ORIGIN}", n, 7200, 900, 1209600, 300, 3600)
    hi, lo = n >> 8 & 0xFF, n & 0xFF
    managed: dict[tuple[str, str], RecordSet] = {}
    for i in range(NAMES):
        name = f"v{i}.{ORIGIN}"
        managed[name, "A"] = RecordSet(
            name, "A", 30, (f"10.{hi}.{lo}.{i}", f"10.{hi}.{lo}.{100 + i}")
        )
        managed[name, "TXT"] = RecordSet(name, "TXT", 30, (f'"{n}"',))
    p = f"p.{ORIGIN}"
    if n % 2:
        managed[p, "TXT"] = RecordSet(p, "TXT", 30, (f'"{n}"',))
    else:
        managed[p, "A"] = RecordSet(p, "A", 30, (f"10.{hi}.{lo}.200",))
    return ZoneContent(ORIGIN, soa, static=STATIC, managed=managed)


class Inconsistent(Exception):
    """A reply that is not exactly what one published version answers."""


def _a_version(values: list[str], host: int) -> int:
    """N from A records 10.(N>>8).(N&255).host (and .host+100, if two)."""
    ns = set()
    for v in values:
        parts = [int(x) for x in v.split(".")]
        if parts[0] != 10 or parts[3] not in (host, host + 100):
            raise Inconsistent(f"A {v}")
        ns.add(parts[1] << 8 | parts[2])
    if len(ns) != 1:
        raise Inconsistent(f"A records of two versions: {values}")
    return ns.pop()


def seen_version(query: dns.message.Message, wire: bytes) -> int | None:
    """The version one reply is from (None: `static`, the same in every version); raises
    Inconsistent when the reply is not one version's answer to the query."""
    try:
        reply = dns.message.from_wire(wire)
    except Exception as e:
        raise Inconsistent(f"unparsable reply: {e!r}") from e
    if reply.id != query.id or not reply.flags & dns.flags.QR or reply.question != query.question:
        raise Inconsistent("not the reply to the query")
    q = query.question[0]
    name, rtype = q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype)
    rcode = reply.rcode()
    answer = {(r.name.to_text().lower(), dns.rdatatype.to_text(r.rdtype)): r for r in reply.answer}
    soas = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]
    serial = soas[0][0].serial if soas else None
    if name == f"nope.{ORIGIN}":
        if rcode != dns.rcode.NXDOMAIN or serial is None or answer:
            raise Inconsistent("nope: not an NXDOMAIN with the SOA")
        return int(serial)
    if rcode != dns.rcode.NOERROR:
        raise Inconsistent(f"rcode {dns.rcode.to_text(rcode)}")
    if name == f"static.{ORIGIN}":
        if [r.to_text() for r in answer.get((name, "A"), [])] != ["192.0.2.1"]:
            raise Inconsistent("static")
        return None
    if name.startswith("c"):
        i = int(name[1])
        target = f"v{i}.{ORIGIN}"
        cname = answer.get((name, "CNAME"))
        if cname is None or cname[0].to_text().lower() != target or (target, "A") not in answer:
            raise Inconsistent("CNAME chain")
        return _a_version([r.to_text() for r in answer[target, "A"]], i)
    if name == f"p.{ORIGIN}":
        got = answer.get((name, rtype))
        if got is None:  # NODATA: the version has the other type
            if serial is None:
                raise Inconsistent("p: NODATA without the SOA")
            if (serial % 2 == 1) != (rtype == "A"):
                raise Inconsistent(f"p {rtype}: NODATA in version {serial}")
            return int(serial)
        values = [r.to_text() for r in got]
        n = _a_version(values, 200) if rtype == "A" else int(got[0].strings[0])
        if (n % 2 == 1) != (rtype == "TXT") or serial is not None:
            raise Inconsistent(f"p {rtype} in version {n}")
        return n
    i = int(name[1])
    if rtype == "AAAA":
        if answer or serial is None:
            raise Inconsistent("v AAAA: not a NODATA with the SOA")
        return int(serial)
    got = answer.get((name, rtype))
    if got is None or len(answer) != 1:
        raise Inconsistent(f"{name} {rtype}: answer {list(answer)}")
    if rtype == "A":
        return _a_version([r.to_text() for r in got], i)
    if len(got) != 1:
        raise Inconsistent("TXT of two versions")
    return int(got[0].strings[0])


class Counter(Protocol):
    value: int


@dataclass
class Publisher:
    """Puts a new version `rate` times a second: `started` is the newest version put (or
    being put), `done` the newest whose put has returned (shared with the checkers'
    processes)."""

    zones: EmbeddedZones
    rate: float
    started: Counter
    done: Counter
    publishes: int = 0
    late: int = 0  # turns that started later than their time (the rate not kept)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        interval, due = 1 / self.rate, time.monotonic()
        while not self.stop.is_set():
            due += interval
            wait = due - time.monotonic()
            if wait > 0:
                self.stop.wait(wait)
            elif wait < -interval:
                self.late += 1
            if self.stop.is_set():
                break
            n = self.started.value + 1
            self.started.value = n
            self.zones.put([version(n)])
            self.done.value = n
            self.publishes += 1


@dataclass
class Checked:
    replies: int = 0
    timeouts: int = 0
    inconsistent: list[str] = field(default_factory=list)
    versions: set[int] = field(default_factory=set)


def check(
    address: tuple[str, int], started: Counter, done: Counter, seed: int, stop: Any
) -> Checked:
    """Asks QUESTIONS one after the other until `stop` is set, checking every reply (see
    `seen_version`) and the version's bounds: at least `done` when the query was sent, at
    most `started` when the reply came, never lower than the one before."""
    rng, out = random.Random(seed), Checked()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect(address)
    last = 0
    try:
        while not stop.is_set():
            name, rtype = rng.choice(QUESTIONS)
            spelled = "".join(c.upper() if rng.random() < 0.3 else c for c in name)
            edns = rng.choice([-1, 0, 0])
            query = dns.message.make_query(
                spelled, rtype, use_edns=edns, want_dnssec=edns == 0 and rng.random() < 0.3
            )
            low = done.value
            sock.send(query.to_wire())
            try:
                while True:  # (a late reply to an earlier query that timed out: skip it)
                    wire = sock.recv(0xFFFF)
                    if wire[:2] == struct.pack("!H", query.id):
                        break
            except TimeoutError:
                out.timeouts += 1
                continue
            high = started.value
            out.replies += 1
            try:
                n = seen_version(query, wire)
                if n is not None:
                    if not low <= n <= high:
                        raise Inconsistent(f"version {n} outside [{low}, {high}]")
                    if n < last:
                        raise Inconsistent(f"version {n} after {last}")
                    last = n
                    out.versions.add(n)
            except Inconsistent as e:
                if len(out.inconsistent) < 20:
                    out.inconsistent.append(f"{spelled} {rtype}: {e}")
    finally:
        sock.close()
    return out


def checker_process(
    address: tuple[str, int], started: Counter, done: Counter, seed: int, stop: Any, results: Any
) -> None:
    """`check` in a process of its own (so the server's process has its GIL to itself)."""
    results.put(None)  # ready
    results.put(check(address, started, done, seed, stop))


@dataclass
class Perf:
    qps: float
    sent: int
    completed: int
    lost: int
    malformed: int  # dnsperf's warnings: short replies, unexpected IDs
    rcodes: str


def dnsperf(port: int, seconds: float, tmp: Path, asked: list[tuple[str, str]] = QUESTIONS) -> Perf:
    data = tmp / "queries.txt"
    data.write_text("".join(f"{name} {rtype}\n" for name, rtype in asked))
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data), "-W"]
    cmd += ["-c", "4", "-q", "100", "-l", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def grab(pattern: str) -> str:
        return dnsperf_field(out, pattern)

    return Perf(
        qps=float(grab(r"Queries per second:\s+([\d.]+)")),
        sent=int(grab(r"Queries sent:\s+(\d+)")),
        completed=int(grab(r"Queries completed:\s+(\d+)")),
        lost=int(grab(r"Queries lost:\s+(\d+)")),
        malformed=len(re.findall(r"(?m)^Warning", out)),
        rcodes=grab(r"Response codes:\s+(.*)"),
    )


@dataclass
class Result:
    seconds: float
    publishes: int
    late: int
    checked: int
    timeouts: int
    inconsistent: list[str]
    versions: int  # distinct versions the checkers saw
    c_hits: int  # replies the C hit path sent
    quiet: Perf | None = None  # dnsperf without publishing
    loaded: Perf | None = None  # dnsperf while publishing

    def lines(self) -> list[str]:
        rate = self.publishes / self.seconds
        out = [
            f"publishes: {self.publishes} in {self.seconds:.1f} s ({rate:.1f}/s, "
            f"{self.late} turns late)",
            f"checked replies: {self.checked} ({self.versions} distinct versions seen, "
            f"{self.timeouts} timeouts), inconsistent: {len(self.inconsistent)}",
            f"replies sent by the C hit path: {self.c_hits}",
        ]
        for label, perf in (("without publishing", self.quiet), ("publishing", self.loaded)):
            if perf is not None:
                out.append(
                    f"dnsperf {label}: {perf.qps:.0f} QPS, {perf.completed}/{perf.sent} "
                    f"completed, lost {perf.lost}, malformed {perf.malformed}; {perf.rcodes}"
                )
        return out + self.inconsistent


def c_answered(server: DnsServer) -> int:
    """Replies the C hit path sent: all replies but those the Python paths counted."""
    return sum(server.response_counts()[:16]) - sum(server.rcodes[:16])


async def run(
    seconds: float,
    rate: float,
    checkers: int,
    with_dnsperf: bool,
    quiet_seconds: float = 0,
    asked: list[tuple[str, str]] = QUESTIONS,
) -> Result:
    """The bench; `asked`: dnsperf's questions (the checkers ask all of QUESTIONS)."""
    zones = EmbeddedZones()
    spawn = multiprocessing.get_context("spawn")
    started, done = spawn.RawValue("q", 1), spawn.RawValue("q", 1)
    stop, results = spawn.Event(), spawn.Queue()
    async with DnsServer(ZoneSnapshot.build([]), port=0, udp_thread=True) as server:
        assert server.address is not None
        assert server.c_hits
        zones.attach(server)
        zones.put([version(1)])
        with tempfile.TemporaryDirectory(prefix="publish_load-") as tmp:
            quiet = None
            if with_dnsperf and quiet_seconds:
                quiet = await asyncio.to_thread(
                    dnsperf, server.address[1], quiet_seconds, Path(tmp), asked
                )
            publisher = Publisher(zones, rate, started, done)
            args = (server.address, started, done)
            procs = [
                spawn.Process(target=checker_process, args=(*args, seed, stop, results))
                for seed in range(checkers)
            ]
            for p in procs:
                p.start()
            for _ in procs:  # every checker ready
                await asyncio.to_thread(results.get, True, 60)
            c_before = c_answered(server)
            thread = threading.Thread(target=publisher.run, daemon=True)
            began = time.monotonic()
            thread.start()
            loaded = None
            try:
                if with_dnsperf:
                    loaded = await asyncio.to_thread(
                        dnsperf, server.address[1], seconds, Path(tmp), asked
                    )
                else:
                    await asyncio.sleep(seconds)
            finally:
                publisher.stop.set()
                await asyncio.to_thread(thread.join)
                elapsed = time.monotonic() - began
                stop.set()
                checked = [await asyncio.to_thread(results.get, True, 60) for _ in procs]
                for p in procs:
                    await asyncio.to_thread(p.join)
            c_hits = c_answered(server) - c_before
    return Result(
        seconds=elapsed,
        publishes=publisher.publishes,
        late=publisher.late,
        checked=sum(c.replies for c in checked),
        timeouts=sum(c.timeouts for c in checked),
        inconsistent=[m for c in checked for m in c.inconsistent],
        versions=len(set[int]().union(*(c.versions for c in checked))),
        c_hits=c_hits,
        quiet=quiet,
        loaded=loaded,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=100, help="publishes a second")
    parser.add_argument("--checkers", type=int, default=2)
    parser.add_argument("--no-dnsperf", action="store_true")
    parser.add_argument(
        "--dnsperf-asks",
        choices=["all", "unchanged"],
        default="all",
        help="dnsperf asks every question, or only `static` (a name no publish changes)",
    )
    args = parser.parse_args()
    with_dnsperf = not args.no_dnsperf
    if with_dnsperf and shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is missing: apt-get install -y dnsperf (or --no-dnsperf)")
    asked = QUESTIONS if args.dnsperf_asks == "all" else [(f"static.{ORIGIN}", "A")]
    result = asyncio.run(
        run(args.seconds, args.rate, args.checkers, with_dnsperf, args.seconds / 2, asked)
    )
    print(f"dnsperf -c 4 -q 100 asks {len(asked)} questions, {args.checkers} checkers")
    for line in result.lines():
        print(line)
    bad = result.inconsistent or (result.loaded is not None and result.loaded.malformed)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
