"""Placing clients: a client address or ECS network → the location group of a steered name.

A :class:`Steering` holds every steered name's :class:`~dnsfailover.geo.steer.Rule` and one
:class:`~dnsfailover.geo.locate.Locator` (database + CIDR map) for them all.  `place` is
what the DNS server asks per query of a steered name: which group (by id, see
`dnsfailover.model.group_id`) the client is in, the leading bits of the client's address
that placement depends on (the ECS SCOPE of the answer), and why.

Every group `place` returns is one of the rule's `groups` (so the engine decided an answer
for it): a proximity ordering no grid point produced falls to the nearest known group.

`place` is on the query path, so it does not locate the client: each distinct rule is
compiled when the Steering is built into a table address → outcome (see `table.py`), and a
placement is one short bisect (or a cache hit).  Its scope is the widest network around the
client all of whose addresses get the same group (as gdnsd's plugin_geoip reports it), never
longer than `place_slowly`'s (the database network's length).  Building walks the whole
database (about 2 s for GeoLite2-Country: build off the event loop), so a Steering is
immutable and swapped whole: `reloaded` builds a new one when the database file changed,
leaving this one usable.  `place` never reads the locator, so closing the old Steering's
locator after the swap is safe; reloading that locator in place (`reload_if_changed`) does
not change tables already compiled.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from dnsfailover.geo.locate import Address, Location, Locator, Network
from dnsfailover.geo.steer import Rule, groups, placed
from dnsfailover.geo.table import Compiled, Placement, scan
from dnsfailover.model import group_id

__all__ = ["Placement", "Steering"]

_NOWHERE = Location(0)
_NETWORKS = (IPv4Network, IPv6Network)
_IPV4_IN_IPV6 = (0, 0xFFFF)  # the leading 96 bits of ::a.b.c.d and ::ffff:a.b.c.d


class Steering:
    """Every steered name's rule, and the locator they share.

    :param rules: absolute lower-case name → its rule.
    :param locator: the database and CIDR map; None places every client in the default
        group (with scope 0: the answer depends on no bit of the address).
    """

    def __init__(self, rules: Mapping[str, Rule], locator: Locator | None = None) -> None:
        self.rules = dict(rules)
        self.locator = locator
        self._groups = {name: groups(rule) for name, rule in self.rules.items()}
        found = scan(locator)
        by_rule: dict[Hashable, Compiled] = {}
        self._compiled: dict[str, Compiled] = {}
        for name, rule in self.rules.items():
            key = _rule_key(rule)
            compiled = by_rule.get(key)
            if compiled is None:
                compiled = by_rule[key] = Compiled(rule, self._groups[name], found)
            self._compiled[name] = compiled

    def steers(self, name: str) -> bool:
        return name in self.rules

    def table_of(self, name: str) -> Hashable:
        """What `name`'s placements depend on: names with equal rules share it, so a cache
        of placements keyed by it serves them all.

        :raises KeyError: if `name` is not steered.
        """
        return self._compiled[name]

    def groups(self, name: str) -> tuple[str, ...]:
        """The ids of every group `name` can place a client in, default first."""
        return tuple(group_id(g) for g in self._groups[name])

    def locate(self, client: Address | Network) -> Location:
        return self.locator.locate(client) if self.locator is not None else _NOWHERE

    def place(self, name: str, client: Address | Network) -> Placement:
        """The group of `client` (an address, or an ECS network already truncated to the
        source limit: placed by its first address) for steered `name`.

        :raises KeyError: if `name` is not steered.
        """
        address = client.network_address if isinstance(client, _NETWORKS) else client
        return self.place_value(name, 4 if type(address) is IPv4Address else 6, int(address))

    def place_value(self, name: str, version: int, value: int) -> Placement:
        """`place` for an address given as its IP version and integer value (the first
        address of an ECS network): what the DNS server's fast path calls, never building
        an address object.

        :raises KeyError: if `name` is not steered.
        """
        compiled = self._compiled[name]
        if compiled.everywhere is not None:
            return compiled.everywhere
        if version == 4:
            return compiled.v4.place(value)
        if value >> 32 in _IPV4_IN_IPV6:  # ::a.b.c.d and ::ffff:a.b.c.d are placed as IPv4
            found = compiled.v4.place(value & 0xFFFFFFFF)
            return found._replace(scope=found.scope + 96)
        return compiled.v6.place(value)

    def place_slowly(self, name: str, client: Address | Network) -> Placement:
        """`place` the straightforward way: locate the client, steer it by the rule.  Its
        scope is the database network's (or map entry's) length: often longer than
        `place`'s.  For explaining, and to check the compiled tables against."""
        where = self.locate(client)
        steered = placed(self.rules[name], where, self._groups[name])
        return Placement(group_id(steered.order), where.prefix, steered.why)

    def reloaded(self) -> Steering | None:
        """A new Steering over the database file when it changed since this one was built,
        else None; this one stays valid (swap the new one in whole).

        :raises DatabaseError: naming the file and why, when the new file does not open.
        """
        if self.locator is None:
            return None
        fresh = self.locator.reopened()
        if fresh is None:
            return None
        return Steering(self.rules, fresh)


def _rule_key(rule: Rule) -> Hashable:
    """What makes two rules place every client alike (rules hold dicts: not hashable)."""
    return (
        rule.by,
        rule.default,
        tuple(sorted(rule.map.items())),
        tuple(sorted(rule.nets.items())),
        rule.regions,
    )
