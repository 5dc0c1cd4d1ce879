"""Small real MaxMind-format databases for the geo tests and bench: written by `mmdb-writer`,
read by the same `maxminddb` reader users run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]

# Real places (latitude, longitude): the regions and clients of the proximity tests.
FRANKFURT = (50.1109, 8.6821)
SYDNEY = (-33.8688, 151.2093)
VIRGINIA = (38.9445, -77.4558)  # Ashburn, us-east-1
LONDON = (51.5074, -0.1278)
TOKYO = (35.6762, 139.6503)
NEW_YORK = (40.7128, -74.0060)
SINGAPORE = (1.3521, 103.8198)


def city(country: str, continent: str, where: tuple[float, float]) -> dict[str, Any]:
    """A record in the GeoLite2-City layout."""
    return {
        "continent": {"code": continent, "names": {"en": continent}},
        "country": {"iso_code": country, "names": {"en": country}},
        "location": {"latitude": where[0], "longitude": where[1], "accuracy_radius": 20},
    }


def country(code: str, continent: str) -> dict[str, Any]:
    """A record in the GeoLite2-Country layout."""
    return {"continent": {"code": continent}, "country": {"iso_code": code}}


def write_mmdb(
    path: Path,
    networks: Mapping[str, dict[str, Any]],
    *,
    ip_version: int = 6,
    database_type: str = "GeoLite2-City",
) -> Path:
    """Write `networks` (CIDR → record) to `path` atomically (as a database update would be
    installed: a new file renamed over the old).  Shorter networks are written first, so a
    longer one nested inside splits it."""
    writer = MMDBWriter(
        ip_version=ip_version,
        database_type=database_type,
        ipv4_compatible=ip_version == 6,
        description="dnsfailover test database",
    )
    for cidr in sorted(networks, key=lambda c: ip_network(c).prefixlen):
        writer.insert_network(IPSet([cidr]), networks[cidr])
    tmp = path.with_name(path.name + ".tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)
    return path
