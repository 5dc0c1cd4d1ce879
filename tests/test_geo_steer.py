"""Steering: rules turn a located client into its ordered regions (its location group).
Proximity is checked with real city coordinates, located through a real MMDB file."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address

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

from dnsfailover.geo import codes
from dnsfailover.geo.errors import SteeringError, UnknownCodeError
from dnsfailover.geo.locate import Location, Locator
from dnsfailover.geo.nets import NetMap
from dnsfailover.geo.steer import (
    Region,
    Rule,
    groups,
    haversine_km,
    nearest_group,
    rule,
    steer,
)

REGIONS = (Region("fra", FRANKFURT), Region("syd", SYDNEY), Region("iad", VIRGINIA))
CLIENTS = {
    "81.2.69.0/24": city("GB", "EU", LONDON),
    "1.0.16.0/20": city("JP", "AS", TOKYO),
    "2001:db8:1::/48": city("US", "NA", NEW_YORK),
    "2001:db8:2::/48": city("SG", "AS", SINGAPORE),
    "2001:db8:3::/48": city("DE", "EU", FRANKFURT),
}


@pytest.fixture(scope="module")
def locator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locator]:
    path = write_mmdb(tmp_path_factory.mktemp("geo") / "city.mmdb", CLIENTS)
    with Locator(path, NetMap({"10.0.0.0/8": "office"}), need_coordinates=True) as loc:
        yield loc


def order(loc: Locator, r: Rule, client: str) -> tuple[str, ...]:
    return steer(r, loc.locate(ip_address(client))).order


def test_great_circle_distances_of_real_cities() -> None:
    # published great-circle distances: FRA-SYD 16,480 km, LON-NYC 5,570 km, LON-FRA 638 km
    assert haversine_km(FRANKFURT, SYDNEY) == pytest.approx(16_480, rel=0.005)
    assert haversine_km(LONDON, NEW_YORK) == pytest.approx(5_570, rel=0.005)
    assert haversine_km(LONDON, FRANKFURT) == pytest.approx(638, rel=0.01)
    assert haversine_km(SYDNEY, SYDNEY) == 0.0


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("81.2.69.10", ("fra", "iad", "syd")),  # London: 638, 5922, 16994 km
        ("1.0.16.1", ("syd", "fra", "iad")),  # Tokyo: 7826, 9331, 10885 km
        ("2001:db8:1::1", ("iad", "fra", "syd")),  # New York: 354, 6203, 15989 km
        ("2001:db8:2::1", ("syd", "fra", "iad")),  # Singapore: 6306, 10258, 15532 km
        ("192.0.2.1", ("fra", "syd", "iad")),  # no coordinates: the configured order
    ],
)
def test_proximity_orders_by_distance_from_the_database_coordinates(
    locator: Locator, client: str, expected: tuple[str, ...]
) -> None:
    assert order(locator, rule("proximity", regions=REGIONS), client) == expected


def test_bias_scales_the_distance_like_route53_geoproximity(locator: Locator) -> None:
    # London: iad 5922 km * (1 - 90/100) = 592 km beats fra's 638 km
    drawn = rule("proximity", regions=(REGIONS[0], REGIONS[1], Region("iad", VIRGINIA, 90)))
    assert order(locator, drawn, "81.2.69.10") == ("iad", "fra", "syd")
    # Tokyo: syd 7826 km * (1 + 20/100) = 9391 km loses to fra's 9331 km
    pushed = rule("proximity", regions=(REGIONS[0], Region("syd", SYDNEY, -20), REGIONS[2]))
    assert order(locator, pushed, "1.0.16.1") == ("fra", "syd", "iad")


def test_ties_keep_the_configured_order(locator: Locator) -> None:
    twins = (Region("b", FRANKFURT), Region("a", FRANKFURT), Region("c", SYDNEY))
    assert order(locator, rule("proximity", regions=twins), "81.2.69.10") == ("b", "a", "c")
    reverse = twins[::-1]  # c, a, b
    assert order(locator, rule("proximity", regions=reverse), "81.2.69.10") == ("a", "b", "c")


def test_a_proximity_default_for_clients_without_coordinates(locator: Locator) -> None:
    r = rule("proximity", regions=REGIONS, default=["iad", "fra"])
    assert steer(r, locator.locate(ip_address("192.0.2.1"))).order == ("iad", "fra")
    assert steer(r, locator.locate(ip_address("192.0.2.1"))).why == "default: no coordinates known"


def test_country_continent_and_default(locator: Locator) -> None:
    by_country = rule(
        "country", map={"de": ["fra", "iad"], "JP": ["syd", "fra"]}, default=["iad", "fra"]
    )
    assert order(locator, by_country, "2001:db8:3::1") == ("fra", "iad")
    assert order(locator, by_country, "1.0.16.1") == ("syd", "fra")
    assert order(locator, by_country, "81.2.69.10") == ("iad", "fra")  # GB: not mapped
    assert order(locator, by_country, "192.0.2.1") == ("iad", "fra")  # nowhere
    by_continent = rule("continent", map={"EU": ["fra"], "AS": ["syd", "fra"]}, default=["iad"])
    assert order(locator, by_continent, "81.2.69.10") == ("fra",)
    assert order(locator, by_continent, "2001:db8:2::1") == ("syd", "fra")
    assert order(locator, by_continent, "2001:db8:1::1") == ("iad",)
    found = steer(by_continent, locator.locate(ip_address("2001:db8:2::1")))
    assert found.why == "continent AS"


def test_the_cidr_map_wins_over_the_database(locator: Locator) -> None:
    by_subnet = rule("subnet", map={"office": ["fra"]}, default=["iad"], labels=["office"])
    assert order(locator, by_subnet, "10.9.9.9") == ("fra",)
    assert order(locator, by_subnet, "81.2.69.10") == ("iad",)
    by_country = rule("country", map={"GB": ["iad"]}, nets={"office": ["syd"]}, default=["fra"])
    assert order(locator, by_country, "10.9.9.9") == ("syd",)
    assert steer(by_country, locator.locate(ip_address("10.9.9.9"))).why == "net office"
    plain = rule("country", map={"GB": ["iad"]}, default=["fra"])
    assert steer(plain, locator.locate(ip_address("10.9.9.9"))).why == (
        "default: net office is not mapped"
    )


def test_clients_with_the_same_list_share_a_location_group(locator: Locator) -> None:
    r = rule("proximity", regions=REGIONS)
    groups: dict[tuple[str, ...], list[str]] = {}
    for client in ("81.2.69.10", "2001:db8:3::1", "1.0.16.1", "2001:db8:2::1", "2001:db8:1::1"):
        groups.setdefault(order(locator, r, client), []).append(client)
    # London and Frankfurt together; Tokyo and Singapore together; New York alone
    assert sorted(groups.values()) == [
        ["1.0.16.1", "2001:db8:2::1"],
        ["2001:db8:1::1"],
        ["81.2.69.10", "2001:db8:3::1"],
    ]


def test_codes_are_known_or_named_in_the_error() -> None:
    assert codes.country("de") == "DE"
    assert codes.country("XK") == "XK"  # Kosovo, as the GeoIP databases spell it
    assert codes.continent("oc") == "OC"
    assert len(codes.countries()) >= 249
    with pytest.raises(UnknownCodeError, match="unknown country code 'ZZ'"):
        codes.country("ZZ")
    with pytest.raises(UnknownCodeError, match=r"'EU'.*a continent: use by: continent"):
        codes.country("EU")
    with pytest.raises(UnknownCodeError, match="unknown continent code 'XX': known are AF AN AS"):
        codes.continent("XX")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"by": "planet", "default": ["a"]}, SteeringError, "'planet' is not one of"),
        ({"by": "country", "map": {"ZZ": ["a"]}, "default": ["a"]}, UnknownCodeError, "'ZZ'"),
        ({"by": "continent", "map": {"EU": ["a"]}, "default": ["a"]}, None, ""),
        ({"by": "continent", "map": {"EUR": ["a"]}, "default": ["a"]}, UnknownCodeError, "EUR"),
        ({"by": "country", "map": {"DE": ["a"]}}, SteeringError, "needs a default"),
        ({"by": "country", "map": {"DE": []}, "default": ["a"]}, SteeringError, "map: DE: the"),
        ({"by": "country", "map": {"de": ["a"], "DE": ["b"]}, "default": ["a"]}, SteeringError,
         "map: DE is listed twice"),
        ({"by": "country", "map": {"DE": ["a", "a"]}, "default": ["a"]}, SteeringError,
         "region a is listed twice"),
        ({"by": "country", "map": {"DE": ["mars"]}, "default": ["a"], "known": ["a"]},
         SteeringError, "map: DE: unknown region mars"),
        ({"by": "subnet", "map": {"lab": ["a"]}, "default": ["a"], "labels": ["office"]},
         SteeringError, "lab is not a label of the CIDR map"),
        ({"by": "proximity"}, SteeringError, "needs regions with coordinates"),
        ({"by": "proximity", "regions": [Region("a")]}, SteeringError,
         "region a has no coordinates"),
        ({"by": "proximity", "regions": [Region("a", (91.0, 0.0))]}, SteeringError,
         "off the globe"),
        ({"by": "proximity", "regions": [Region("a", (1.0, 0.0), 100)]}, SteeringError,
         "bias 100 is outside -99..99"),
        ({"by": "proximity", "regions": REGIONS, "map": {"DE": ["fra"]}}, SteeringError,
         "takes no map"),
        ({"by": "country", "regions": REGIONS, "default": ["a"]}, SteeringError,
         "takes no regions"),
    ],
)  # fmt: skip
def test_invalid_rules_are_rejected_naming_what_is_wrong(
    kwargs: dict[str, object], error: type[Exception] | None, message: str
) -> None:
    if error is None:
        rule(**kwargs)  # type: ignore[arg-type]
        return
    with pytest.raises(error, match=message):
        rule(**kwargs)  # type: ignore[arg-type]


def test_a_location_without_anything_gets_the_default() -> None:
    r = rule("country", map={"DE": ["fra"]}, default=["iad"])
    assert steer(r, Location(0)).order == ("iad",)
    assert steer(r, Location(0)).why == "default: no country known"


def test_the_groups_a_map_rule_can_answer() -> None:
    r = rule(
        "country",
        map={"DE": ["fra", "iad"], "FR": ["fra", "iad"], "JP": ["syd"]},
        nets={"office": ["iad"]},
        default=["iad"],
    )
    assert groups(r) == (("iad",), ("fra", "iad"), ("syd",))


def test_proximity_groups_are_the_orderings_clients_on_the_globe_see(locator: Locator) -> None:
    r = rule("proximity", regions=REGIONS)
    found = groups(r)
    assert found[0] == ("fra", "syd", "iad")  # the default: configured order
    assert len(found) == len(set(found))
    # each region is somebody's nearest, and every real client's ordering is a group
    assert {g[0] for g in found[1:]} == {"fra", "syd", "iad"}
    for cidr in CLIENTS:
        where = locator.locate(ip_address(cidr.split("/")[0]))
        assert steer(r, where).order in found
    # (fra, iad, syd) is London's and (iad, fra, syd) New York's; an unlikely ordering
    # falls to the group sharing its longest leading run
    assert nearest_group(("syd", "fra", "iad"), found)[0] == "syd"
    assert nearest_group(("fra", "iad", "syd"), found) == ("fra", "iad", "syd")
