"""`geo:` and `steering:` in a config: a steered record loads into its rule, and every
mistake is a problem naming the file, the line and the key (so `serve` exits 2 before it
touches DNS).  The databases are real MMDB files written by mmdb-writer."""

from __future__ import annotations

from pathlib import Path

import pytest
from geo_mmdb import FRANKFURT, SYDNEY, VIRGINIA, city, country, write_mmdb

from dnsfailover.config.geocheck import places, steering_rules
from dnsfailover.config.load import load
from dnsfailover.errors import ConfigError, Problem

HEAD = """\
checks:
  web: {type: tcp, port: 80, interval: 1s, timeout: 500ms}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, values: [127.0.0.1]}
    failover:
      www:
        policy: active-passive
        check: web
        tiers:
          - {name: eu, endpoints: [127.0.0.11], coordinates: [50.11, 8.68]}
          - {name: us, endpoints: [127.0.0.12], coordinates: [38.94, -77.46]}
          - {name: ap, endpoints: [127.0.0.13], coordinates: [-33.87, 151.21]}
"""
# line 17 on: the record's steering, then anything else
W = 'zones["example.test."].failover.www'


@pytest.fixture
def city_db(tmp_path: Path) -> Path:
    return write_mmdb(
        tmp_path / "city.mmdb",
        {
            "192.0.2.0/24": city("DE", "EU", FRANKFURT),
            "198.51.100.0/24": city("US", "NA", VIRGINIA),
            "2001:db8::/32": city("AU", "OC", SYDNEY),
        },
    )


@pytest.fixture
def country_db(tmp_path: Path) -> Path:
    return write_mmdb(
        tmp_path / "country.mmdb",
        {"192.0.2.0/24": country("DE", "EU")},
        database_type="GeoLite2-Country",
    )


def load_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[Problem]:
    path = load_text(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return info.value.problems


def test_a_steered_record_loads_into_its_rule_with_a_relative_database(
    tmp_path: Path, city_db: Path
) -> None:
    text = HEAD + (
        "        steering:\n"
        "          by: country\n"
        "          map: {de: [eu, us], US: [us, eu], AU: [ap, us]}\n"
        "          default: [us, eu, ap]\n"
        "          nets: {office: [eu]}\n"
        "geo:\n"
        "  database: city.mmdb\n"  # relative to the config file's directory
        "  nets: {office: [10.1.0.0/16, 'fd00::/8']}\n"
    )
    config = load(load_text(tmp_path, text))
    assert config.geo.database_path == city_db
    rule = steering_rules(config)["www.example.test."]
    assert rule.map == {"DE": ("eu", "us"), "US": ("us", "eu"), "AU": ("ap", "us")}
    assert places(rule) == {
        "us,eu,ap": ("*",),
        "eu,us": ("country:DE",),
        "us,eu": ("country:US",),
        "ap,us": ("country:AU",),
        "eu": ("net:office",),
    }


CASES: dict[str, tuple[str, list[tuple[int, str, str]]]] = {
    "unknown country code": (
        "        steering: {by: country, map: {XX: [eu]}, default: [us]}\n",
        [(17, f"{W}.steering.map.XX", "unknown country code 'XX'")],
    ),
    "a continent where a country is expected": (
        "        steering: {by: country, map: {EU: [eu]}, default: [us]}\n",
        [(17, f"{W}.steering.map.EU", "use by: continent")],
    ),
    "unknown continent code": (
        "        steering: {by: continent, map: {EA: [eu]}, default: [us]}\n",
        [(17, f"{W}.steering.map.EA", "unknown continent code 'EA'")],
    ),
    "unknown tier": (
        "        steering:\n          by: country\n          map: {DE: [eu, asia]}\n"
        "          default: [us]\n",
        [(19, f"{W}.steering.map.DE[1]", "unknown tier 'asia'")],
    ),
    "tier listed twice": (
        "        steering: {by: country, map: {DE: [eu, eu]}, default: [us]}\n",
        [(17, f"{W}.steering", "region eu is listed twice")],
    ),
    "no default": (
        "        steering: {by: country, map: {DE: [eu]}}\n",
        [(17, f"{W}.steering", "needs a default list")],
    ),
    "unknown nets label": (
        "        steering: {by: subnet, map: {lab: [eu]}, default: [us]}\n",
        [(17, f"{W}.steering.map.lab", "unknown geo.nets label 'lab'")],
    ),
    "steering on active-active": (
        "      api:\n        policy: active-active\n        check: web\n"
        "        endpoints: [127.0.0.14]\n        steering: {by: country, default: [x]}\n",
        [(17, 'zones["example.test."].failover.api', "use policy: active-passive")],
    ),
    "bad by": (
        "        steering: {by: latency, default: [us]}\n",
        [(17, f"{W}.steering.by", "")],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_mistake_names_its_line_and_key(tmp_path: Path, city_db: Path, case: str) -> None:
    steering, expected = CASES[case]
    geo = "geo:\n  database: city.mmdb\n  nets: {office: [10.1.0.0/16]}\n"
    found = problems(tmp_path, HEAD + steering + geo)
    assert [(p.line, p.path) for p in found] == [(line, path) for line, path, _ in expected]
    for p, (_, _, message) in zip(found, expected, strict=True):
        assert message in p.message, str(p)


def test_proximity_needs_coordinates_on_every_tier(tmp_path: Path, city_db: Path) -> None:
    text = HEAD.replace(", coordinates: [-33.87, 151.21]", "") + (
        "        steering: {by: proximity}\ngeo: {database: city.mmdb}\n"
    )
    (p,) = problems(tmp_path, text)
    assert (p.line, p.path) == (16, f"{W}.tiers[2].coordinates")
    assert "tier ap has no coordinates" in p.message


def test_proximity_refuses_a_database_without_coordinates(tmp_path: Path, country_db: Path) -> None:
    text = HEAD + "        steering: {by: proximity}\ngeo: {database: country.mmdb}\n"
    (p,) = problems(tmp_path, text)
    assert (p.line, p.path) == (18, "geo.database")
    assert "country.mmdb" in p.message
    assert "coordinates" in p.message


def test_proximity_and_country_need_a_database(tmp_path: Path) -> None:
    found = problems(tmp_path, HEAD + "        steering: {by: proximity}\n")
    assert [(p.line, p.path) for p in found] == [(17, f"{W}.steering.by")]
    assert "needs geo.database" in found[0].message


def test_a_database_that_does_not_open_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.mmdb").write_bytes(b"not a database")
    text = HEAD + (
        "        steering: {by: country, map: {DE: [eu]}, default: [us]}\n"
        "geo:\n  database: broken.mmdb\n"
    )
    (p,) = problems(tmp_path, text)
    assert (p.line, p.path) == (19, "geo.database")
    assert "broken.mmdb" in p.message
    missing = HEAD.replace("coordinates", "coordinates") + (
        "        steering: {by: country, map: {DE: [eu]}, default: [us]}\n"
        "geo:\n  database: nowhere.mmdb\n"
    )
    (p,) = problems(tmp_path, missing)
    assert (p.line, p.path) == (19, "geo.database")
    assert "nowhere.mmdb" in p.message


def test_the_same_network_twice_in_nets_is_refused(tmp_path: Path, city_db: Path) -> None:
    text = HEAD + (
        "        steering: {by: subnet, map: {a: [eu]}, default: [us]}\n"
        "geo:\n"
        "  nets:\n"
        "    a: [10.0.0.0/8]\n"
        "    b: [10.1.0.0/16, 10.0.0.0/8]\n"
    )
    found = problems(tmp_path, text)
    assert [(p.line, p.path) for p in found] == [(21, "geo.nets.b[1]")]
    assert "10.0.0.0/8" in found[0].message
    # a network inside another label's carves it out: the more specific one wins, as in gdnsd
    nested = text.replace("b: [10.1.0.0/16, 10.0.0.0/8]", "b: [10.1.0.0/16]")
    load(load_text(tmp_path, nested))
    # inside one label, overlapping networks are refused: one of them says nothing
    same = text.replace("b: [10.1.0.0/16, 10.0.0.0/8]", "b: ['fd00::/8', 10.1.0.0/16, 10.1.2.0/24]")
    (p,) = problems(tmp_path, same)
    assert (p.line, p.path) == (21, "geo.nets.b[2]")
    assert "10.1.2.0/24 overlaps 10.1.0.0/16, listed for b too" in p.message
