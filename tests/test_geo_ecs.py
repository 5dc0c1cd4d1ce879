"""EDNS Client Subnet (RFC 7871): what a query's option means, what gets FORMERR, the source
limits, and the reply's option, checked against dnspython's own ECS encoder and decoder (the
one `dnsfailover` users' tools and resolvers built on dnspython send)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network

import dns.edns
import dns.wire
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsfailover.geo import ecs
from dnsfailover.geo.ecs import ClientSubnet, SourceLimits
from dnsfailover.geo.errors import EcsFormatError


def dnspython_wire(address: str, source: int, scope: int = 0) -> bytes:
    wire = dns.edns.ECSOption(address, source, scope).to_wire()
    assert wire is not None
    return wire


@pytest.mark.parametrize(
    ("address", "source", "network"),
    [
        ("192.0.2.77", 24, "192.0.2.0/24"),
        ("192.0.2.77", 32, "192.0.2.77/32"),
        ("198.51.100.0", 22, "198.51.100.0/22"),
        ("2001:db8:abcd:12::", 56, "2001:db8:abcd::/56"),
        ("0.0.0.0", 0, "0.0.0.0/0"),
        ("::", 0, "::/0"),
    ],
)
def test_a_query_option_from_dnspython(address: str, source: int, network: str) -> None:
    subnet = ecs.parse(dnspython_wire(address, source))
    assert subnet == ClientSubnet(ip_network(network), 0)
    assert subnet.family == (1 if "." in address else 2)
    assert subnet.source_prefix == source
    assert subnet.locates is (source > 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than 4"),
        (bytes.fromhex("000118"), "shorter than 4"),
        (bytes.fromhex("00031800c00002"), "FAMILY 3 is neither"),
        (bytes.fromhex("00001800c00002"), "FAMILY 0 is neither"),
        (bytes.fromhex("000121" + "00" + "c0000201" + "00"), "SOURCE PREFIX-LENGTH 33 is longer"),
        (bytes.fromhex("000281" + "00" + "00" * 17), "SOURCE PREFIX-LENGTH 129 is longer"),
        (bytes.fromhex("00011818c00002"), "SCOPE PREFIX-LENGTH is 24 in a query"),
        (bytes.fromhex("00011800c000"), "2 octets; SOURCE PREFIX-LENGTH 24 needs 3"),
        (bytes.fromhex("00011800c0000200"), "4 octets; SOURCE PREFIX-LENGTH 24 needs 3"),
        (bytes.fromhex("00011700c00003"), "bits set past SOURCE PREFIX-LENGTH 23"),
        (bytes.fromhex("00011800c00002ff"), "4 octets"),
        (bytes.fromhex("00010000c0"), "1 octets; SOURCE PREFIX-LENGTH 0 needs 0"),
    ],
)
def test_malformed_options_get_formerr(data: bytes, message: str) -> None:
    with pytest.raises(EcsFormatError, match=message):
        ecs.parse(data)


def test_a_reply_may_carry_a_scope_but_not_past_the_address() -> None:
    assert ecs.parse(bytes.fromhex("00011810c00002"), in_reply=True).scope == 16
    with pytest.raises(EcsFormatError, match="SCOPE PREFIX-LENGTH 33 is longer"):
        ecs.parse(bytes.fromhex("00011821c00002"), in_reply=True)


def test_source_limits_truncate_what_is_located() -> None:
    limits = SourceLimits()
    assert (limits.v4, limits.v6) == (24, 56)
    assert limits.lookup(ecs.parse(dnspython_wire("192.0.2.77", 32))) == ip_network("192.0.2.0/24")
    assert limits.lookup(ecs.parse(dnspython_wire("198.51.100.0", 22))) == ip_network(
        "198.51.100.0/22"
    )
    v6 = ecs.parse(dnspython_wire("2001:db8:abcd:12:1::", 80))
    assert limits.lookup(v6) == ip_network("2001:db8:abcd::/56")
    assert SourceLimits(v4=16).lookup(ecs.parse(dnspython_wire("192.0.2.77", 24))) == ip_network(
        "192.0.0.0/16"
    )
    with pytest.raises(ValueError, match="IPv4 source prefix limit 33"):
        SourceLimits(v4=33)
    with pytest.raises(ValueError, match="IPv6 source prefix limit -1"):
        SourceLimits(v6=-1)


def test_the_reply_echoes_the_query_with_the_scope() -> None:
    query = ecs.parse(dnspython_wire("192.0.2.77", 32))
    limits = SourceLimits()
    # the location depends on a /16: scope 16; on a /28: capped at the /24 actually used
    for depends_on, scope in ((16, 16), (28, 24), (0, 0)):
        wire = ecs.reply_option(query, limits.reply_scope(query, depends_on))
        seen = dns.edns.ECSOption.from_wire_parser(dns.edns.OptionType.ECS, dns.wire.Parser(wire))
        assert isinstance(seen, dns.edns.ECSOption)
        # family, source prefix and address exactly as the query sent them
        assert (seen.family, seen.address, seen.srclen, seen.scopelen) == (
            1,
            "192.0.2.77",
            32,
            scope,
        )
    # scope may exceed a short source: the resolver learns its prefix was too short
    short = ecs.parse(dnspython_wire("192.0.2.0", 16))
    assert limits.reply_scope(short, 20) == 20
    # SOURCE 0: the client asked not to be located; scope 0 whatever the location says
    anonymous = ecs.parse(dnspython_wire("0.0.0.0", 0))
    assert limits.reply_scope(anonymous, 12) == 0
    assert ecs.reply_option(anonymous, 12) == bytes.fromhex("00010000")


def test_option_data_rejects_a_scope_past_the_address() -> None:
    with pytest.raises(ValueError, match=r"SCOPE PREFIX-LENGTH 33 is outside 0\.\.32"):
        ecs.option_data(IPv4Network("192.0.2.0/24"), 33)


def test_network_of_reads_what_dig_takes() -> None:
    assert ecs.network_of("192.0.2.77/24") == ip_network("192.0.2.0/24")
    assert ecs.network_of("2001:db8::1") == ip_network("2001:db8::1/128")
    with pytest.raises(ValueError, match="does not appear to be"):
        ecs.network_of("nowhere")


NETWORKS = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: IPv4Network(t, strict=False)
    ),
    st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
        lambda t: IPv6Network(t, strict=False)
    ),
)


@given(network=NETWORKS, scope=st.integers(0, 128))
def test_round_trips(network: IPv4Network | IPv6Network, scope: int) -> None:
    scope %= network.max_prefixlen + 1
    assert ecs.parse(ecs.option_data(network)) == ClientSubnet(network)
    assert ecs.parse(ecs.option_data(network, scope), in_reply=True) == ClientSubnet(network, scope)
    # the same bytes as dnspython's encoder, and its decoder reads ours back
    theirs = dnspython_wire(str(network.network_address), network.prefixlen, scope)
    assert ecs.option_data(network, scope) == theirs
    back = dns.edns.ECSOption.from_wire_parser(dns.edns.OptionType.ECS, dns.wire.Parser(theirs))
    assert isinstance(back, dns.edns.ECSOption)
    assert (back.srclen, back.scopelen) == (network.prefixlen, scope)


@given(data=st.binary(max_size=40))
def test_arbitrary_bytes_raise_only_the_formerr_error(data: bytes) -> None:
    try:
        subnet = ecs.parse(data)
    except EcsFormatError:
        return
    # what parses is exactly what re-encodes to the same bytes
    assert ecs.option_data(subnet.network) == data


@given(
    family=st.sampled_from([1, 2]),
    source=st.integers(0, 255),
    scope=st.integers(0, 255),
    address=st.binary(max_size=20),
)
def test_near_valid_options_raise_only_the_formerr_error(
    family: int, source: int, scope: int, address: bytes
) -> None:
    data = family.to_bytes(2, "big") + bytes((source, scope)) + address
    for in_reply in (False, True):
        try:
            subnet = ecs.parse(data, in_reply=in_reply)
        except EcsFormatError:
            continue
        assert ecs.option_data(subnet.network, subnet.scope) == data
