"""Response rate limiting: token buckets with a fake clock, then a real UDP flood."""

from __future__ import annotations

import asyncio
import struct

from conftest_server import example_snapshot, raw_query, raw_udp

from dnsfailover.config.load import loads
from dnsfailover.server import DnsServer
from dnsfailover.server.rrl import Action, RateLimiter, RrlSettings, prefix, truncated
from dnsfailover.server.wire import respond

SNAPSHOT = example_snapshot()
WWW = respond(SNAPSHOT, raw_query(), tcp=False) or b""
MAIL = respond(SNAPSHOT, raw_query(b"\x04mail\x07example\x04test\x00"), tcp=False) or b""
NXDOMAIN = respond(SNAPSHOT, raw_query(b"\x02nx\x07example\x04test\x00"), tcp=False) or b""
NXDOMAIN2 = respond(SNAPSHOT, raw_query(b"\x03nx2\x07example\x04test\x00"), tcp=False) or b""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(rate: float = 5, slip: int = 2, window: float = 15, **kw: int) -> RateLimiter:
    return RateLimiter(RrlSettings(rate, slip, window), clock=CLOCK, **kw)


CLOCK = FakeClock()


def test_a_burst_over_the_rate_is_dropped_with_every_second_one_slipped() -> None:
    rrl = limiter()
    actions = [rrl.check("192.0.2.1", WWW) for _ in range(11)]
    assert actions[:5] == [Action.SEND] * 5
    assert actions[5:] == [Action.DROP, Action.SLIP] * 3


def test_buckets_are_per_prefix_and_per_answer_but_nxdomain_is_lumped() -> None:
    rrl = limiter(rate=1, slip=0)
    assert rrl.check("192.0.2.1", WWW) is Action.SEND
    assert rrl.check("192.0.2.200", WWW) is Action.DROP  # same /24
    assert rrl.check("192.0.3.1", WWW) is Action.SEND  # another /24
    assert rrl.check("192.0.2.1", MAIL) is Action.SEND  # another name
    assert rrl.check("192.0.2.1", NXDOMAIN) is Action.SEND
    assert rrl.check("192.0.2.1", NXDOMAIN2) is Action.DROP  # random names share a bucket
    assert rrl.check("2001:db8:0:1::1", WWW) is Action.SEND
    assert rrl.check("2001:db8:0:1:ffff::2", WWW) is Action.DROP  # same /56
    assert prefix("::ffff:192.0.2.9") == prefix("192.0.2.1")


def test_tokens_come_back_with_time_but_a_long_flood_stays_in_debt() -> None:
    rrl = limiter(rate=2, slip=0, window=2)
    for _ in range(100):
        rrl.check("192.0.2.1", WWW)
    CLOCK.now += 1.0
    assert rrl.check("192.0.2.1", WWW) is Action.DROP  # the debt (2 s x 2/s) is not paid yet
    CLOCK.now += 10.0  # long quiet: back to a full allowance of one second
    assert [rrl.check("192.0.2.1", WWW) for _ in range(3)] == [Action.SEND] * 2 + [Action.DROP]


def test_off_by_default_and_memory_is_bounded() -> None:
    assert not RrlSettings().enabled
    assert RateLimiter(RrlSettings()).check("192.0.2.1", WWW) is Action.SEND
    rrl = limiter(max_entries=10)
    for i in range(50):
        rrl.check(f"10.0.{i}.1", WWW)
    assert len(rrl) == 10


def test_the_slip_reply_is_the_question_with_tc_set() -> None:
    reply = truncated(WWW)
    flags, qd, an, ns, ar = struct.unpack_from("!5H", reply, 2)
    assert reply[:2] == WWW[:2]
    assert flags & 0x0200
    assert (qd, an, ns, ar) == (1, 0, 0, 0)
    assert reply[12:] == raw_query()[12:]


def test_config_has_an_optional_server_rrl_section() -> None:
    zone = (
        "zones:\n  example.test.:\n"
        "    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}\n"
        "    nameservers: [ns1.elsewhere.test.]\n"
    )
    assert loads(zone).server.rrl.responses_per_second == 0
    rrl = loads(
        zone + "server:\n  rrl: {responses_per_second: 5, slip: 3, window: 5s}\n"
    ).server.rrl
    assert (rrl.responses_per_second, rrl.slip, rrl.window) == (5, 3, 5.0)


async def test_a_udp_flood_from_one_address_is_limited_and_slips_tc_replies() -> None:
    settings = RrlSettings(responses_per_second=5, slip=2, window=15)
    async with DnsServer(SNAPSHOT, port=0, rrl=settings) as srv:
        assert srv.address is not None
        packets = [raw_query(qid=i) for i in range(40)]
        replies = await raw_udp(srv.address[1], packets, wait=0.5)
        await asyncio.sleep(0)
    full = [r for r in replies if not r[2] & 0x02]
    slipped = [r for r in replies if r[2] & 0x02]
    assert 5 <= len(full) <= 7  # the allowance (plus what trickled back while sending)
    assert 10 <= len(slipped) <= 20  # every second dropped reply, as TC=1
    assert len(replies) < len(packets)
