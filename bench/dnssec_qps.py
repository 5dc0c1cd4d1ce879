"""DNSSEC answers per second: `dnsfailover serve` unsigned and signed, against Knot DNS.

    .venv/bin/python bench/dnssec_qps.py [--rounds 5] [--seconds 10] [--records 1000]
        [--servers knot,unsigned,signed]

One zone, `example.test.`: a health-checked active-active `fo` over two real TCP listeners
(127.0.0.21/22, `bench/dns_qps.py`'s), a static `www`, and `--records` static records (A
and TXT in turn), served by three servers started once and kept up for the whole run:

- `unsigned`: `dnsfailover serve`, the zone without `dnssec:`, queried without EDNS;
- `signed`: `dnsfailover serve`, the same zone with `dnssec: {}` (ECDSA P-256 CSK, NSEC),
  queried with DO=1 (`dnsperf -D`);
- `knot`: Knot DNS (`knotd`, Debian `knot`) with automatic signing (`dnssec-signing: on`,
  ECDSA P-256, a CSK, NSEC: the same choices), one UDP worker, the same records (`fo` as a
  static A RRset: Knot has no health checks), queried with DO=1.

Each server is pinned to core 0 and dnsperf to core 1 (`taskset`), dnsperf runs closed-loop
(`-c 4 -q 100 -l SECONDS`).  A round measures every server in turn (the order rotates from
round to round), each on two query files: `fo A` alone, and an NXDOMAIN-heavy mix (8 in 10
queries for random names that do not exist, whose signed answers carry the NSEC proofs; 1
`fo A`, 1 static record).  Reported per round and as medians: QPS, server CPU per query
(utime+stime of the server's processes from /proc, over the queries completed), and the
median of the per-round ratios signed/unsigned (target for `fo`: >= 0.7) and signed/Knot.

Before every round each server's answers are checked with dnspython: the signed servers'
`fo A`, a static record and an NXDOMAIN answer must carry RRSIGs (and NSECs) that validate
against the server's DNSKEY (algorithm 13), the unsigned server's must carry none, and every
server must give the same addresses; a misconfigured run stops instead of printing figures.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import qps_servers
from dns_qps import (
    BIN,
    EP1,
    EP2,
    Listeners,
    cpu_seconds,
    dnsperf,
    machine,
    process_tree,
    stop,
)

ORIGIN = "example.test."
WWW = "192.0.2.80"
SERVERS = ("knot", "unsigned", "signed")


def static_value(i: int) -> tuple[str, str]:
    """The type and value of static record `h{i}`."""
    if i % 2:
        return "TXT", f'"static record {i}"'
    return "A", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def zone_text(records: int) -> str:
    """The zone's static part as a master file: what both servers load (ours skips the SOA
    and takes the rest; Knot gets `fo` added)."""
    lines = [
        f"$ORIGIN {ORIGIN}",
        "$TTL 300",
        "@ SOA ns1 hostmaster 1 7200 900 1209600 300",
        "@ NS ns1",
        "ns1 A 127.0.0.1",
        f"www A {WWW}",
    ]
    lines += [f"h{i} {' '.join(static_value(i))}" for i in range(records)]
    return "\n".join(lines) + "\n"


def query_sets(records: int, names: int, seed: int = 17) -> dict[str, list[str]]:
    """dnsperf's query files: `fo A` alone, and the NXDOMAIN-heavy mix of `names` lines."""
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase + string.digits
    mix = []
    for i in range(names):
        if i % 10 == 8:
            mix.append(f"fo.{ORIGIN} A")
        elif i % 10 == 9:
            n = rng.randrange(records)
            mix.append(f"h{n}.{ORIGIN} {static_value(n)[0]}")
        else:
            mix.append(f"x{''.join(rng.choices(alphabet, k=10))}.{ORIGIN} A")
    return {"fo": [f"fo.{ORIGIN} A"], "nx-mix": mix}


@dataclass
class Server:
    """One server under test, up for the whole run."""

    name: str  # knot | unsigned | signed
    label: str
    proc: subprocess.Popen[str]
    port: int
    pids: list[int] = field(default_factory=list)

    @property
    def signed(self) -> bool:
        return self.name != "unsigned"


def start_ours(name: str, tmp: Path, lport: int, signed: bool) -> Server:
    d = tmp / name
    d.mkdir()
    (d / "static.zone").write_text((tmp / "static.zone").read_text())
    (d / "bench.yaml").write_text(f"""\
checks:
  tcp: {{type: tcp, port: {lport}, interval: 1s, timeout: 500ms, rise: 2, fall: 2}}
zones:
  {ORIGIN}:
    soa: {{mname: ns1.{ORIGIN}, rname: hostmaster.{ORIGIN}}}
    nameservers: [ns1.{ORIGIN}]
    zone_file: static.zone
{"    dnssec: {}" if signed else ""}
    failover:
      fo: {{policy: active-active, check: tcp, endpoints: [{EP1}, {EP2}]}}
""")
    cmd = ["taskset", "-c", "0", str(BIN), "serve", str(d / "bench.yaml")]
    cmd += ["--dns", "127.0.0.1:0", "--api", "off", "--state", str(d / "s.db")]
    cmd += ["--log-level", "WARNING"]
    log = (d / "serve.log").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " on " not in line:
        stop(proc)
        raise SystemExit(
            f"{name}: dnsfailover serve did not start: {(d / 'serve.log').read_text()}"
        )
    port = int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
    label = "dnsfailover signed (dnssec: {})" if signed else "dnsfailover unsigned"
    return Server(name, label, proc, port)


def start_knot(tmp: Path) -> Server:
    fo = f"fo 30 A {EP1}\nfo 30 A {EP2}\n"
    zone = (tmp / "static.zone").read_text() + fo
    proc, port, label = qps_servers.start_knot(tmp / "knot", zone, signing=True)
    return Server("knot", f"{label} (dnssec-signing: on)", proc, port)


def ask(server: Server, qname: str, rdtype: str, dnssec: bool) -> dns.message.Message:
    q = dns.message.make_query(qname, rdtype, want_dnssec=dnssec)
    reply, _tcp = dns.query.udp_with_fallback(q, "127.0.0.1", timeout=2.0, port=server.port)
    return reply


def wait_ready(server: Server, timeout: float = 120) -> None:
    """Until `fo` answers both endpoints (ours: once the probes rose; Knot: once loaded, which
    it does once signed); `check` then says whether the answers are what they should be."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.label} exited with {server.proc.returncode}")
        try:
            reply = ask(server, f"fo.{ORIGIN}", "A", server.signed)
            if addresses(reply) == {EP1, EP2}:
                server.pids = process_tree(server.proc.pid)
                return
        except (OSError, dns.exception.DNSException):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{server.label} did not answer fo.{ORIGIN} A within {timeout:.0f}s")


def addresses(reply: dns.message.Message) -> set[str]:
    return {r.to_text() for s in reply.answer if s.rdtype == dns.rdatatype.A for r in s}


def rrsigs(section: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
    return [s for s in section if s.rdtype == dns.rdatatype.RRSIG]


def validate_section(
    section: list[dns.rrset.RRset], dnskey: dns.rrset.RRset, what: str
) -> list[dns.rrset.RRset]:
    """Every RRset of `section` validates with its RRSIG against `dnskey` (or SystemExit);
    returns the RRsets."""
    sigs = {(s.name, s.covers): s for s in rrsigs(section)}
    data = [s for s in section if s.rdtype != dns.rdatatype.RRSIG]
    for rrset in data:
        sig = sigs.get((rrset.name, rrset.rdtype))
        if sig is None:
            raise SystemExit(f"{what}: {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} unsigned")
        try:
            dns.dnssec.validate(rrset, sig, {dnskey.name: dnskey})
        except dns.exception.ValidationFailure as e:
            raise SystemExit(f"{what}: {rrset.name} does not validate: {e}") from e
    return data


def check(server: Server, records: int) -> None:
    """The answers the figures are for (see the module's doc); SystemExit when not."""
    what = server.label
    signed = server.signed
    fo = ask(server, f"fo.{ORIGIN}", "A", signed)
    n = records // 2 * 2 - 2 if records > 1 else 0
    static = ask(server, f"h{n}.{ORIGIN}", "A", signed) if records else None
    nx = ask(server, f"nothere-{random.randrange(10**9)}.{ORIGIN}", "A", signed)
    if addresses(fo) != {EP1, EP2}:
        raise SystemExit(f"{what}: fo answers {sorted(addresses(fo))}, not {EP1}, {EP2}")
    if static is not None and addresses(static) != {static_value(n)[1]}:
        raise SystemExit(f"{what}: h{n} answers {sorted(addresses(static))}")
    if nx.rcode() != dns.rcode.NXDOMAIN:
        raise SystemExit(f"{what}: a random name got {dns.rcode.to_text(nx.rcode())}")
    replies = [fo, nx] + ([static] if static else [])
    if not signed:
        if any(rrsigs(r.answer) or rrsigs(r.authority) for r in replies):
            raise SystemExit(f"{what}: RRSIGs in answers to queries without DO")
        return
    keys = ask(server, ORIGIN, "DNSKEY", True)
    dnskey = keys.get_rrset(
        keys.answer, dns.name.from_text(ORIGIN), dns.rdataclass.IN, dns.rdatatype.DNSKEY
    )
    if dnskey is None:
        raise SystemExit(f"{what}: no DNSKEY at {ORIGIN} (is the zone signed?)")
    if {k.algorithm for k in dnskey} != {dns.dnssectypes.Algorithm.ECDSAP256SHA256}:
        raise SystemExit(f"{what}: DNSKEY algorithms {sorted(k.algorithm for k in dnskey)}")
    validate_section(keys.answer, dnskey, f"{what} DNSKEY")
    for reply in [fo] + ([static] if static else []):
        if not rrsigs(reply.answer):
            raise SystemExit(f"{what}: no RRSIG in {reply.question[0]} with DO=1")
        validate_section(reply.answer, dnskey, what)
    proof = validate_section(nx.authority, dnskey, f"{what} NXDOMAIN")
    if not any(s.rdtype == dns.rdatatype.NSEC for s in proof):
        raise SystemExit(f"{what}: NXDOMAIN with DO=1 carries no NSEC")


@dataclass
class Result:
    round: int
    server: str
    queries: str
    qps: float
    lost: int
    latency_ms: float
    cpu_us: float


def run(args: argparse.Namespace) -> tuple[list[Server], list[Result]]:
    sets = query_sets(args.records, args.names)
    listeners = Listeners()
    results: list[Result] = []
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "static.zone").write_text(zone_text(args.records))
        try:
            for name in args.servers:
                if name == "knot":
                    servers.append(start_knot(tmp))
                else:
                    servers.append(start_ours(name, tmp, listeners.port, name == "signed"))
            for server in servers:
                wait_ready(server)
            for r in range(args.rounds):
                for server in servers[r % len(servers) :] + servers[: r % len(servers)]:
                    check(server, args.records)
                    for qset, queries in sets.items():
                        extra = ("-D",) if server.signed else ()
                        before = cpu_seconds(server.pids)
                        qps, done, lost, ms = dnsperf(
                            server.port, queries, args.seconds, tmp, extra
                        )
                        cpu = (cpu_seconds(server.pids) - before) / done * 1e6
                        results.append(Result(r + 1, server.name, qset, qps, lost, ms, cpu))
                        print(
                            f"  round {r + 1} {server.name:<9} {qset:<7} {qps:>9,.0f} QPS "
                            f"{cpu:6.2f} us/q",
                            flush=True,
                        )
            for server in servers:
                check(server, args.records)
        finally:
            for server in servers:
                stop(server.proc)
                if server.proc.stdout is not None:
                    server.proc.stdout.close()
            listeners.close()
    return servers, results


def ratio(
    results: list[Result], qset: str, num: str, den: str, key: Callable[[Result], float]
) -> float | None:
    """The median over rounds of key(num) / key(den) for query set `qset`."""
    by = {(r.round, r.server): r for r in results if r.queries == qset}
    ratios = [
        key(by[rnd, num]) / key(by[rnd, den])
        for rnd in sorted({r.round for r in results})
        if (rnd, num) in by and (rnd, den) in by
    ]
    return statistics.median(ratios) if ratios else None


def report(args: argparse.Namespace, servers: list[Server], results: list[Result]) -> None:
    print(f"machine: {machine()}")
    print(
        f"zone {ORIGIN}: fo (health-checked, 2 addresses), www, {args.records:,} static "
        f"records; {args.rounds} interleaved rounds of {args.seconds}s per query set; dnsperf "
        f"-c 4 -q 100 on core 1, servers on core 0; DO=1 (-D) for knot and signed, no EDNS "
        "for unsigned"
    )
    for s in servers:
        print(f"  {s.name:<9} {s.label}")
    print(
        f"{'round':<6}{'server':<10}{'queries':<8}{'QPS':>10}{'lost':>7}{'avg ms':>8}"
        f"{'CPU us/q':>10}"
    )
    for r in results:
        print(
            f"{r.round:<6}{r.server:<10}{r.queries:<8}{r.qps:>10,.0f}{r.lost:>7}"
            f"{r.latency_ms:>8.3f}{r.cpu_us:>10.2f}"
        )
    print("medians")
    for qset in ("fo", "nx-mix"):
        for s in servers:
            rs = [r for r in results if r.server == s.name and r.queries == qset]
            if rs:
                print(
                    f"  {qset:<7} {s.name:<9} {statistics.median(r.qps for r in rs):>10,.0f} QPS"
                    f" {statistics.median(r.cpu_us for r in rs):7.2f} us/q"
                )
    print("median of per-round ratios (QPS; CPU per query)")
    for qset in ("fo", "nx-mix"):
        for num, den, target in (
            ("signed", "unsigned", " (target >= 0.7)"),
            ("signed", "knot", ""),
        ):
            q = ratio(results, qset, num, den, lambda r: r.qps)
            c = ratio(results, qset, num, den, lambda r: r.cpu_us)
            if q is not None and c is not None:
                print(
                    f"  {qset:<7} {num}/{den}: QPS x{q:.2f}{target if qset == 'fo' else ''}; "
                    f"CPU x{c:.2f}"
                )


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--records", type=int, default=1000, help="static records besides fo, www")
    ap.add_argument("--names", type=int, default=100_000, help="lines of the NXDOMAIN mix")
    ap.add_argument("--servers", default=",".join(SERVERS), help="of knot,unsigned,signed")
    args = ap.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    if not args.servers or set(args.servers) - set(SERVERS):
        raise SystemExit(f"--servers: a comma-separated list of {', '.join(SERVERS)}")
    needed = ["dnsperf", "taskset"] + (["knotd"] if "knot" in args.servers else [])
    missing = [t for t in needed if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: apt-get install -y dnsperf util-linux knot"
        )
    servers, results = run(args)
    report(args, servers, results)


if __name__ == "__main__":
    main()
