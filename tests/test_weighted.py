"""Weighted answers: the engine's weights published, one address per query by smooth WRR.

The server tests run a real DnsServer (with zone transfers) on 127.0.0.1:0 and ask it
with dnspython over UDP and TCP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import pickle
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import dns.message
import dns.query
import dns.rdatatype
import dns.zone
import pytest
from conftest_server import soa
from dnslib import QTYPE, RR, A, DNSLabel
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine import NAME, U, config, key
from test_policy_capacity import ALL, TIERS, every

from dnsfailover.cluster.codec import dumps, loads
from dnsfailover.engine.decide import decide
from dnsfailover.engine.values import EngineState
from dnsfailover.model import RecordSet, State, ZoneContent
from dnsfailover.server.dns import DnsServer
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.fast import FastTable
from dnsfailover.server.weighted import Rotor, smooth_order
from dnsfailover.server.wire import respond
from dnsfailover.server.xfr import Peer, TransferHandler
from dnsfailover.server.zone import ZoneSnapshot

ORIGIN = "example.test."
API, WWW, ALIAS, V6 = (f"{n}.{ORIGIN}" for n in ("api", "www", "alias", "v6"))
SPILL = ("127.0.0.22", "127.0.0.23", "127.0.0.31")  # east's 22 and 23, west's 31
SPILL_WEIGHTS = (255, 255, 191)  # capacities 400, 400, 300 scaled to 255
V6_VALUES, V6_WEIGHTS = ("2001:db8::1", "2001:db8::2"), (1, 3)


def content(serial: int = 1, weights: tuple[int, ...] = SPILL_WEIGHTS) -> ZoneContent:
    sets = [
        RecordSet(ORIGIN, "NS", 300, (f"ns1.{ORIGIN}",)),
        RecordSet(ALIAS, "CNAME", 300, (API,)),
        RecordSet(API, "A", 30, SPILL, weights),
        RecordSet(f"ns1.{ORIGIN}", "A", 300, ("127.0.0.1",)),
        RecordSet(V6, "AAAA", 30, V6_VALUES, V6_WEIGHTS),
        RecordSet(WWW, "A", 30, ("127.0.0.11", "127.0.0.12")),
    ]
    return ZoneContent(ORIGIN, soa(ORIGIN, serial), tuple(sorted(sets, key=lambda r: r.name)))


# --- smooth weighted round-robin -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=12).filter(any))
def test_smooth_wrr_gives_every_address_its_exact_share_over_one_cycle(
    weights: list[int],
) -> None:
    order = smooth_order(weights)
    g = math.gcd(*(w for w in weights if w))
    assert len(order) == sum(weights) // g
    assert [order.count(i) for i in range(len(weights))] == [w // g for w in weights]
    # The rotor repeats that cycle: two cycles give exactly twice the shares.
    rrs = [RR(DNSLabel("a.test."), QTYPE.A, rdata=A(f"10.0.0.{i}")) for i in range(len(weights))]
    rotor = Rotor(rrs, weights)
    picks = Counter(rotor.pick() for _ in range(2 * len(order)))
    assert [picks[i] for i in range(len(weights))] == [2 * w // g for w in weights]


def test_smooth_wrr_interleaves_rather_than_bursts() -> None:
    assert smooth_order([5, 1, 1]) == (0, 0, 1, 0, 2, 0, 0)  # nginx's documented sequence
    assert smooth_order([0, 2, 0]) == (1,)
    with pytest.raises(ValueError, match="need one positive"):
        smooth_order([0, 0])


# --- the record set and the engine -------------------------------------------------------


def test_weights_are_part_of_the_answer() -> None:
    a, b = content(), content(weights=(255, 255, 190))
    assert a != b
    assert not a.same_answers(b)
    assert a.same_answers(replace(content(serial=9)))
    assert len({a.records, b.records, content().records}) == 2  # hashable, compared by value
    with pytest.raises(ValueError, match="2 weights for 3 values"):
        RecordSet(API, "A", 30, SPILL, (1, 2))


def test_weights_survive_pickling_for_workers_and_the_cluster_codec() -> None:
    zones = [content()]
    assert pickle.loads(pickle.dumps(zones)) == zones
    assert loads(ZoneContent, dumps(zones[0])) == zones[0]
    old = loads(
        ZoneContent, dumps(ZoneContent(zones[0].origin, zones[0].soa, ()))
    )  # no weights key at all
    assert old.records == ()


def weights_of(d_zone: ZoneContent, name: str = NAME) -> tuple[tuple[str, ...], tuple[int, ...]]:
    rs = next(r for r in d_zone.records if r.name == name and r.rtype == "A")
    return rs.values, rs.weights


def test_build_zone_publishes_unequal_weights_only() -> None:
    spilled = decide(config(TIERS), every(a21=State.DOWN), EngineState(), 0)
    assert weights_of(spilled.zones[0]) == (SPILL, SPILL_WEIGHTS)
    # Equal capacities give equal weights: published exactly as before, unweighted.
    healthy = decide(config(TIERS), every(), EngineState(), 0)
    assert weights_of(healthy.zones[0]) == (("127.0.0.21", "127.0.0.22", "127.0.0.23"), ())
    plain = {"policy": "active-active", "endpoints": ["127.0.0.11", "127.0.0.12"]}
    ups = {key(a): U for a in ("127.0.0.11", "127.0.0.12")}
    assert weights_of(decide(config(plain), ups, EngineState(), 0).zones[0])[1] == ()


def test_a_shadow_name_publishes_no_weights() -> None:
    shadow = decide(config(TIERS, {"mode": "shadow"}), every(), EngineState(), 0)
    state = shadow.state
    d = decide(config(TIERS, {"mode": "shadow"}), every(a21=State.DOWN), state, 1)
    assert d.names[NAME].weights  # what it would publish is weighted...
    assert weights_of(d.zones[0]) == (("127.0.0.21", "127.0.0.22", "127.0.0.23"), ())
    assert set(ALL) >= set(d.names[NAME].would_answer)


# --- the real server -----------------------------------------------------------------------


@dataclass
class Served:
    zones: EmbeddedZones
    server: DnsServer
    port: int

    def query(self, name: str, rtype: str = "A", *, tcp: bool = False, edns: int = -1) -> list[str]:
        q = dns.message.make_query(name, rtype, use_edns=edns)
        ask = dns.query.tcp if tcp else dns.query.udp
        r = ask(q, "127.0.0.1", port=self.port, timeout=5)
        want = dns.rdatatype.from_text("A" if rtype == "ANY" else rtype)
        return [rd.to_text() for rrset in r.answer if rrset.rdtype == want for rd in rrset]

    async def ask(self, name: str, rtype: str = "A", **kw: bool | int) -> list[str]:
        return await asyncio.to_thread(lambda: self.query(name, rtype, **kw))  # type: ignore[arg-type]


@pytest.fixture(params=[False, True], ids=["loop", "udp-thread"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    zones = EmbeddedZones()
    zones.put([content()])
    acl = {ORIGIN: (Peer(ipaddress.ip_network("127.0.0.1/32")),)}
    server = DnsServer(
        zones.snapshot,
        "127.0.0.1",
        0,
        tcp_handler=TransferHandler(zones, acl, {}),
        udp_thread=request.param,
    )
    _, port = await server.start()
    zones.attach(server)
    yield Served(zones, server, port)
    await server.stop()


async def test_a_weighted_name_answers_one_address_per_query_in_proportion(
    served: Served,
) -> None:
    cycle = sum(SPILL_WEIGHTS)  # gcd 1: 701 answers per cycle
    seen: Counter[str] = Counter()
    for i in range(1000):
        # Plain, EDNS and TCP queries: full path and fast path share one rotation.
        kind = i % 10
        answer = await served.ask(API, tcp=kind == 9, edns=0 if kind in (3, 4) else -1)
        assert len(answer) == 1, answer
        seen[answer[0]] += 1
        if i + 1 == cycle:
            assert [seen[a] for a in SPILL] == list(SPILL_WEIGHTS), "one cycle: exact shares"
    for address, weight in zip(SPILL, SPILL_WEIGHTS, strict=True):
        assert abs(seen[address] - 1000 * weight / cycle) <= 3, seen
    # AAAA rotates on its own: weights 1:3.
    v6 = Counter([(await served.ask(V6, "AAAA"))[0] for _ in range(40)])
    assert [v6[a] for a in V6_VALUES] == [10, 30]


async def test_unweighted_names_any_and_cname_chains(served: Served) -> None:
    for _ in range(5):  # unweighted: every address, every time (fast path included)
        assert sorted(await served.ask(WWW)) == ["127.0.0.11", "127.0.0.12"]
    assert sorted(await served.ask(API, "ANY")) == sorted(SPILL)  # ANY is not weighted
    picks: Counter[str] = Counter()
    for _ in range(sum(SPILL_WEIGHTS)):
        answer = await served.ask(ALIAS)
        assert len(answer) == 1
        picks[answer[0]] += 1
    assert [picks[a] for a in SPILL] == list(SPILL_WEIGHTS)  # a CNAME leads to the rotation


async def test_zone_transfers_carry_every_address(served: Served) -> None:
    def axfr() -> dns.zone.Zone:
        messages = dns.query.xfr(
            "127.0.0.1", ORIGIN, port=served.port, lifetime=10, relativize=False
        )
        return dns.zone.from_xfr(messages, relativize=False)

    z = await asyncio.to_thread(axfr)
    api = z.get_rdataset(API, "A")
    assert api is not None
    assert sorted(rd.to_text() for rd in api) == sorted(SPILL)
    v6 = z.get_rdataset(V6, "AAAA")
    assert v6 is not None
    assert sorted(rd.to_text() for rd in v6) == sorted(V6_VALUES)


async def test_a_weight_change_is_published_and_ixfr_stays_consistent(served: Served) -> None:
    await served.zones.put_async([content(serial=2, weights=(1, 1, 2))])
    picks = Counter([(await served.ask(API))[0] for _ in range(8)])
    assert [picks[a] for a in SPILL] == [2, 2, 4]

    def ixfr() -> list[dns.message.Message]:
        return list(
            dns.query.xfr(
                "127.0.0.1",
                ORIGIN,
                port=served.port,
                lifetime=10,
                rdtype=dns.rdatatype.IXFR,
                serial=1,
                relativize=False,
            )
        )

    messages = await asyncio.to_thread(ixfr)
    records = [rrset for m in messages for rrset in m.answer]
    assert records[0].rdtype == dns.rdatatype.SOA
    assert records[0][0].serial == 2
    # Only the weights changed: no address is added or removed.
    assert not [r for r in records if r.rdtype == dns.rdatatype.A]
    # Back to unweighted: every address in every answer.
    await served.zones.put_async([content(serial=3, weights=())])
    assert sorted(await served.ask(API)) == sorted(SPILL)


def test_a_snapshot_from_pickled_content_rotates() -> None:
    snapshot = ZoneSnapshot.build(pickle.loads(pickle.dumps([content()])))
    labels = tuple(label.encode() for label in API.split(".")[:-1])
    found = Counter(
        str(snapshot.lookup(labels, int(QTYPE.A)).answer[0].rdata)
        for _ in range(sum(SPILL_WEIGHTS))
    )
    assert [found[a] for a in SPILL] == list(SPILL_WEIGHTS)
    plain = ZoneContent(
        ORIGIN, content().soa, tuple(replace(r, weights=()) for r in content().records)
    )
    assert snapshot.weighted
    assert not ZoneSnapshot.build([plain]).weighted


def test_the_fast_path_serves_weighted_names_from_per_address_templates() -> None:
    snapshot = ZoneSnapshot.build([content()])
    table = FastTable(snapshot)
    query = dns.message.make_query(API, "A").to_wire()
    assert table.lookup(query, tcp=False) is None  # nothing learned yet
    replies = [table.answer(query, tcp=False) for _ in range(2)]  # the second miss learns
    while len(replies) < sum(SPILL_WEIGHTS):
        fast = table.lookup(query, tcp=False)
        assert fast is not None, "a weighted name is served by the fast path"
        replies.append(fast)
        replies.append(respond(snapshot, query, tcp=False))  # the full path, same rotation
    got = Counter(
        dns.message.from_wire(r).answer[0][0].to_text()
        for r in replies[: sum(SPILL_WEIGHTS)]
        if r is not None
    )
    assert [got[a] for a in SPILL] == list(SPILL_WEIGHTS)
