"""Steered names in the server: their per-group answers in a snapshot, and where a
query's client is placed.

A `model.SteeredSet` becomes a :class:`~dnsfailover.server.lookup.SteeredRRs`: per group
its RRs (sharing the RRs of the zone's default answer where the values are the same), its
rotor when weighted, and its target when a CNAME.  A publish rebuilds only the steered sets
that changed and, within them, only the groups that changed.

A :class:`Where` is one query's client for the look-up (a `lookup.Placer`): the steered
sets its answer meets are answered from the client's group, as the `Steering` places it,
and the placement's prefix becomes the ECS SCOPE of the reply.  :class:`Pinned` places
every client in one group: the fast path makes its per-group templates with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_address

from dnslib import QTYPE, RR

from dnsfailover.geo.ecs import ClientSubnet, SourceLimits
from dnsfailover.geo.locate import Address, Network
from dnsfailover.geo.steering import Steering
from dnsfailover.model import Key, SteeredSet, ZoneContent
from dnsfailover.rdata import Labels, ZoneBuildError, qtype_code
from dnsfailover.server.lookup import SteeredRRs, ZoneData
from dnsfailover.server.rrsets import SetKey, build_managed, labels_of, rotation_weights
from dnsfailover.server.weighted import Rotor

_CNAME = int(QTYPE.CNAME)
DEFAULT_LIMITS = SourceLimits()
"""The source prefix limits a server uses unless told others (/24 and /56)."""


def ecs_client(option: bytes, source: int, limits: SourceLimits) -> tuple[int, int]:
    """The IP version and first address of the network a query's ECS option (whole, as
    `replay.split_query` found it well-formed, SOURCE PREFIX-LENGTH `source` > 0) is placed
    by: truncated to the source limit, as `SourceLimits.lookup` does, without building an
    address object (the fast path's cost)."""
    if option[5] == 1:
        host = 32 - min(source, limits.v4)
        value = int.from_bytes(option[8:].ljust(4, b"\0"))
        return 4, value >> host << host
    host = 128 - min(source, limits.v6)
    value = int.from_bytes(option[8:].ljust(16, b"\0"))
    return 6, value >> host << host


def ecs_scope(option: bytes, depends_on: int, limits: SourceLimits) -> int:
    """The SCOPE echoed for a steered answer to a query with this ECS option (b"": none):
    what `SourceLimits.reply_scope` gives."""
    if not option or not option[6]:
        return 0  # no ECS, or SOURCE PREFIX-LENGTH 0: the client asked not to be located
    most = limits.v4 if option[5] == 1 else limits.v6
    return max(0, min(depends_on, most))


def build_steered(
    st: SteeredSet,
    origin: Labels,
    default: tuple[RR, ...] = (),
    before: SteeredSet | None = None,
    served: SteeredRRs | None = None,
) -> tuple[SetKey, SteeredRRs]:
    """A steered set's groups, each built as a managed set is (weights and all) from its
    previous version (`before`, served as `served`) when there is one, else sharing the
    RRs of `default` (what the zone serves for the key's plain set) where it can."""
    at = set_key((st.name, st.rtype))
    groups: dict[str, tuple[RR, ...]] = {}
    rotors: dict[str, Rotor] = {}
    targets: dict[str, Labels] = {}
    for group, rs in st.answers.items():
        if (rs.name, rs.rtype) != (st.name, st.rtype):
            raise ZoneBuildError(
                f"{st.name} {st.rtype}: group {group} answers for {rs.name} {rs.rtype}"
            )
        old = before.answers.get(group) if before is not None else None
        if served is not None and group in served.groups and (old is rs or old == rs):
            # unchanged: share what is served (a weighted group's rotor keeps its turn)
            groups[group] = served.groups[group]
            if (rotor := served.rotors.get(group)) is not None:
                rotors[group] = rotor
            if (target := served.targets.get(group)) is not None:
                targets[group] = target
            continue
        if served is not None and old is not None:
            _, rrs, kept = build_managed(rs, origin, {at: served.groups.get(group, ())}, old)
        else:
            _, rrs, kept = build_managed(rs, origin, {at: default})
        groups[group] = rrs
        if (w := rotation_weights(rs, at[1], kept)) is not None and rrs:
            rotors[group] = Rotor(rrs, w)
        if at[1] == _CNAME and rrs:
            targets[group] = tuple(label.lower() for label in rrs[0].rdata.label.label)
    return at, SteeredRRs(st.name, groups, rotors, targets)


def set_key(key: Key) -> SetKey:
    return (labels_of(key[0]), qtype_code(key[1]))


def check_steered(key: Key, st: SteeredSet, content: ZoneContent) -> None:
    """A steered set must be for its key, and its key a managed set (the default answer)."""
    if (st.name, st.rtype) != key:
        raise ZoneBuildError(f"{key[0]} {key[1]}: steered set is for {st.name} {st.rtype}")
    if key not in content.managed:
        raise ZoneBuildError(f"{st.name} {st.rtype}: steered but not a managed set")
    if st.default not in st.answers:
        raise ZoneBuildError(f"{st.name} {st.rtype}: no answer for default group {st.default}")


def update_steered(
    data: ZoneData,
    old: ZoneContent,
    new: ZoneContent,
    rrsets: Mapping[SetKey, tuple[RR, ...]],
) -> Mapping[SetKey, SteeredRRs]:
    """`data.steered` for `new`: only the steered sets that changed are built (each group
    from its previous version); `rrsets`: the zone's sets for `new` (the default answers)."""
    if new.steered is old.steered:
        return data.steered
    before = old.steered
    changed = [
        (key, st) for key, st in new.steered.items() if (o := before.get(key)) is not st and o != st
    ]
    gone = [key for key in before if key not in new.steered]
    if not changed and not gone:
        return data.steered
    steered = dict(data.steered)
    for key in gone:
        steered.pop(set_key(key), None)
    for key, st in changed:
        check_steered(key, st, new)
        at = set_key(key)
        if at[0] not in data.managed_names or at[0] in data.cuts:
            continue  # occluded by a delegation, or answered by its referral
        _, rrs = build_steered(
            st, data.origin, rrsets.get(at, ()), before.get(key), steered.get(at)
        )
        steered[at] = rrs
    return steered


class Where:
    """Where one query's client is, for the steered names its answer meets (a `Placer`).

    The client is the query's ECS network truncated to the source limit when it carries one
    with SOURCE PREFIX-LENGTH > 0 (`use`), else its source address.  Every placement is
    recorded: the ECS SCOPE of the reply is the deepest one's (`scope`), and the fast path
    keeps a template per group only for answers that met one steered name.  ``unplaced``:
    a steered name was met but the client has no address to place (default answer).
    """

    __slots__ = ("_address", "_client", "depends_on", "limits", "placed", "steering", "unplaced")

    def __init__(
        self, steering: Steering, address: str | None, limits: SourceLimits = DEFAULT_LIMITS
    ) -> None:
        self.steering = steering
        self.limits = limits
        self._address = address
        self._client: Address | Network | None = None
        self.placed: list[tuple[str, str]] = []  # (name, group) in the order met
        self.depends_on = 0
        self.unplaced = False

    def use(self, subnet: ClientSubnet | None) -> None:
        """Place by the query's ECS network (when it asks to be located)."""
        if subnet is not None and subnet.locates:
            self._client = self.limits.lookup(subnet)

    def client(self) -> Address | Network | None:
        if self._client is None and self._address:
            try:
                self._client = ip_address(self._address)
            except ValueError:
                return None
        return self._client

    def place(self, name: str) -> str | None:
        if not self.steering.steers(name):
            return None
        client = self.client()
        if client is None:
            self.unplaced = True
            return None
        placement = self.steering.place(name, client)
        self.placed.append((name, placement.group))
        self.depends_on = max(self.depends_on, placement.scope)
        return placement.group

    def scope(self, subnet: ClientSubnet) -> int:
        """The SCOPE PREFIX-LENGTH of the reply's ECS: 0 unless the answer was steered."""
        return self.limits.reply_scope(subnet, self.depends_on) if self.placed else 0


class Pinned(Where):
    """Places the client of steered `name` in `group` whatever its address (for the fast
    path's per-group templates); any other steered name met leaves it ``unplaced``."""

    __slots__ = ("_group", "_name")

    def __init__(self, steering: Steering, name: str, group: str) -> None:
        super().__init__(steering, None)
        self._name, self._group = name, group

    def place(self, name: str) -> str | None:
        if not self.steering.steers(name):
            return None
        if name != self._name:
            self.unplaced = True
            return None
        self.placed.append((name, self._group))
        return self._group
