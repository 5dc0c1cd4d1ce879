"""The DNSSEC benchmarks measure signed answers or stop: `bench/dnssec_qps.py`,
`bench/dnssec_failover.py` and `bench/zone_memory.py --dnssec`, small, against the real
servers they measure (`dnsfailover serve` signed and unsigned, Knot's `knotd`), and the checks
that keep a misconfigured run from printing figures for unsigned or broken answers."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import dnssec_failover  # noqa: E402
import dnssec_qps  # noqa: E402
from dns_qps import Listeners, stop  # noqa: E402
from dnssec_qps import Server  # noqa: E402

RECORDS = 20


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    """Knot, and `serve` unsigned and signed, on one small zone (bench/dnssec_qps.py's)."""
    listeners = Listeners()
    started: list[Server] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "static.zone").write_text(dnssec_qps.zone_text(RECORDS))
        try:
            started.append(dnssec_qps.start_knot(tmp))
            for name in ("unsigned", "signed"):
                started.append(dnssec_qps.start_ours(name, tmp, listeners.port, name == "signed"))
            for server in started:
                dnssec_qps.wait_ready(server)
            yield {s.name: s for s in started}
        finally:
            for server in started:
                stop(server.proc)
                if server.proc.stdout is not None:
                    server.proc.stdout.close()
            listeners.close()


def test_qps_checks_pass_for_the_three_servers(servers: dict[str, Server]) -> None:
    for server in servers.values():
        dnssec_qps.check(server, RECORDS)  # SystemExit on any difference


def test_qps_refuses_an_unsigned_server_taken_for_a_signed_one(
    servers: dict[str, Server],
) -> None:
    posing = dataclasses.replace(servers["unsigned"], name="signed")
    with pytest.raises(SystemExit, match="no DNSKEY"):
        dnssec_qps.check(posing, RECORDS)


def test_failover_validation_catches_a_broken_signature_and_a_wrong_address(
    servers: dict[str, Server],
) -> None:
    port = servers["signed"].port
    key = dnssec_failover.dnskey_of(port)
    names = [f"h{i}.{dnssec_qps.ORIGIN}" for i in range(0, RECORDS, 2)]  # the A records
    want = {n: dnssec_qps.static_value(int(n[1:].split(".")[0]))[1] for n in names}
    resolver = dnssec_failover.Resolver(port, plain=False)
    kept = resolver.sweep(names)
    resolver.close()
    assert set(kept) == set(names)
    for name, (wire, _at) in kept.items():
        assert dnssec_failover.right(wire, socket.inet_aton(want[name]), None, signed=True)
    assert dnssec_failover.validate(kept, want, key) == 0

    wire, at = kept[names[0]]
    # the reply ends with the RRSIG's signature, then the OPT record (11 bytes)
    broken = wire[:-12] + bytes([wire[-12] ^ 1]) + wire[-11:]
    assert dnssec_failover.validate({names[0]: (broken, at)}, want, key) == 1
    assert dnssec_failover.validate({names[0]: (wire, at)}, {names[0]: "192.0.2.1"}, key) == 1

    resolver = dnssec_failover.Resolver(servers["unsigned"].port, plain=True)
    plain = resolver.sweep(names[:1])
    resolver.close()
    unsigned_wire = plain[names[0]][0]
    new = socket.inet_aton(want[names[0]])
    assert dnssec_failover.right(unsigned_wire, new, None, signed=False)
    assert not dnssec_failover.right(unsigned_wire, new, None, signed=True)


def bench(script: str, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_dnssec_qps_runs_a_round_of_every_server() -> None:
    out = bench(
        "dnssec_qps.py", "--rounds", "1", "--seconds", "1", "--records", "20", "--names", "200"
    )
    for line in (
        "fo      signed/unsigned: QPS x",
        "fo      signed/knot: QPS x",
        "nx-mix  signed/unsigned: QPS x",
        "nx-mix  signed/knot: QPS x",
    ):
        assert line in out, out


def test_zone_memory_compares_serve_signed_and_unsigned() -> None:
    out = bench("zone_memory.py", "--dnssec", "--records", "300", "--rounds", "1")
    assert "RSS at start: signed/unsigned x" in out, out
    assert "RSS after asking every name twice: signed/unsigned x" in out, out
