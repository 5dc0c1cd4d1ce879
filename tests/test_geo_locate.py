"""Locating clients in real MMDB files (written by mmdb-writer, read by maxminddb) and a CIDR
map: countries, continents, coordinates, the prefix each answer depends on (the ECS scope),
the map winning, IPv4-mapped IPv6, reloads and broken files."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address, ip_network
from pathlib import Path

import maxminddb
import pytest
from geo_mmdb import FRANKFURT, LONDON, SYDNEY, VIRGINIA, city, country, write_mmdb
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsfailover.geo.errors import DatabaseError, NetsError
from dnsfailover.geo.locate import Locator
from dnsfailover.geo.nets import NetMap

CITY = {
    "81.2.0.0/16": city("GB", "EU", LONDON),
    "81.2.69.0/24": city("DE", "EU", FRANKFURT),  # inside the /16: splits it
    "2001:db8::/32": city("AU", "OC", SYDNEY),
    "2001:db8:1::/48": city("US", "NA", VIRGINIA),  # inside the /32
}
NETS = {"81.2.69.128/25": "lab", "10.0.0.0/8": "office", "10.1.0.0/16": "lab2"}


@pytest.fixture(scope="module")
def city_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmdb(tmp_path_factory.mktemp("geo") / "city.mmdb", CITY)


@pytest.fixture(scope="module")
def locator(city_db: Path) -> Iterator[Locator]:
    with Locator(city_db, NetMap(NETS), need_coordinates=True) as loc:
        yield loc


def where(loc: Locator, client: str) -> tuple[str | None, str | None, str | None, int]:
    found = loc.locate(ip_network(client) if "/" in client else ip_address(client))
    return found.country, found.continent, found.net, found.prefix


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        # the nested /24 wins inside the /16; its lower half is DE, split off by the map's /25
        ("81.2.69.5", ("DE", "EU", None, 25)),
        ("81.2.69.160", (None, None, "lab", 25)),
        # 81.2.70.0/23 is the part of the /16 next to the /24 (69 = 0100010|1, 70 = 0100011|0)
        ("81.2.70.1", ("GB", "EU", None, 23)),
        ("81.2.200.1", ("GB", "EU", None, 17)),
        ("2001:db8:1::5", ("US", "NA", None, 48)),
        # 2001:db8:2:: differs from 2001:db8:1:: at bit 47
        ("2001:db8:2::1", ("AU", "OC", None, 47)),
        ("192.0.2.1", (None, None, None, 1)),  # nothing in 128.0.0.0/1
        # IPv4-mapped IPv6: located as IPv4, the prefix in IPv6 bits
        ("::ffff:81.2.69.5", ("DE", "EU", None, 121)),
        ("::ffff:10.1.2.3", (None, None, "lab2", 112)),
        # IPv4-compatible (::a.b.c.d, where IPv6 databases keep IPv4 data): the same
        ("::81.2.69.5", ("DE", "EU", None, 121)),
        ("::10.1.2.3", (None, None, "lab2", 112)),
        # the map alone, nested: the more specific entry wins; the /8 is split by the /16
        ("10.1.2.3", (None, None, "lab2", 16)),
        ("10.2.3.4", (None, None, "office", 15)),
        # ECS networks are located by their first address
        ("81.2.69.0/24", ("DE", "EU", None, 25)),
        ("2001:db8:1::/56", ("US", "NA", None, 48)),
    ],
)
def test_lookups_and_the_prefix_each_depends_on(
    locator: Locator, client: str, expected: tuple[str | None, str | None, str | None, int]
) -> None:
    assert where(locator, client) == expected


def test_coordinates_come_from_a_city_database(locator: Locator) -> None:
    assert locator.locate(ip_address("81.2.70.1")).coordinates == LONDON
    assert locator.locate(ip_address("2001:db8:5::1")).coordinates == SYDNEY
    assert locator.locate(ip_address("192.0.2.1")).coordinates is None
    assert locator.database_type == "GeoLite2-City"


def test_a_country_database_has_no_coordinates_for_proximity(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "country.mmdb",
        {"1.0.0.0/24": country("AU", "OC"), "2.16.0.0/13": country("FR", "EU")},
        ip_version=4,
        database_type="GeoLite2-Country",
    )
    with Locator(path) as loc:
        assert where(loc, "2.17.1.1") == ("FR", "EU", None, 13)
        assert loc.locate(ip_address("2.17.1.1")).coordinates is None
        # an IPv4-only database knows nothing of IPv6 clients: no location, no error
        assert where(loc, "2001:db8::1") == (None, None, None, 0)
    with pytest.raises(DatabaseError, match=r"country\.mmdb.*no coordinates.*city database"):
        Locator(path, need_coordinates=True)


def test_the_flat_ip_location_db_layout(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "flat.mmdb",
        {"8.8.8.0/24": {"country_code": "US"}, "9.9.9.0/24": {"country_code": "CH"}},
        ip_version=4,
        database_type="country",
    )
    with Locator(path) as loc:
        assert where(loc, "8.8.8.8") == ("US", None, None, 24)


def test_a_database_that_does_not_open_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(
        DatabaseError, match=r"garbage\.mmdb: cannot open it as a MaxMind-format database"
    ) as raised:
        Locator(garbage)
    # the error names the user's file, never the private copy that was opened
    assert "dnsfailover-geo-" not in str(raised.value)
    assert str(raised.value).count("garbage.mmdb") == 2, raised.value
    with pytest.raises(DatabaseError, match=r"missing\.mmdb: cannot read"):
        Locator(tmp_path / "missing.mmdb")


def test_the_map_alone_without_a_database() -> None:
    loc = Locator(None, NetMap(NETS))
    assert where(loc, "10.200.0.1") == (None, None, "office", 9)
    # no entry in 128.0.0.0/1: the answer holds for all of it
    assert where(loc, "192.0.2.1") == (None, None, None, 1)
    assert loc.reload_if_changed().reloaded is False


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("10.0.0.0/8", "a"), ("10.0.0.0/8", "b")], r"10\.0\.0\.0/8 repeats 10\.0\.0\.0/8"),
        ([("10.0.0.0/8", "a"), ("::ffff:10.0.0.0/104", "a")], r"::ffff:10\.0\.0\.0/104 repeats"),
        ([("10.0.0.0/8", "a"), ("::10.0.0.0/104", "a")], r"::10\.0\.0\.0/104 repeats"),
        ([("10.0.0.1/8", "a")], r"'10\.0\.0\.1/8' is not a CIDR network.*host bits"),
        ([("ten/8", "a")], r"'ten/8' is not a CIDR network"),
        ([("10.0.0.0/8", "")], r"10\.0\.0\.0/8 has an empty label"),
    ],
)
def test_bad_maps_are_rejected_naming_the_entry(
    entries: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(NetsError, match=message):
        NetMap(entries)


def test_mapped_networks_in_the_map_are_ipv4_networks() -> None:
    nets = NetMap({"::ffff:192.0.2.0/120": "doc", "::198.51.100.0/120": "net2"})
    assert Locator(None, nets).locate(ip_address("192.0.2.7")).net == "doc"
    assert Locator(None, nets).locate(ip_address("198.51.100.7")).net == "net2"
    assert nets.networks == (ip_network("192.0.2.0/24"), ip_network("198.51.100.0/24"))


ADDRESSES = st.one_of(
    st.integers(int(IPv4Address("81.0.0.0")), int(IPv4Address("81.255.255.255"))).map(IPv4Address),
    st.integers(int(IPv4Address("10.0.0.0")), int(IPv4Address("10.255.255.255"))).map(IPv4Address),
    st.integers(int(IPv6Address("2001:d00::")), int(IPv6Address("2001:dff::"))).map(IPv6Address),
)


@settings(max_examples=150, deadline=None)
@given(client=ADDRESSES, others=st.lists(st.integers(min_value=0), min_size=8, max_size=8))
def test_every_address_within_the_prefix_gets_the_same_location(
    locator: Locator, client: IPv4Address | IPv6Address, others: list[int]
) -> None:
    """The prefix is an honest ECS scope: any address in that network is located alike."""
    found = locator.locate(client)
    scope = ip_network(f"{client}/{found.prefix}", strict=False)
    probes = [scope.network_address, scope.broadcast_address]
    probes += [scope.network_address + (o % scope.num_addresses) for o in others]
    for probe in probes:
        same = locator.locate(probe)
        assert (same.country, same.net, same.coordinates) == (
            found.country,
            found.net,
            found.coordinates,
        ), (client, found.prefix, probe)


def test_reload_after_the_file_is_replaced(tmp_path: Path) -> None:
    path = write_mmdb(tmp_path / "geo.mmdb", CITY)
    with Locator(path, need_coordinates=True) as loc:
        assert loc.reload_if_changed().reloaded is False  # unchanged: nothing to do
        write_mmdb(path, {**CITY, "81.2.69.0/24": city("FR", "EU", (48.8566, 2.3522))})
        result = loc.reload_if_changed()
        assert (result.reloaded, result.error) == (True, None)
        assert where(loc, "81.2.69.5") == ("FR", "EU", None, 24)
        assert loc.reload_if_changed().reloaded is False


def test_a_broken_replacement_keeps_the_old_database(tmp_path: Path) -> None:
    path = write_mmdb(tmp_path / "geo.mmdb", CITY)
    with Locator(path, need_coordinates=True) as loc:
        broken = tmp_path / "broken"
        broken.write_bytes(b"\xab\xcd\xefMaxMind.com" + b"\0" * 64)  # a truncated download
        os.replace(broken, path)
        result = loc.reload_if_changed()
        assert result.reloaded is False
        assert "geo.mmdb: cannot open it as a MaxMind-format database" in (result.error or "")
        assert where(loc, "81.2.69.5") == ("DE", "EU", None, 24)  # still served
        # a country file is no use to proximity steering either: refused, the city one kept
        write_mmdb(path, {"81.2.0.0/16": country("GB", "EU")}, database_type="GeoLite2-Country")
        result = loc.reload_if_changed()
        assert "no coordinates" in (result.error or "")
        assert loc.locate(ip_address("81.2.69.5")).coordinates == FRANKFURT
        path.unlink()
        result = loc.reload_if_changed()
        assert "cannot read the database" in (result.error or "")
        assert where(loc, "81.2.69.5") == ("DE", "EU", None, 24)
        write_mmdb(path, CITY)  # fixed: taken at the next reload
        assert loc.reload_if_changed() == type(result)(True, None)


@pytest.mark.parametrize("mode", [maxminddb.MODE_MMAP, maxminddb.MODE_MEMORY])
def test_the_pure_python_readers_agree(city_db: Path, mode: int) -> None:
    with Locator(city_db, NetMap(NETS)) as auto, Locator(city_db, NetMap(NETS), mode=mode) as py:
        for client in ("81.2.69.5", "81.2.70.1", "2001:db8:2::1", "::ffff:81.2.69.5", "1.1.1.1"):
            assert auto.locate(ip_address(client)) == py.locate(ip_address(client))


def common_prefix(a: int, b: int, bits: int = 32) -> int:
    return bits - (a ^ b).bit_length()


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 20)), max_size=25),
    picks=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 2**12 - 1)), min_size=1),
)
def test_the_map_agrees_with_a_brute_force_search(
    raw: list[tuple[int, int]], picks: list[tuple[int, int]]
) -> None:
    """Longest match and split depth against scanning every entry, for addresses inside,
    next to and away from the entries."""
    entries = {IPv4Network(t, strict=False): f"l{i}" for i, t in enumerate(raw)}
    nets = NetMap(list(entries.items()))
    for which, offset in picks:
        base = list(entries)[which % len(entries)] if entries else IPv4Network("0.0.0.0/0")
        address = IPv4Address((int(base.network_address) + offset * 997) % 2**32)
        value = int(address)
        inside = [e for e in entries if address in e]
        best = max(inside, key=lambda e: e.prefixlen) if inside else None
        split = max(
            (
                min(e.prefixlen - 1, common_prefix(value, int(e.network_address))) + 1
                for e in entries
                if e.prefixlen > 0
            ),
            default=0,
        )
        length, label, found_split = nets.find(address)
        assert (length, label) == ((best.prefixlen, entries[best]) if best else (-1, None))
        assert found_split == split


IN_PLACE = """
import sys
from ipaddress import ip_address
from pathlib import Path
from geo_mmdb import FRANKFURT, city, write_mmdb
from dnsfailover.geo.locate import Locator

path = Path(sys.argv[1])
write_mmdb(path, {"81.2.0.0/16": city("DE", "EU", FRANKFURT)})
with Locator(path) as loc:
    with open(path, "r+b") as f:  # what `cp new.mmdb old.mmdb` does first
        f.truncate(0)
    print(loc.locate(ip_address("81.2.1.1")).country)
    print(loc.reload_if_changed().error is not None)
    print(loc.locate(ip_address("81.2.1.1")).country)
"""


def test_a_database_rewritten_in_place_cannot_crash_the_server(tmp_path: Path) -> None:
    """A mapped file truncated under the reader would kill the process with SIGBUS at the
    next lookup; the locator maps a private copy, so it keeps answering from the old data
    (run in a child: a crash must fail this test, not end the test run)."""
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}
    child = subprocess.run(
        [sys.executable, "-c", IN_PLACE, str(tmp_path / "geo.mmdb")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (child.returncode, child.stdout.split()) == (0, ["DE", "True", "DE"]), child.stderr


def test_private_copies_do_not_linger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copies = tmp_path / "tmp"
    copies.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(copies))
    path = write_mmdb(tmp_path / "geo.mmdb", CITY)
    with Locator(path) as loc:
        write_mmdb(path, {**CITY, "81.2.69.0/24": city("FR", "EU", (48.8566, 2.3522))})
        assert loc.reload_if_changed().reloaded
        path.write_bytes(b"garbage")
        assert loc.reload_if_changed().error is not None
        assert where(loc, "81.2.69.5") == ("FR", "EU", None, 24)
    assert list(copies.iterdir()) == []
