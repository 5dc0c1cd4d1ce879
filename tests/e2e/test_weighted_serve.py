"""End to end: capacity spill-over published as weights by the real `dnsfailover serve`.

One east endpoint of `api` is down, so the engine spreads its load of 900 over east's two
survivors (capacity 400 each) and one west endpoint (300): weights 255/255/191.  Each UDP
query then gets one address, in proportion to those weights.
"""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.zone
import pytest
from support import HttpEndpoints, Server, wait_for

pytestmark = pytest.mark.e2e

ORIGIN, API, WWW = "example.test.", "api.example.test.", "www.example.test."
EAST, WEST = ("127.0.0.21", "127.0.0.22", "127.0.0.23"), ("127.0.0.31", "127.0.0.32")
PLAIN = ("127.0.0.11", "127.0.0.12")
SPILL = {"127.0.0.22": 255, "127.0.0.23": 255, "127.0.0.31": 191}
QUERIES = 1000


def write_config(path: Path, ep: HttpEndpoints) -> Path:
    port = {a: ep.start(a) for a in (*EAST, *WEST, *PLAIN)}
    ep.stop(EAST[0])  # down from the start: connection refused

    def eps(addresses: tuple[str, ...], capacity: str = "") -> str:
        return ", ".join(f"{{address: {a}, check_port: {port[a]}{capacity}}}" for a in addresses)

    path.write_text(
        f"""\
checks:
  web: {{type: http, path: /healthz, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    allow_transfer: [{{address: 127.0.0.1}}]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      api:
        policy: active-passive
        check: web
        load: 900
        tiers:
          - {{name: east, endpoints: [{eps(EAST, ", capacity: 400")}]}}
          - {{name: west, capacity: 600, endpoints: [{eps(WEST)}]}}
      www: {{policy: active-active, check: web, endpoints: [{eps(PLAIN)}]}}
"""
    )
    return path


def ask(port: int, name: str) -> list[str]:
    """One A query from a fresh socket (with workers, the kernel may pick another process)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        r = dns.query.udp(
            dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5, sock=sock
        )
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


@pytest.mark.parametrize("workers", [1, 2])
def test_spill_over_weights_split_the_answers(
    tmp_path: Path, http_endpoints: HttpEndpoints, serve: type[Server], workers: int
) -> None:
    extra = ("--workers", str(workers)) if workers > 1 else ()
    server = serve(write_config(tmp_path / "c.yaml", http_endpoints), *extra)
    # Under load the cold start's probe round may end before every probe has answered, and
    # the spill-over comes one decision later; with workers each process gets it over its
    # own pipe: wait until every process answers it (fresh sockets land on either).
    wait_for(lambda: all(len(ask(server.port, API)) == 1 for _ in range(20)), 30)

    seen: Counter[str] = Counter()
    for _ in range(QUERIES):
        answer = ask(server.port, API)
        assert len(answer) == 1, answer
        seen[answer[0]] += 1
    total = sum(SPILL.values())
    assert set(seen) == set(SPILL)
    for address, weight in SPILL.items():
        # Each process rotates on its own and is never more than ~1 off per address.
        assert abs(seen[address] - QUERIES * weight / total) <= 3 * workers, seen

    # An unweighted name still gets every address in every answer.
    for _ in range(20):
        assert ask(server.port, WWW) == list(PLAIN)

    # A secondary gets the full set by AXFR (TCP, main process).
    messages = dns.query.xfr("127.0.0.1", ORIGIN, port=server.port, lifetime=10, relativize=False)
    zone = dns.zone.from_xfr(messages, relativize=False)
    api = zone.get_rdataset(API, "A")
    assert api is not None
    assert sorted(rd.to_text() for rd in api) == sorted(SPILL)

    # East whole again: its three endpoints carry the load, equal weights, no rotation.
    http_endpoints.start(EAST[0])
    # With workers, each process gets the new zone over its own pipe: wait until every
    # process answers it (fresh sockets land on either), then it must stay that way.
    wait_for(lambda: all(ask(server.port, API) == list(EAST) for _ in range(20)), 30)
    for _ in range(20):
        assert ask(server.port, API) == list(EAST)
