"""`bench/dns_qps.py` measures gdnsd, Knot and `dnsfailover serve` in one run, over UDP and
persistent TCP, and stops instead of printing figures for a server that answers wrong."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import dns_qps  # noqa: E402
import qps_servers  # noqa: E402

SERVERS = ("gdnsd", "knot", "dnsfailover")
ROW = re.compile(
    r"^1\s+(\S+)\s+(udp|tcp)\s+(health|static)\s+([\d,]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)%$",
    re.M,
)


def test_one_round_of_every_server_over_udp_and_tcp() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dns_qps.py"), "--rounds", "1", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    rows = {(m[1], m[2], m[3]): m for m in ROW.finditer(out)}
    assert set(rows) == {
        (s, t, q) for s in SERVERS for t in ("udp", "tcp") for q in ("health", "static")
    }, out
    for row in rows.values():
        qps, lost, latency, cpu = int(row[4].replace(",", "")), int(row[5]), row[6], row[7]
        assert qps > 1000, row[0]  # a server that answers hardly at all is no measurement
        assert lost == 0, row[0]  # closed loop on loopback: nothing may go missing
        assert float(latency) > 0, row[0]
        assert float(cpu) > 0, row[0]
        assert int(row[8]) <= 100, row[0]  # the kernel's share of the server's CPU
    assert "Knot has no health checks" in out
    for transport in ("udp", "tcp"):
        for queries in ("health", "static"):
            for reference in ("gdnsd", "knot"):
                assert f"{transport} {queries} dnsfailover/{reference}: QPS x" in out, out


def test_a_server_that_answers_wrong_gives_no_figures() -> None:
    """Readiness is the right answer over UDP and TCP, not any answer: Knot serving `www`
    with one address only (as a failed-over server would) is refused."""
    zone = qps_servers.ZONE_RECORDS + f"www 30 A {qps_servers.EP1}\n"
    with tempfile.TemporaryDirectory() as d:
        proc, port, label = qps_servers.start_knot(Path(d) / "knot", zone, signing=False)
        server = qps_servers.Running("knot", label, proc, port)
        try:
            with pytest.raises(SystemExit, match="did not answer as it should"):
                dns_qps.wait_ready(server, timeout=3)
            assert dns_qps.answers(port, qps_servers.HEALTH_NAME, tcp=True) == {qps_servers.EP1}
        finally:
            qps_servers.stop(proc)


def test_the_workers_bench_counts_every_answer_once() -> None:
    """`bench/workers_qps.py`: what `serve --workers 2`'s processes say they answered (the
    workers' counts reach the main process's /metrics) adds up to what dnsperf got."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "workers_qps.py"), "--rounds", "1",
         "--seconds", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    m = re.search(r"([\d,]+) queries; the processes counted ([\d,]+) answers", out)
    assert m is not None, out
    done, counted = int(m[1].replace(",", "")), int(m[2].replace(",", ""))
    assert done > 1000, out
    # every query dnsperf completed was counted by the process that answered it; dnsperf
    # stops with up to `-q 100` queries in flight, which are answered but not completed
    assert done <= counted <= done + 100, out
    assert re.search(r"main +pid \d+: +[\d,]+ answered", out), out
    assert re.search(r"worker 1 +pid \d+: +[\d,]+ answered", out), out
