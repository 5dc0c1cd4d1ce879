"""Pure steering: a rule and a located client → the ordered regions (or tiers) to try.

A :class:`Rule` steers `by` one of:

- ``country`` / ``continent`` / ``subnet``: a map from an ISO country code, a continent code
  or a CIDR-map label to an ordered list of regions, with a `default` list for every client
  the map does not name (no location, or an unmapped one);
- ``proximity``: regions carry coordinates; the client's come from the database; regions are
  ordered by great-circle (haversine) distance, scaled by the region's bias as Route 53
  geoproximity does: ``biased = distance * (1 - bias / 100)`` with bias in -99..99, so a
  positive bias draws clients from farther away (bias 50 halves the distance) and a negative
  one pushes them off.  Ties keep the configured order of the regions.  A client without
  coordinates gets the `default` list (the regions in configured order when none is given).

Whatever the rule, a client the CIDR map labelled is steered by the label (the map wins over
the database, see `locate.py`): a ``subnet`` rule maps labels; any other rule may map labels
in `nets`, and a labelled client whose label it does not map gets the default.

The ordered list is the client's *location group*: clients with the same list share a group,
so answers can be kept per (name, type, group), not per client.  The engine answers each
group from the first healthy region of its list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dnsfailover.geo import codes
from dnsfailover.geo.errors import SteeringError
from dnsfailover.geo.locate import Location
from dnsfailover.model import group_id

BY = ("country", "continent", "subnet", "proximity")
EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
MAX_BIAS = 99.0


@dataclass(frozen=True, slots=True)
class Region:
    """A region (or tier) proximity steering can send clients to."""

    name: str
    coordinates: tuple[float, float] | None = None  # (latitude, longitude) in degrees
    bias: float = 0.0  # -99..99: positive draws clients from farther away


@dataclass(frozen=True, slots=True)
class Steered:
    """A client's location group (its ordered regions) and why it is that one."""

    order: tuple[str, ...]
    why: str


@dataclass(frozen=True, slots=True)
class Rule:
    """How one failover record steers; build it with :func:`rule` to have it validated."""

    by: str
    default: tuple[str, ...]
    map: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    nets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    regions: tuple[Region, ...] = ()


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in km between two (latitude, longitude) points in degrees."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def biased_km(region: Region, client: tuple[float, float]) -> float:
    """The distance proximity steering orders by: the great-circle distance * (1 - bias/100)."""
    if region.coordinates is None:
        raise SteeringError(f"region {region.name} has no coordinates")
    return haversine_km(region.coordinates, client) * (1 - region.bias / 100)


def steer(rule: Rule, where: Location) -> Steered:
    """The ordered regions to try for a client at `where`, and why."""
    if where.net is not None:
        table = rule.map if rule.by == "subnet" else rule.nets
        order = table.get(where.net)
        if order is not None:
            return Steered(order, f"net {where.net}")
        return Steered(rule.default, f"default: net {where.net} is not mapped")
    if rule.by == "subnet":
        return Steered(rule.default, "default: no net matched")
    if rule.by == "proximity":
        return _proximity(rule, where)
    key = where.country if rule.by == "country" else where.continent
    if key is None:
        return Steered(rule.default, f"default: no {rule.by} known")
    order = rule.map.get(key)
    if order is None:
        return Steered(rule.default, f"default: {rule.by} {key} is not mapped")
    return Steered(order, f"{rule.by} {key}")


def groups(rule: Rule) -> tuple[tuple[str, ...], ...]:
    """Every location group the rule can put a client in, default first, each once: a map
    rule's lists in configured order; for proximity, the default and then every ordering
    the regions take for a client somewhere on a `PROXIMITY_GRID_DEG` grid over the globe
    (see `proximity_orders`)."""
    if rule.by == "proximity":
        return tuple(dict.fromkeys((rule.default, *proximity_orders(rule), *rule.nets.values())))
    seen = dict.fromkeys((rule.default, *rule.map.values(), *rule.nets.values()))
    return tuple(seen)


PROXIMITY_GRID_DEG = 2.0


def proximity_orders(rule: Rule) -> tuple[tuple[str, ...], ...]:
    """The orderings of a proximity rule's regions seen from the centres of a
    `PROXIMITY_GRID_DEG` grid of latitude and longitude, most common first (ties in the
    order first met).  A client between grid centres whose own ordering is not among them
    is placed in the group sharing its longest leading run of regions (`nearest_group`)."""
    counts: dict[tuple[str, ...], int] = {}
    step = PROXIMITY_GRID_DEG
    lat = -90 + step / 2
    while lat < 90:
        lon = -180 + step / 2
        while lon < 180:
            order = _proximity(rule, _At((lat, lon))).order
            counts[order] = counts.get(order, 0) + 1
            lon += step
        lat += step
    return tuple(sorted(counts, key=lambda o: -counts[o]))


def placed(rule: Rule, where: Location, known: Sequence[tuple[str, ...]]) -> Steered:
    """`steer`, with a proximity ordering none of the `known` groups has (a client between
    the grid's points) moved to the nearest known group, and why saying so."""
    steered = steer(rule, where)
    if rule.by != "proximity" or where.net is not None:
        return steered
    group = nearest_group(steered.order, known)
    if group == steered.order:
        return steered
    return Steered(group, f"{steered.why}; nearest known group {group_id(group)}")


def nearest_group(order: tuple[str, ...], known: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """Among `known` groups, the one sharing the longest leading run of regions with
    `order` (the first such in `known` order); `order` itself when it is known."""
    best: tuple[str, ...] | None = None
    best_run = -1
    for group in known:
        if group == order:
            return group
        run = 0
        for a, b in zip(group, order, strict=False):
            if a != b:
                break
            run += 1
        if run > best_run:
            best, best_run = group, run
    return best if best is not None else order


class _At:
    """Just the coordinates of a location (what proximity ordering reads)."""

    __slots__ = ("coordinates",)

    def __init__(self, coordinates: tuple[float, float]) -> None:
        self.coordinates: tuple[float, float] | None = coordinates


def _proximity(rule: Rule, where: Location | _At) -> Steered:
    client = where.coordinates
    if client is None:
        return Steered(rule.default, "default: no coordinates known")
    ranked = sorted(
        ((biased_km(r, client), i, r.name) for i, r in enumerate(rule.regions)),
    )
    nearest_km, _, nearest = ranked[0]
    order = tuple(name for _, _, name in ranked)
    return Steered(
        order,
        f"proximity from ({client[0]:.2f}, {client[1]:.2f}): {nearest} at {nearest_km:.0f} km",
    )


def _order(what: str, names: Iterable[str], known: frozenset[str] | None) -> tuple[str, ...]:
    order = tuple(names)
    if not order:
        raise SteeringError(f"{what}: the list of regions is empty")
    seen: set[str] = set()
    for name in order:
        if name in seen:
            raise SteeringError(f"{what}: region {name} is listed twice")
        seen.add(name)
        if known is not None and name not in known:
            raise SteeringError(f"{what}: unknown region {name}")
    return order


def rule(
    by: str,
    *,
    map: Mapping[str, Iterable[str]] | None = None,
    default: Iterable[str] | None = None,
    nets: Mapping[str, Iterable[str]] | None = None,
    regions: Iterable[Region] = (),
    known: Iterable[str] | None = None,
    labels: Iterable[str] | None = None,
) -> Rule:
    """A validated :class:`Rule`.

    :param by: country, continent, subnet or proximity.
    :param map: code or CIDR-map label → ordered regions (not for proximity).
    :param default: the regions for clients the rule does not place (required, except for
        proximity, where it defaults to the regions in configured order).
    :param nets: CIDR-map label → ordered regions, for a country, continent or proximity rule.
    :param regions: proximity's regions, each with coordinates and an optional bias.
    :param known: the region names that exist, when the caller knows them.
    :param labels: the CIDR map's labels, when the caller knows them.
    :raises UnknownCodeError: naming an unknown country or continent code.
    :raises SteeringError: naming what else is wrong.
    """
    if by not in BY:
        raise SteeringError(f"by: {by!r} is not one of {', '.join(BY)}")
    known_set = frozenset(known) if known is not None else None
    label_set = frozenset(labels) if labels is not None else None
    regions = tuple(regions)
    if by == "proximity":
        if map:
            raise SteeringError("by: proximity orders by distance and takes no map")
        _proximity_regions(regions, known_set)
        default = default if default is not None else (r.name for r in regions)
    elif regions:
        raise SteeringError(f"by: {by} takes no regions with coordinates (only proximity)")
    if default is None:
        raise SteeringError(f"by: {by} needs a default list of regions")
    if by == "subnet" and nets:
        raise SteeringError("by: subnet maps the CIDR map's labels in map, not nets")
    checked: dict[str, tuple[str, ...]] = {}
    for key, names in (map or {}).items():
        code = _key(by, key, label_set)
        if code in checked:
            raise SteeringError(f"map: {key} is listed twice")
        checked[code] = _order(f"map: {key}", names, known_set)
    checked_nets = {
        _key("subnet", label, label_set): _order(f"nets: {label}", names, known_set)
        for label, names in (nets or {}).items()
    }
    return Rule(by, _order("default", default, known_set), checked, checked_nets, regions)


def _key(by: str, key: str, labels: frozenset[str] | None) -> str:
    if by == "country":
        return codes.country(key)
    if by == "continent":
        return codes.continent(key)
    if labels is not None and key not in labels:
        raise SteeringError(f"map: {key} is not a label of the CIDR map")
    return key


def _proximity_regions(regions: tuple[Region, ...], known: frozenset[str] | None) -> None:
    if not regions:
        raise SteeringError("by: proximity needs regions with coordinates")
    _order("regions", (r.name for r in regions), known)
    for r in regions:
        if r.coordinates is None:
            raise SteeringError(f"region {r.name} has no coordinates (by: proximity needs them)")
        lat, lon = r.coordinates
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise SteeringError(f"region {r.name}: coordinates ({lat}, {lon}) are off the globe")
        if not -MAX_BIAS <= r.bias <= MAX_BIAS:
            raise SteeringError(f"region {r.name}: bias {r.bias} is outside -99..99")
