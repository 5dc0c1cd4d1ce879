"""Compiled placement (`Steering.place`) against the straightforward path (`place_slowly`:
locate the client, steer it), on real MMDB files with nested IPv4 and IPv6 networks and a
nested CIDR map: the same group and reason for every client, and a scope whose whole network
gets that group, as wide as it can be."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path

import pytest
from geo_mmdb import (
    FRANKFURT,
    LONDON,
    NEW_YORK,
    SINGAPORE,
    SYDNEY,
    TOKYO,
    VIRGINIA,
    city,
    write_mmdb,
)
from geo_mmdb import country as country_record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnsfailover.geo.errors import DatabaseError
from dnsfailover.geo.locate import Address, Locator, Network, location_of
from dnsfailover.geo.nets import NetMap
from dnsfailover.geo.steer import Region, Rule, rule
from dnsfailover.geo.steering import Steering

NETWORKS = {
    "81.2.68.0/24": city("GB", "EU", LONDON),
    "81.2.69.0/24": city("GB", "EU", LONDON),
    "81.2.70.0/24": city("FR", "EU", (48.8566, 2.3522)),
    "81.2.71.0/24": city("DE", "EU", FRANKFURT),
    "1.0.0.0/16": city("JP", "AS", TOKYO),
    "1.0.16.0/20": city("AU", "OC", SYDNEY),
    "1.0.16.128/25": city("SG", "AS", SINGAPORE),
    "3.0.0.0/8": city("US", "NA", VIRGINIA),
    "3.4.0.0/16": city("US", "NA", NEW_YORK),
    "10.20.0.0/16": city("DE", "EU", FRANKFURT),  # under the map's 10.0.0.0/8: the map wins
    "2001:db8:1::/48": city("US", "NA", NEW_YORK),
    "2001:db8:2::/48": city("SG", "AS", SINGAPORE),
    "2001:db8:2:8000::/49": city("AU", "OC", SYDNEY),
    "2001:db8:3::/48": city("DE", "EU", FRANKFURT),
    "2a00::/12": city("DE", "EU", FRANKFURT),
    "2a00:1000::/24": city("GB", "EU", LONDON),
    "::ffff:0:0/96": city("BR", "SA", (-23.55, -46.63)),  # never read: mapped is IPv4
    "2002::/16": city("JP", "AS", TOKYO),  # a 6to4 range the file does not alias
}
NETS = {
    "10.0.0.0/8": "office",
    "10.1.0.0/16": "lab",
    "81.2.69.128/25": "lab",
    "2001:db8:1:100::/56": "office",
    "2a00:1000:1::/48": "lab",
}
REGIONS = (Region("fra", FRANKFURT), Region("syd", SYDNEY), Region("iad", VIRGINIA))
RULES: dict[str, Rule] = {
    "country.": rule(
        "country",
        map={"GB": ["fra", "iad"], "DE": ["fra", "iad"], "FR": ["fra", "iad"], "JP": ["syd"]},
        nets={"office": ["iad"], "lab": ["syd", "fra"]},
        default=["iad", "fra"],
    ),
    "continent.": rule(
        "continent", map={"EU": ["fra"], "AS": ["syd", "fra"], "OC": ["syd"]}, default=["iad"]
    ),
    "subnet.": rule("subnet", map={"office": ["fra"], "lab": ["syd"]}, default=["iad"]),
    "proximity.": rule("proximity", regions=REGIONS, nets={"lab": ["iad"]}),
}


@pytest.fixture(scope="module")
def steering(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Steering]:
    path = write_mmdb(tmp_path_factory.mktemp("geo") / "city.mmdb", NETWORKS)
    with Locator(path, NetMap(NETS), need_coordinates=True) as locator:
        yield Steering(RULES, locator)


def block(client: Address, scope: int) -> Network:
    if client.version == 4:
        return IPv4Network((int(client), scope), strict=False)
    return IPv6Network((int(client), scope), strict=False)


def around(cidrs: list[str]) -> st.SearchStrategy[Address]:
    """Addresses at, just inside and just outside the edges of `cidrs`."""

    def edge(cidr: str, offset: int, end: bool) -> Address:
        net = ip_network(cidr)
        base = int(net.broadcast_address if end else net.network_address)
        top = (1 << net.max_prefixlen) - 1
        return type(net.network_address)(min(top, max(0, base + offset)))

    return st.builds(edge, st.sampled_from(cidrs), st.integers(-3, 3), st.booleans())


SHARED_FIXTURE = [HealthCheck.function_scoped_fixture]  # read-only: one for every example
EDGES = [*NETWORKS, *NETS]
CLIENTS: st.SearchStrategy[Address] = st.one_of(
    around(EDGES),
    st.builds(IPv4Address, st.integers(0, (1 << 32) - 1)),
    st.builds(IPv6Address, st.integers(0, (1 << 128) - 1)),
    st.builds(lambda v: IPv6Address((0x20010DB8 << 96) | v), st.integers(0, (1 << 96) - 1)),
    st.builds(lambda v: IPv6Address((0xFFFF << 32) | v), st.integers(0, (1 << 32) - 1)),
    st.builds(IPv6Address, st.integers(0, (1 << 32) - 1)),  # ::a.b.c.d, IPv4-compatible
    st.builds(lambda v: IPv6Address((0x2A00 << 112) | v), st.integers(0, (1 << 112) - 1)),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(client=CLIENTS, name=st.sampled_from(sorted(RULES)), data=st.data())
def test_compiled_placement_is_the_straightforward_one(
    steering: Steering, client: Address, name: str, data: st.DataObject
) -> None:
    fast = steering.place(name, client)
    slow = steering.place_slowly(name, client)
    assert (fast.group, fast.why) == (slow.group, slow.why)
    # the location's own network gets one group, so the widest such network contains it
    assert fast.scope <= slow.scope
    # every address of the scope's network gets the same group: its edges and some inside
    net = block(client, fast.scope)
    first, last = int(net.network_address), int(net.broadcast_address)
    inside = data.draw(st.lists(st.integers(first, last), max_size=8))
    for value in (first, last, *inside):
        other = type(client)(value)
        assert steering.place_slowly(name, other).group == fast.group, (client, other)
        assert steering.place(name, other).group == fast.group


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(client=CLIENTS, prefix=st.integers(0, 128), name=st.sampled_from(sorted(RULES)))
def test_a_network_is_placed_by_its_first_address(
    steering: Steering, client: Address, prefix: int, name: str
) -> None:
    network = block(client, min(prefix, client.max_prefixlen))
    assert steering.place(name, network) == steering.place(name, network.network_address)
    assert steering.place(name, network).group == steering.place_slowly(name, network).group


@pytest.mark.parametrize(
    ("name", "client", "group", "scope"),
    [
        # FR's and DE's /24s go to fra,iad: one /23, though the countries differ
        ("country.", "81.2.70.1", "fra,iad", 23),
        ("country.", "81.2.71.255", "fra,iad", 23),
        # GB's two /24s too, but the map's lab (81.2.69.128/25) cuts the second
        ("country.", "81.2.68.1", "fra,iad", 24),
        # ... but the map's 81.2.69.128/25 (lab) cuts a hole: the /24 beside it
        ("country.", "81.2.69.1", "fra,iad", 25),
        ("country.", "81.2.69.200", "syd,fra", 25),
        # nothing in 128.0.0.0/1 is placed apart from the default
        ("country.", "200.1.1.1", "iad,fra", 1),
        # the map's 10.1.0.0/16 inside its 10.0.0.0/8: 10.2.3.4's /15 stays clear of it
        ("subnet.", "10.2.3.4", "fra", 15),
        ("subnet.", "10.1.3.4", "syd", 16),
        ("subnet.", "10.20.3.4", "fra", 12),  # the database's DE network under the map
        # JP's /16 with AU's /20 inside, SG's /25 inside that
        ("continent.", "1.0.0.1", "syd,fra", 20),
        ("continent.", "1.0.16.1", "syd", 25),
        ("continent.", "1.0.16.129", "syd,fra", 25),
        ("proximity.", "3.4.5.6", "iad,fra,syd", 8),  # New York and Virginia agree
        # Sydney's /49 in Singapore's /48: Virginia is nearer Sydney than Frankfurt is
        ("proximity.", "2001:db8:2:8000::1", "syd,iad,fra", 49),
        ("proximity.", "2001:db8:2::1", "syd,fra,iad", 49),
        ("proximity.", "::ffff:81.2.69.1", "fra,iad,syd", 96 + 25),
        ("continent.", "::ffff:200.1.1.1", "iad", 96 + 1),
        # IPv4-compatible: where IPv6 databases keep IPv4 data; placed as IPv4, map included
        ("subnet.", "::10.1.2.3", "syd", 96 + 16),
        ("subnet.", "::ffff:10.1.2.3", "syd", 96 + 16),
        ("continent.", "2002:102:304::1", "syd,fra", 16),  # not aliased: its own data
    ],
)
def test_the_scope_is_the_widest_network_with_one_group(
    steering: Steering, name: str, client: str, group: str, scope: int
) -> None:
    placed = steering.place(name, ip_address(client))
    assert (placed.group, placed.scope) == (group, scope)


def test_names_with_one_rule_share_one_table(steering: Steering) -> None:
    twin = Steering({"a.": RULES["country."], "b.": RULES["country."]}, steering.locator)
    assert twin._compiled["a."] is twin._compiled["b."]
    assert twin.place("a.", ip_address("81.2.68.1")) == steering.place(
        "country.", ip_address("81.2.68.1")
    )


def test_without_a_database_every_client_is_in_the_default_group_with_scope_0() -> None:
    steering = Steering(RULES)
    for client in ("192.0.2.1", "2001:db8::1"):
        placed = steering.place("country.", ip_address(client))
        assert (placed.group, placed.scope) == ("iad,fra", 0)
    only_map = Steering(RULES, Locator(None, NetMap(NETS)))
    assert only_map.place("subnet.", ip_address("10.1.2.3"))[:2] == ("syd", 16)
    assert only_map.place("subnet.", ip_address("10.2.2.3"))[:2] == ("fra", 15)
    assert only_map.place("subnet.", ip_address("128.0.0.1"))[:2] == ("iad", 1)


def test_an_ipv4_only_database(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "v4.mmdb",
        {"81.2.69.0/24": country_record("GB", "EU"), "81.2.68.0/24": country_record("FR", "EU")},
        ip_version=4,
        database_type="GeoLite2-Country",
    )
    r = rule("continent", map={"EU": ["fra"]}, default=["iad"])
    with Locator(path) as locator:
        steering = Steering({"a.": r}, locator)
        assert steering.place("a.", ip_address("81.2.69.1"))[:2] == ("fra", 23)
        assert steering.place("a.", ip_address("::ffff:81.2.69.1"))[:2] == ("fra", 96 + 23)
        # only ::ffff:81.2.68.0/23 (IPv4-mapped) differs: 2001::'s /3 stays clear of it
        assert steering.place("a.", ip_address("2001:db8::1"))[:2] == ("iad", 3)
        assert steering.place_slowly("a.", ip_address("2001:db8::1")).group == "iad"


def test_reloaded_builds_a_new_steering_when_the_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "db.mmdb"
    write_mmdb(path, {"81.2.69.0/24": city("GB", "EU", LONDON)})
    r = rule("country", map={"GB": ["fra"], "JP": ["syd"]}, default=["iad"])
    client = ip_address("81.2.69.1")
    with Locator(path) as locator:
        old = Steering({"a.": r}, locator)
        assert old.reloaded() is None  # unchanged
        assert old.place("a.", client).group == "fra"
        write_mmdb(path, {"81.2.69.0/24": city("JP", "AS", TOKYO)})
        new = old.reloaded()
        assert new is not None
        assert new.place("a.", client).group == "syd"
        assert new.place_slowly("a.", client).group == "syd"
        assert new.reloaded() is None
        # the old one is untouched: it answers as before until the caller swaps it out
        assert old.place("a.", client).group == "fra"
        assert old.place_slowly("a.", client).group == "fra"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"not a database")
        os.replace(tmp, path)
        with pytest.raises(DatabaseError, match="cannot open it as a MaxMind-format database"):
            new.reloaded()
        assert new.place("a.", client).group == "syd"
        assert new.locator is not None
        new.locator.close()


def test_a_locator_reloaded_in_place_is_scanned_again(tmp_path: Path) -> None:
    path = tmp_path / "db.mmdb"
    write_mmdb(path, {"81.2.69.0/24": city("GB", "EU", LONDON)})
    r = rule("country", map={"GB": ["fra"], "JP": ["syd"]}, default=["iad"])
    client = ip_address("81.2.69.1")
    with Locator(path) as locator:
        assert Steering({"a.": r}, locator).place("a.", client).group == "fra"
        write_mmdb(path, {"81.2.69.0/24": city("JP", "AS", TOKYO)})
        assert locator.reload_if_changed().reloaded
        assert Steering({"a.": r}, locator).place("a.", client).group == "syd"


def test_placements_are_cached_and_shared(steering: Steering) -> None:
    a = steering.place("country.", ip_address("81.2.68.1"))
    assert steering.place("country.", ip_address("81.2.68.1")) is a
    # another client with the same outcome and scope gets the same object, not a copy
    assert steering.place("country.", ip_address("81.2.68.2")) is a
    assert ipaddress.ip_address("81.2.68.1") in block(ip_address("81.2.68.1"), a.scope)


def alias_to_ipv4(path: Path, base: IPv6Network) -> None:
    """Point `base` in the file's search tree at its IPv4 subtree (::/96), as MaxMind's own
    files alias 6to4 (2002::/16) and Teredo (2001::/32): mmdb-writer writes no aliases."""
    with Locator(path, private_copy=False) as locator:
        assert locator.reader is not None
        meta = locator.reader.metadata()
    data = bytearray(path.read_bytes())
    assert meta.record_size == 24, meta.record_size  # what mmdb-writer writes for small files

    def record(node: int, right: int) -> int:
        at = node * 6 + right * 3
        return int.from_bytes(data[at : at + 3], "big")

    node = 0
    for _ in range(96):
        node = record(node, 0)
    ipv4_start = node
    value = int(base.network_address)
    node = 0
    for depth in range(base.prefixlen - 1):
        node = record(node, value >> (127 - depth) & 1)
        assert node < meta.node_count, "the path to the alias must exist"
    right = value >> (128 - base.prefixlen) & 1
    at = node * 6 + right * 3
    data[at : at + 3] = ipv4_start.to_bytes(3, "big")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


@settings(max_examples=200, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(v4=st.integers(0, (1 << 32) - 1), low=st.integers(0, (1 << 80) - 1), data=st.data())
def test_ipv6_space_the_file_aliases_to_ipv4_is_placed_as_the_reader_places_it(
    aliased: Steering, v4: int, low: int, data: st.DataObject
) -> None:
    near = data.draw(st.sampled_from([0, 0x01000000, 0x01001080, 0x51024480, 0x03040000]))
    for value in (v4, near):
        client = IPv6Address((0x2002 << 112) | (value << 80) | low)
        fast = aliased.place("continent.", client)
        slow = aliased.place_slowly("continent.", client)
        assert (fast.group, fast.why) == (slow.group, slow.why)
        assert fast.scope <= slow.scope
        net = block(client, fast.scope)
        for edge in (net.network_address, net.broadcast_address):
            assert aliased.place_slowly("continent.", edge).group == fast.group


@pytest.fixture(scope="module")
def aliased(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Steering]:
    path = tmp_path_factory.mktemp("geo") / "aliased.mmdb"
    write_mmdb(path, {**NETWORKS, "2002:ffff::/32": city("US", "NA", NEW_YORK)})
    alias_to_ipv4(path, IPv6Network("2002::/16"))
    with Locator(path, NetMap(NETS)) as locator:
        assert locator.reader is not None
        # the reader follows the alias: 2002:0100:1080:: is 1.0.16.128 (Singapore)
        record, prefix = locator.reader.get_with_prefix_len(IPv6Address("2002:100:1080::"))
        assert (location_of(record, prefix).country, prefix) == ("SG", 16 + 25)
        steering = Steering(RULES, locator)
        placed = steering.place("continent.", IPv6Address("2002:100:1080::1"))
        assert (placed.group, placed.scope) == ("syd,fra", 16 + 25)
        yield steering
