"""Placing clients: a client address or ECS network → the location group of a steered name.

A :class:`Steering` holds every steered name's :class:`~dnsfailover.geo.steer.Rule` and one
:class:`~dnsfailover.geo.locate.Locator` (database + CIDR map) for them all.  `place` is
what the DNS server asks per query of a steered name: which group (by id, see
`dnsfailover.model.group_id`) the client is in, the leading bits of the client's address
that placement depends on (the ECS SCOPE of the answer), and why.

Every group `place` returns is one of the rule's `groups` (so the engine decided an answer
for it): a proximity ordering no grid point produced falls to the nearest known group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from dnsfailover.geo.locate import Address, Location, Locator, Network
from dnsfailover.geo.steer import Rule, groups, nearest_group, steer
from dnsfailover.model import group_id

_NOWHERE = Location(0)


class Placement(NamedTuple):
    """Where one client of one steered name goes."""

    group: str  # the location group's id (its ordered regions, comma-joined)
    scope: int  # leading bits of the client's address the placement depends on
    why: str


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

    def steers(self, name: str) -> bool:
        return name in self.rules

    def groups(self, name: str) -> tuple[str, ...]:
        """The ids of every group `name` can place a client in, default first."""
        return tuple(group_id(g) for g in self._groups[name])

    def locate(self, client: Address | Network) -> Location:
        return self.locator.locate(client) if self.locator is not None else _NOWHERE

    def place(self, name: str, client: Address | Network) -> Placement:
        """The group of `client` (an address, or an ECS network already truncated to the
        source limit) for steered `name`.

        :raises KeyError: if `name` is not steered.
        """
        rule = self.rules[name]
        where = self.locate(client)
        steered = steer(rule, where)
        order = steered.order
        why = steered.why
        if rule.by == "proximity" and where.net is None:
            known = self._groups[name]
            group = nearest_group(order, known)
            if group != order:
                why = f"{why}; nearest known group {group_id(group)}"
            order = group
        return Placement(group_id(order), where.prefix, why)
