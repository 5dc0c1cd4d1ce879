"""The `geo:` section and a failover record's `steering:` (see `dnsfailover.geo`).

`geo:` says where clients are: a MaxMind-format database (`database`, relative to the config
file) and/or a CIDR map (`nets`: label → networks) that wins over it, plus the EDNS Client
Subnet source limits.  `steering:` on an active-passive record orders its tiers (its
regions) per client: `by` country, continent, a `nets` label (subnet) or proximity (tiers
carry `coordinates` and an optional `bias`).  The field rules live here; the rules that need
the whole config (known tiers and labels, codes, a database that opens) are in
`config/geocheck.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr

from dnsfailover.fields import Model
from dnsfailover.geo.ecs import DEFAULT_MAX_V4, DEFAULT_MAX_V6

RegionList = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]


class EcsConfig(Model):
    """How much of a client's subnet (RFC 7871) is used at most, per family."""

    max_source_v4: Annotated[int, Field(ge=0, le=32)] = DEFAULT_MAX_V4
    max_source_v6: Annotated[int, Field(ge=0, le=128)] = DEFAULT_MAX_V6


class GeoConfig(Model):
    """Where clients are: a database, a CIDR map that wins over it, and ECS limits."""

    database: Annotated[str, Field(min_length=1)] | None = None
    nets: dict[Annotated[str, Field(min_length=1)], tuple[str, ...]] = Field(default_factory=dict)
    ecs: EcsConfig = Field(default_factory=EcsConfig)
    _path: Path | None = PrivateAttr(default=None)

    def resolve(self, base: Path | None) -> None:
        """Resolve `database` against the config file's directory (the loader calls it)."""
        if self.database is None:
            self._path = None
            return
        path = Path(self.database).expanduser()
        self._path = base / path if not path.is_absolute() and base is not None else path

    @property
    def database_path(self) -> Path | None:
        if self.database is None:
            return None
        return self._path if self._path is not None else Path(self.database).expanduser()


class SteeringConfig(Model):
    """How one active-passive record orders its tiers per client (its location groups).

    `map`: a country code, continent code (`by: country | continent`) or a `geo.nets` label
    (`by: subnet`) → the tiers to try, in order.  `default`: the tiers for every client the
    map does not place (required, except for proximity, where it is every tier in config
    order).  `nets`: `geo.nets` label → tiers, for the other rules (a labelled client wins
    over its database location).
    """

    by: Literal["country", "continent", "subnet", "proximity"]
    map: dict[str, RegionList] = Field(default_factory=dict)
    default: RegionList | None = None
    nets: dict[str, RegionList] = Field(default_factory=dict)


Coordinates = tuple[
    Annotated[float, Field(ge=-90, le=90)], Annotated[float, Field(ge=-180, le=180)]
]
Bias = Annotated[float, Field(ge=-99, le=99)]
