"""An explicit CIDR map (like gdnsd's `nets`): client networks → a label, winning over the
location database.

Nested networks are allowed and the more specific one wins, as in gdnsd: `10.0.0.0/8: office`
with `10.1.0.0/16: lab` sends 10.1.2.3 to `lab` and 10.2.3.4 to `office`.  The same network
twice (however it is spelt: `10.0.0.0/8` and `::ffff:10.0.0.0/104` are one network) is an
error, and so is a network with host bits set (`10.0.0.1/8`): both are typos more often
than intent.

Longest-prefix match without scanning the entries: one dict per prefix length in use, keyed
by the network's leading bits, tried from the longest length down, but only lengths up to
the split depth below (an entry that contains the address makes every shorter network
around it contain an entry), so an address far from every entry costs the binary search
of at most 8 probes and no table probe.

`depth` answers the other question an ECS reply needs: how many leading bits of an address
the answer really depends on.  A match of length m (a map entry, or the database's network)
holds for the whole /m around the address *unless* a more specific map entry sits inside
that /m without containing the address: then the answer changes within the /m, and the
scope must be one bit longer than the deepest network around the address that contains
such an entry.  Every strict ancestor network of every entry is kept per length for that,
and the deepest one is found by binary search over the lengths.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from dnsfailover.geo.errors import NetsError

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def unmapped(network: Network) -> Network:
    """An IPv4-mapped or IPv4-compatible IPv6 network (::ffff:a.b.c.d/96 or ::a.b.c.d/96, or
    longer) as the IPv4 network it is: such clients are located as IPv4 ones."""
    if network.version == 6 and network.prefixlen >= 96:
        value = int(network.network_address)
        if value >> 32 in (0, 0xFFFF):
            return IPv4Network((value & 0xFFFFFFFF, network.prefixlen - 96))
    return network


@dataclass(frozen=True, slots=True)
class NetMatch:
    """The map entry an address falls in."""

    network: Network
    label: str


class _Family:
    """The entries of one address family, by prefix length."""

    __slots__ = ("ancestors", "bits", "lengths", "tables")

    def __init__(self, bits: int, entries: Mapping[tuple[int, int], str]) -> None:
        self.bits = bits
        self.tables: dict[int, dict[int, str]] = {}
        self.ancestors: dict[int, set[int]] = {}
        for (length, key), label in entries.items():
            self.tables.setdefault(length, {})[key] = label
            for k in range(length):
                self.ancestors.setdefault(k, set()).add(key >> (length - k))
        self.lengths = tuple(sorted(self.tables, reverse=True))

    def split(self, value: int) -> int:
        """One more than the longest k whose /k around the address strictly contains an
        entry (0 if none does).  That holds for every k up to some K and for none past it (a
        /j around the address, j < k, contains that entry too), and every length below the
        longest entry's has ancestors: binary search for K, in at most 8 probes."""
        bits, ancestors = self.bits, self.ancestors
        lo, hi = 0, len(ancestors) - 1  # ancestors has every length 0 .. longest - 1
        if hi < 0 or (value >> bits) not in ancestors[0]:
            return 0
        while lo < hi:  # invariant: the /lo around the address contains an entry
            mid = (lo + hi + 1) // 2
            if (value >> (bits - mid)) in ancestors[mid]:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def find(self, value: int) -> tuple[int, str | None, int]:
        """(matched length or -1, its label or None, `split`) for one address."""
        split = self.split(value)
        bits, tables = self.bits, self.tables
        # an entry of length m that contains the address makes every /k, k < m, around it
        # contain an entry: m <= split, so longer lengths need no probe
        for length in self.lengths:
            if length <= split:
                label = tables[length].get(value >> (bits - length))
                if label is not None:
                    return length, label, split
        return -1, None, split


class NetMap:
    """CIDR → label, longest prefix wins; immutable once built.

    :param entries: CIDR text (or network) → label; an iterable of pairs is taken too, so a
        config can report the same network listed twice.
    :raises NetsError: naming the entry, for a CIDR that does not parse, has host bits set,
        repeats a network, or has an empty label.
    """

    def __init__(
        self, entries: Mapping[str, str] | Iterable[tuple[str | Network, str]] = ()
    ) -> None:
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        by_family: dict[int, dict[tuple[int, int], str]] = {4: {}, 6: {}}
        spelt: dict[Network, str] = {}
        for raw, label in pairs:
            try:
                parsed = raw if not isinstance(raw, str) else ipaddress.ip_network(raw.strip())
            except ValueError as e:
                raise NetsError(f"nets: {raw!r} is not a CIDR network: {e}") from e
            if not label:
                raise NetsError(f"nets: {raw} has an empty label")
            network = unmapped(parsed)
            if network in spelt:
                raise NetsError(f"nets: {raw} repeats {spelt[network]} (one network, two entries)")
            spelt[network] = str(raw)
            key = int(network.network_address) >> (network.max_prefixlen - network.prefixlen)
            by_family[network.version][(network.prefixlen, key)] = label
        self._v4 = _Family(32, by_family[4])
        self._v6 = _Family(128, by_family[6])
        self._networks = tuple(spelt)

    def __len__(self) -> int:
        return len(self._networks)

    @property
    def networks(self) -> tuple[Network, ...]:
        return self._networks

    def find(self, address: Address) -> tuple[int, str | None, int]:
        """The fast form of `lookup` and `depth` at once: (the matched entry's length or
        -1, its label or None, the length past which no entry splits the network around
        `address`); an answer decided by a /base holds for the /max(base, split)."""
        return (self._v4 if address.version == 4 else self._v6).find(int(address))

    def lookup(self, address: Address) -> NetMatch | None:
        """The most specific entry that contains `address` (pass an IPv4-mapped IPv6 address
        as its IPv4 address: the map holds mapped networks as IPv4 ones)."""
        length, label, _ = self.find(address)
        if label is None:
            return None
        if address.version == 4:
            return NetMatch(IPv4Network((int(address), length), strict=False), label)
        return NetMatch(IPv6Network((int(address), length), strict=False), label)

    def depth(self, address: Address, base: int) -> int:
        """The leading bits of `address` an answer depends on, when what decided it (an entry
        of this map, or the location database) holds for the whole /`base` around it:
        longer than `base` when an entry of this map splits that network."""
        return max(base, self.find(address)[2])
