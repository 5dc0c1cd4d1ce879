"""A regional failover of 10,000 signed names, through `dnsfailover serve` as users run it.

    .venv/bin/python bench/dnssec_failover.py [--names 10000] [--per-region 500]
        [--static 1000] [--interval 1] [--rounds 3] [--modes signed,unsigned]

The zone holds `--static` static records and `--names` active-passive names `fJ`, each with
tier `a` (one endpoint of region A) before tier `b` (one endpoint of region B); the regions
have `--per-region` endpoints each, real TCP listeners on 127.1.x.y held by a child process
(`bench/scale.py`'s), checked every `--interval` seconds (timeout half of it, fall 2).  A
round starts `serve` with the zone signed (`dnssec: {}`: ECDSA P-256 CSK, NSEC) and, as the
baseline, unsigned (the order alternates); once every name answers its region-A address
(with an RRSIG when signed) and, signed, the node has logged its sign-ahead pass (`dnssec:
signed ahead N answers`: the answers each tier's loss would serve, signed before it happens;
`serve` runs at its default log level, INFO), every region-A listener is closed at once.
The benchmark watches one name per endpoint until all of them answer region B, then sweeps
every name still wrong until none is: a name is right when its answer (DO=1 when signed) has
its region-B address, not the region-A one, and an RRSIG; the first right reply of each name
is kept with its arrival time.  Measured:

- the engine's decisions: each name's failover transition and its `at`, from the node's
  history (`GET /api/v1/events`), and the first `health` event (detection).  The probes of
  a round are spread over the interval, so the 500 endpoints are found down, and their names
  decided, over about one interval;
- per decision, its `at` -> the first right reply of its endpoint's watched name (every
  name of an endpoint changes in the same decision and the same atomic publish): median and
  maximum over the 500 endpoints, the figure for the target (<= 1.5 s); and the last
  decision -> every name seen right by the sweeps that follow (an upper bound: a sweep of
  10,000 names takes a while, and starts only once every watched name is right);
- node CPU per name: the node process's CPU (utime+stime, not the probe process) from the
  kill to the last name right, less its rate while idle under the same watching, over the
  names changed (health, decisions, signing, snapshot, history); signed minus unsigned, the
  median of the per-round differences, is the signing's cost per name; and the node's own
  count of the signatures it made and their CPU (`dnsfailover_dnssec_signatures_total`,
  `dnsfailover_dnssec_signing_cpu_seconds_total` in `/metrics`), read before and after;
- then every kept reply is validated with dnspython (`dns.dnssec.validate`) against the
  zone's DNSKEY and its A RRset must be exactly the new address: one failure and the run
  exits 1 instead of reporting a time.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns_qps import BIN, cpu_seconds, stop
from dnssec_qps import zone_text
from scale import PORT, Listeners, address, machine, rss_mb

ORIGIN = "example.test."
PACE = 0.05  # seconds between sweeps: watching costs the node little (see bench/scale.py)
TRANSITIONS = ("failover", "failback", "answer", "all_down")


def write_config(tmp: Path, args: argparse.Namespace, signed: bool) -> Path:
    (tmp / "static.zone").write_text(zone_text(args.static))
    n = args.per_region
    lines = [
        "checks:",
        f"  tcp: {{type: tcp, port: {PORT}, interval: {round(args.interval * 1000)}ms, "
        f"timeout: {round(args.interval * 500)}ms, fall: 2, rise: 2}}",
        "zones:",
        f"  {ORIGIN}:",
        f"    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}",
        f"    nameservers: [ns1.{ORIGIN}]",
        "    zone_file: static.zone",
        "    dnssec: {}" if signed else "",
        "    failover:",
    ]
    for j in range(args.names):
        a, b = address(j % n), address(n + j % n)
        lines.append(
            f"      f{j}: {{policy: active-passive, check: tcp, "
            f"tiers: [{{name: a, endpoints: [{a}]}}, {{name: b, endpoints: [{b}]}}]}}"
        )
    path = tmp / "failover.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def serve(config: Path, state: Path, log: Path) -> tuple[subprocess.Popen[str], int, str]:
    """`dnsfailover serve` with its API; returns it, its DNS port and its API's URL."""
    cmd = [str(BIN), "serve", str(config), "--dns", "127.0.0.1:0", "--api", "127.0.0.1:0"]
    cmd += ["--state", str(state), "--log-level", "INFO"]  # serve's default
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " on " not in line or "api http" not in line:
        stop(proc)
        raise SystemExit(f"serve did not start: {line!r} {log.read_text()}")
    port = int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
    return proc, port, line.split("api ")[1].split(",")[0]


def wire_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


class Resolver:
    """Many A queries over one UDP socket, with DO=1 unless `plain`."""

    OPT_DO = b"\0" + struct.pack("!HHIH", 41, 4096, 0x8000, 0)

    def __init__(self, port: int, plain: bool, pace: float = PACE) -> None:
        self.port, self.plain, self.pace = port, plain, pace
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.2)
        self.qid = 0

    def close(self) -> None:
        self.sock.close()

    def sweep(self, names: list[str]) -> dict[str, tuple[bytes, float]]:
        """One query per name: its reply and when it arrived (lost ones are left out)."""
        replies: dict[str, tuple[bytes, float]] = {}
        for start in range(0, len(names), 200):
            pending: dict[int, tuple[str, bytes]] = {}
            for name in names[start : start + 200]:
                self.qid = (self.qid + 1) & 0xFFFF
                qname = wire_name(name)
                head = struct.pack("!6H", self.qid, 0, 1, 0, 0, 0 if self.plain else 1)
                tail = b"" if self.plain else self.OPT_DO
                self.sock.sendto(head + qname + b"\0\1\0\1" + tail, ("127.0.0.1", self.port))
                pending[self.qid] = (name, qname)
            deadline = time.monotonic() + 0.5
            while pending and time.monotonic() < deadline:
                try:
                    data = self.sock.recv(4096)
                except TimeoutError:
                    break
                got = pending.get(struct.unpack("!H", data[:2])[0])
                if got is not None and data[12 : 12 + len(got[1])] == got[1]:
                    del pending[struct.unpack("!H", data[:2])[0]]
                    replies[got[0]] = (data, time.time())
        return replies


def right(reply: bytes, new: bytes, old: bytes | None, signed: bool) -> bool:
    """The cheap test while timing: NOERROR, the new address, not the old, and (signed) an
    answer of two records (the A and its RRSIG); `validate` checks the kept replies fully."""
    answers = struct.unpack("!H", reply[6:8])[0]
    return (
        reply[3] & 0xF == 0
        and new in reply
        and (old is None or old not in reply)
        and answers == (2 if signed else 1)
    )


def until(
    resolver: Resolver, want: Mapping[str, tuple[bytes, bytes | None]], signed: bool, limit: float
) -> dict[str, tuple[bytes, float]]:
    """Sweeps the names of `want` (name -> (new, old) packed address) still wrong until every
    one is right; returns each name's first right reply and its arrival time."""
    start = time.monotonic()
    left = list(want)
    first: dict[str, tuple[bytes, float]] = {}
    while left:
        swept = time.monotonic()
        for name, (reply, at) in resolver.sweep(left).items():
            if right(reply, *want[name], signed):
                first[name] = (reply, at)
        left = [n for n in left if n not in first]
        if left and time.monotonic() - start > limit:
            raise SystemExit(f"{len(left)} of {len(want)} names still wrong after {limit:.0f}s")
        if left:
            time.sleep(max(0.0, resolver.pace - (time.monotonic() - swept)))
    return first


def dnskey_of(port: int) -> dns.rrset.RRset:
    q = dns.message.make_query(ORIGIN, "DNSKEY", want_dnssec=True)
    reply, _tcp = dns.query.udp_with_fallback(q, "127.0.0.1", timeout=2.0, port=port)
    origin = dns.name.from_text(ORIGIN)
    key = reply.get_rrset(reply.answer, origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    sig = reply.get_rrset(
        reply.answer, origin, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY
    )
    if key is None or sig is None:
        raise SystemExit(f"no signed DNSKEY at {ORIGIN}: is the zone signed?")
    dns.dnssec.validate(key, sig, {origin: key})
    return key


def validate(
    kept: dict[str, tuple[bytes, float]], want: dict[str, str], key: dns.rrset.RRset
) -> int:
    """Every kept reply, parsed: its A RRset is exactly the wanted address and its RRSIG
    validates against `key`; returns the number of failures (the first few printed)."""
    failures = 0
    origin = dns.name.from_text(ORIGIN)
    for name, (wire, at) in kept.items():
        try:
            msg = dns.message.from_wire(wire)
            qname = dns.name.from_text(name)
            a = msg.find_rrset(msg.answer, qname, dns.rdataclass.IN, dns.rdatatype.A)
            sig = msg.find_rrset(
                msg.answer, qname, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.A
            )
            if {r.to_text() for r in a} != {want[name]}:
                raise ValueError(f"answers {sorted(r.to_text() for r in a)}")
            dns.dnssec.validate(a, sig, {origin: key}, now=at)
        except (KeyError, ValueError, dns.exception.DNSException) as e:
            failures += 1
            if failures <= 5:
                print(f"  INVALID {name}: {type(e).__name__}: {e}")
    return failures


def events_since(api: str, since: float) -> list[dict[str, Any]]:
    """The node's history from `since` on (newest first), paged through the API."""
    found: list[dict[str, Any]] = []
    before = None
    while True:
        url = f"{api}/api/v1/events?limit=1000" + (f"&before={before}" if before else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            page = json.load(r)
        rows = page["events"]
        found += [e for e in rows if e["at"] >= since]
        before = page["next_before"]
        if before is None or not rows or rows[-1]["at"] < since:
            return found


def history(api: str, since: float, names: int) -> tuple[float, dict[str, float]]:
    """The first health change after `since` and each name's last transition after it
    (name -> its `at`); waits for the names' transitions, which the node records behind its
    answers."""
    deadline = time.monotonic() + 60
    while True:
        rows = events_since(api, since)
        moves: dict[str, float] = {}
        for e in rows:
            if e["kind"] in TRANSITIONS:
                moves[e["subject"]] = max(e["at"], moves.get(e["subject"], 0.0))
        health = [e["at"] for e in rows if e["kind"] == "health"]
        if len(moves) >= names or time.monotonic() > deadline:
            if not moves or not health:
                raise SystemExit(f"no transition in the history after the kill: {len(rows)} rows")
            return min(health), moves
        time.sleep(0.5)


def wait_log(log: Path, text: str, limit: float) -> str:
    """The first line of `log` with `text`, once there (the node's sign-ahead pass, which
    signs what each tier's loss would serve, runs a few seconds after start-up)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = [line for line in log.read_text().splitlines() if text in line]
        if found:
            return found[0].split(text, 1)[1].strip()
        time.sleep(0.5)
    raise SystemExit(f"no {text!r} in serve's log after {limit:.0f}s")


def signing(api: str) -> tuple[float, float]:
    """The node's own count of signatures made and the CPU they took (its metrics), summed
    over the zones; (0, 0) when it has none (unsigned, or a build without them)."""
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as r:
        text = r.read().decode()
    made = cpu = 0.0
    for line in text.splitlines():
        if line.startswith("dnsfailover_dnssec_signatures_total{"):
            made += float(line.rsplit(" ", 1)[1])
        elif line.startswith("dnsfailover_dnssec_signing_cpu_seconds_total{"):
            cpu += float(line.rsplit(" ", 1)[1])
    return made, cpu


@dataclass
class Outage:
    signed: bool
    startup: float  # serve -> every name answers region A
    detected: float  # kill -> first health event
    decided: float  # kill -> first transition
    spread: float  # first -> last transition
    served: float  # last transition -> every name seen right
    late: int  # names still wrong in the sweep of all after every watched name was right
    worst: float  # the most a watched name took from its transition to its first right reply
    p50: float  # the median of that
    cpu_per_name_us: float
    ahead: str  # the sign-ahead pass's log line, before the kill
    before: tuple[float, float]  # signatures made and their CPU seconds, start -> kill
    signatures: int  # made during the outage, by the node's metrics
    cpu_per_signature_us: float  # by the same
    rss_mb: float
    invalid: int


def idle_rate(pid: int, resolver: Resolver, names: list[str], seconds: float = 3.0) -> float:
    """The node's CPU per second while the benchmark watches `names` and nothing changes."""
    cpu0, t0 = cpu_seconds([pid]), time.monotonic()
    while time.monotonic() - t0 < seconds:
        resolver.sweep(names)
        time.sleep(resolver.pace)
    return (cpu_seconds([pid]) - cpu0) / (time.monotonic() - t0)


def outage(args: argparse.Namespace, signed: bool) -> Outage:
    """One `serve` of the config (signed or not) from start-up through region A's outage."""
    n = args.per_region
    names = [f"f{j}.{ORIGIN}" for j in range(args.names)]
    old = {name: address(j % n) for j, name in enumerate(names)}
    new = {name: address(n + j % n) for j, name in enumerate(names)}
    listeners = Listeners(n * 2)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        config = write_config(tmp, args, signed)
        started = time.monotonic()
        proc, port, api = serve(config, tmp / "s.db", tmp / "serve.log")
        resolver = Resolver(port, not signed, args.pace)
        try:
            up = {name: (socket.inet_aton(old[name]), None) for name in names}
            until(resolver, up, signed, limit=900)
            startup = time.monotonic() - started
            key = dnskey_of(port) if signed else None
            ahead = wait_log(tmp / "serve.log", "dnssec: signed ahead", 300) if signed else ""
            want = {
                name: (socket.inet_aton(new[name]), socket.inet_aton(old[name])) for name in names
            }
            sentinels = names[:n]  # name j uses endpoint j % n: one name per endpoint
            time.sleep(2 * args.interval)
            rate = idle_rate(proc.pid, resolver, sentinels)
            print(f"  node CPU while watched, idle: {rate * 100:.0f}% of a core", flush=True)
            made0, signing0 = signing(api)
            cpu0, killed = cpu_seconds([proc.pid]), time.time()
            listeners.command("kill", list(range(n)))
            watched = until(resolver, {s: want[s] for s in sentinels}, signed, limit=60)
            # every name, once: those of an endpoint changed with its watched name
            swept = resolver.sweep(names)
            kept = {n: r for n, r in swept.items() if right(r[0], *want[n], signed)}
            late = len(swept) - len(kept)  # answered, and wrong (lost replies are asked again)
            kept.update(until(resolver, {n: want[n] for n in names if n not in kept}, signed, 60))
            done = time.time()
            cpu = cpu_seconds([proc.pid]) - cpu0 - rate * (done - killed)
            made1, signing1 = signing(api)
            rss = rss_mb(proc.pid)
            detected, moves = history(api, killed, args.names)
        finally:
            resolver.close()
            stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
            listeners.close()
    missing = [name for name in names if name not in moves]
    if missing:
        raise SystemExit(f"{len(missing)} names have no transition in the history: {missing[:3]}")
    took = sorted(at - moves[name] for name, (_r, at) in watched.items())
    invalid = validate(kept, new, key) + validate(watched, new, key) if key is not None else 0
    first, last = min(moves.values()), max(moves.values())
    return Outage(
        signed,
        startup,
        detected - killed,
        first - killed,
        last - first,
        max(at for _r, at in kept.values()) - last,
        late,
        took[-1],
        statistics.median(took),
        max(0.0, cpu) / args.names * 1e6,
        ahead,
        (made0, signing0),
        round(made1 - made0),
        (signing1 - signing0) / (made1 - made0) * 1e6 if made1 > made0 else 0.0,
        rss,
        invalid,
    )


def describe(o: Outage, names: int) -> str:
    return (
        f"{'signed' if o.signed else 'unsigned':<8} start-up {o.startup:5.1f} s, RSS "
        f"{o.rss_mb:4.0f} MB; kill -> detected {o.detected:.2f} s, decided {o.decided:.2f} s "
        f"(decisions over {o.spread:.2f} s); decision -> served (a name per endpoint): median "
        f"{o.p50 * 1000:.0f} ms, max {o.worst * 1000:.0f} ms; last decision -> all {names:,} "
        f"seen right {o.served:.2f} s ({o.late} wrong after their endpoint's); node CPU "
        f"{o.cpu_per_name_us:.0f} us/name"
        + (
            f"; before the kill, {o.before[0]:,.0f} signatures made "
            f"({o.before[1] / max(1.0, o.before[0]) * 1e6:.0f} us CPU each), signed ahead "
            f"{o.ahead}; during the outage "
            f"{o.signatures:,} signatures made ({o.cpu_per_signature_us:.0f} us CPU each, "
            f"node's metrics); {names - o.invalid:,} of {names:,} replies validated"
            if o.signed
            else ""
        )
    )


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", type=int, default=10_000)
    ap.add_argument("--per-region", type=int, default=500, help="endpoints in each region")
    ap.add_argument("--static", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=1.0, help="check interval, seconds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pace", type=float, default=PACE, help="seconds between sweeps")
    ap.add_argument("--modes", default="signed,unsigned", help="signed, unsigned or both")
    args = ap.parse_args()
    if not set(args.modes.split(",")) <= {"signed", "unsigned"}:
        raise SystemExit("--modes: signed, unsigned or signed,unsigned")
    if not 0 < args.per_region <= 31_250:
        raise SystemExit("--per-region: 1 to 31,250")
    print(f"machine: {machine()}")
    print(
        f"zone {ORIGIN}: {args.static:,} static records, {args.names:,} active-passive names "
        f"over {args.per_region} endpoints in each of 2 regions; tcp check every "
        f"{args.interval}s, fall 2; {args.rounds} rounds, signed and unsigned interleaved"
    )
    results: list[Outage] = []
    for r in range(args.rounds):
        modes = [m == "signed" for m in args.modes.split(",")]
        for signed in modes[r % len(modes) :] + modes[: r % len(modes)]:
            o = outage(args, signed)
            results.append(o)
            print(f"round {r + 1} {describe(o, args.names)}", flush=True)
    signed_runs = [o for o in results if o.signed]
    plain = [o for o in results if not o.signed]
    if not signed_runs:
        return
    worst = statistics.median(o.worst for o in signed_runs)
    served = statistics.median(o.served for o in signed_runs)
    cpu = statistics.median(o.cpu_per_name_us for o in signed_runs)
    per_signature = statistics.median(o.before[1] / max(1.0, o.before[0]) for o in signed_runs)
    print(
        f"signed, median of rounds: the slowest decision -> its names served {worst:.2f} s "
        f"(target <= 1.5 s); the last decision -> all names seen right {served:.2f} s; node "
        f"CPU {cpu:.0f} us per re-signed name; CPU per signature from start to the kill "
        f"(node's metrics) {per_signature * 1e6:.0f} us"
    )
    if plain:
        pairs = list(zip(signed_runs, plain, strict=False))
        extra = statistics.median(s.cpu_per_name_us - u.cpu_per_name_us for s, u in pairs)
        ratio = statistics.median(s.rss_mb / u.rss_mb for s, u in pairs)
        print(
            f"signed - unsigned node CPU per name, median of per-round differences: "
            f"{extra:.0f} us (the signature's cost); RSS signed/unsigned x{ratio:.2f}"
        )
    if any(o.invalid for o in results):
        raise SystemExit("some replies did not validate: the times above are not valid")


if __name__ == "__main__":
    main()
