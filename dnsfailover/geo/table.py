"""Compiled placement: per steering rule, a sorted table address → location group, so placing
a client is a short bisect on an int instead of a database lookup, a CIDR-map probe and the
rule.

Built the way gdnsd's plugin_geoip builds its tree, in two steps:

1. :func:`scan` (once per :class:`~dnsfailover.geo.locate.Locator` and database file,
   cached): the database's search tree is walked from the file's bytes, as the reader walks
   it per lookup, into runs of addresses with one *place* each (a distinct
   :class:`~dnsfailover.geo.locate.Location` without its prefix), per address family,
   covering the whole space (no data: the empty location).  It mirrors `Locator.locate`
   exactly: the CIDR map wins over the database; an IPv6 database's IPv4 subtree (::/96)
   answers IPv4 lookups, and every IPv6 range the file aliases to it (MaxMind's files alias
   6to4 and Teredo) gets its runs; ::/96 and ::ffff:0:0/96 are placed as the IPv4 addresses
   they hold, so IPv6 runs only mark them.  Walking the tree costs ~1.3 s for
   GeoLite2-Country (1.5 M nodes) and ~4.5 s for GeoLite2-City IPv4 (3.7 M nodes) on one
   core; iterating the reader instead costs 5 s for the country file before any work.
2. :class:`Compiled` (once per distinct rule): each place is steered once by `steer`, the
   function the straightforward path uses, so placements are the same; runs with the same
   outcome are merged, and every run knows the bounds of the maximal stretch of addresses
   that get its *group*.  A client's ECS scope is the shortest prefix whose network around
   it lies inside that stretch: the widest network whose addresses all get the same answer
   (what gdnsd returns as SCOPE).  A first-level index on the leading 16 bits narrows each
   bisect to the runs of one /16, and recent placements are cached per family.
"""

from __future__ import annotations

import mmap
import weakref
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

import maxminddb
from maxminddb import InvalidDatabaseError

from dnsfailover.geo.errors import DatabaseError
from dnsfailover.geo.locate import Location, Locator, location_of
from dnsfailover.geo.nets import NetMap
from dnsfailover.geo.steer import Rule, placed
from dnsfailover.model import group_id

V4_BITS = 32
V6_BITS = 128
V4_MAX = (1 << V4_BITS) - 1
V6_MAX = (1 << V6_BITS) - 1
MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses
NOWHERE = Location(0)
IPV4 = Location(-1)  # the place of ::/96 and ::ffff:0:0/96 in IPv6 runs: placed as IPv4


class Runs(NamedTuple):
    """Runs covering one family's address space: run i is starts[i] .. starts[i+1] - 1."""

    starts: Sequence[int]
    values: Sequence[int]


MARK = Runs([0], [1])  # one run of IPV4


def _ipv4_marked(v6: Runs) -> Runs:
    """IPv6 runs with ::/96 and ::ffff:0:0/96 one run each of IPV4: `Locator.locate` places
    their addresses as the IPv4 addresses they hold (map included), from the IPv4 runs, and
    no IPv6 stretch may span them (nor does gdnsd's)."""
    return _splice(_splice(v6, MAPPED, MAPPED | V4_MAX, MARK, 0), 0, V4_MAX, MARK, 0)


class Scan(NamedTuple):
    """What a locator says of every address: per family, runs of place indexes."""

    places: tuple[Location, ...]  # index 0 is NOWHERE, 1 is IPV4
    v4: Runs
    v6: Runs


class _Places:
    """Interns locations to small ints."""

    def __init__(self) -> None:
        self.index: dict[Location, int] = {NOWHERE: 0, IPV4: 1}

    def __call__(self, where: Location) -> int:
        found = self.index.get(where)
        if found is None:
            found = self.index[where] = len(self.index)
        return found

    def all(self) -> tuple[Location, ...]:
        return tuple(self.index)


def _empty(like: Sequence[int]) -> MutableSequence[int]:
    """An empty sequence of the kind of `like`: IPv4 starts are kept in arrays (4 bytes
    each, not a pointer and an int object), IPv6 ones in lists (they do not fit 64 bits)."""
    return array("I") if isinstance(like, array) else []


def _merged(starts: Iterable[int], values: Iterable[int], compact: bool) -> Runs:
    """Runs with adjacent equal values joined; starts in an array when `compact`."""
    out_s: MutableSequence[int] = array("I") if compact else []
    out_v = array("I")
    last = -1
    for s, v in zip(starts, values, strict=True):
        if v != last:
            out_s.append(s)
            out_v.append(v)
            last = v
    return Runs(out_s, out_v)


def _overlay(base: Runs, top: Runs) -> Runs:
    """`top` where its value is not 0, else `base` (both cover the same space): base's runs
    are copied a stretch at a time, so a small map over a large database costs little."""
    if not any(top.values):
        return base
    starts = _empty(base.starts)
    values = array("I")
    n, m = len(base.starts), len(top.starts)
    for j in range(m):
        first, value = top.starts[j], top.values[j]
        if value:
            if not values or values[-1] != value:
                starts.append(first)
                values.append(value)
            continue
        i = bisect_right(base.starts, first) - 1
        k = bisect_left(base.starts, top.starts[j + 1]) if j + 1 < m else n
        if not values or values[-1] != base.values[i]:
            starts.append(first)
            values.append(base.values[i])
        if i + 1 < k:  # base's runs are merged: the next differs from values[-1]
            starts += base.starts[i + 1 : k]
            values += array("I", base.values[i + 1 : k])
    return Runs(starts, values)


def _splice(runs: Runs, first: int, last: int, inner: Runs, shift: int) -> Runs:
    """`runs` with first..last replaced by `inner` (runs of a smaller space) shifted left by
    `shift` bits and added to `first`."""
    i = bisect_right(runs.starts, first) - 1
    k = bisect_right(runs.starts, last + 1) - 1
    keep = i + 1 if runs.starts[i] < first else i
    starts, values = list(runs.starts[:keep]), list(runs.values[:keep])
    starts += [first + (s << shift) for s in inner.starts]
    values += list(inner.values)
    tail = last + 1
    if tail <= V6_MAX:
        starts.append(tail)
        values.append(runs.values[k])
        starts += runs.starts[k + 1 :]
        values += runs.values[k + 1 :]
    return _merged(starts, values, False)


def _nets_runs(nets: NetMap, version: int, intern: _Places) -> Runs:
    """The map's networks of one family as runs of label places (0 where no entry is)."""
    bounds: set[int] = {0}
    top = V4_MAX if version == 4 else V6_MAX
    for network in nets.networks:
        if network.version == version:
            first = int(network.network_address)
            bounds.add(first)
            if first + network.num_addresses <= top:
                bounds.add(first + network.num_addresses)
    starts = sorted(bounds)
    values = []
    for s in starts:
        address = IPv4Address(s) if version == 4 else IPv6Address(s)
        _, label, _ = nets.find(address)
        values.append(intern(Location(0, net=label)) if label is not None else 0)
    return _merged(starts, values, version == 4)


def _nodes(data: mmap.mmap, record_size: int) -> Callable[[int], tuple[int, int]]:
    """Reads a search-tree node's (left, right) records (MaxMind DB format 2.0)."""
    if record_size == 24:

        def read24(node: int) -> tuple[int, int]:
            at = node * 6
            both = int.from_bytes(data[at : at + 6], "big")
            return both >> 24, both & 0xFFFFFF

        return read24
    if record_size == 28:

        def read28(node: int) -> tuple[int, int]:
            at = node * 7
            both = int.from_bytes(data[at : at + 7], "big")
            middle = (both >> 24) & 0xFF
            return ((middle & 0xF0) << 20) | (both >> 32), ((middle & 0x0F) << 24) | (
                both & 0xFFFFFF
            )

        return read28
    if record_size == 32:

        def read32(node: int) -> tuple[int, int]:
            at = node * 8
            both = int.from_bytes(data[at : at + 8], "big")
            return both >> 32, both & 0xFFFFFFFF

        return read32
    raise DatabaseError(f"unknown search tree record size {record_size}")


class _Tree:
    """Walks a database's search tree into runs, as the reader walks it per lookup."""

    def __init__(self, reader: maxminddb.Reader, data: mmap.mmap, intern: _Places) -> None:
        meta = reader.metadata()
        self.reader = reader
        self.node_count = meta.node_count
        self.read = _nodes(data, meta.record_size)
        tree_size = meta.node_count * meta.record_size // 4
        self.data_size = len(data) - tree_size - 16
        self.intern = intern
        self.places: dict[int, int] = {meta.node_count: 0}  # leaf record → its place

    def leaf(self, record: int, base: int, bits: int) -> int:
        """The place of a leaf record, met at the first address `base` of a `bits`-bit
        space: 0 when empty.  The reader decodes it (its C decoder is fifty times faster
        than the pure-Python one): a lookup of `base` ends at this very leaf."""
        if record == self.node_count:
            return 0
        if record - self.node_count - 16 >= self.data_size:
            raise DatabaseError("the search tree points past the file")
        address = IPv4Address(base) if bits == V4_BITS else IPv6Address(base)
        value = self.reader.get(address)
        place = self.places[record] = self.intern(location_of(value, 0))
        return place

    def ipv4_start(self) -> int:
        """The node (or leaf record) IPv4 lookups start from in an IPv6 tree: ::/96."""
        node = 0
        for _ in range(96):
            if node >= self.node_count:
                break
            node = self.read(node)[0]
        return node

    def walk(self, root: int, bits: int, alias: tuple[int, Runs] | None = None) -> Runs:
        """Runs of places over a `bits`-bit space from `root`.  Where the walk meets alias's
        node, its runs (of a 32-bit space) are spliced in rather than walked again: the IPv4
        subtree, met at ::/96 and wherever the file aliases IPv6 space to it."""
        node_count, read, leaf, places = self.node_count, self.read, self.leaf, self.places
        alias_node, alias_runs = alias if alias is not None else (-1, Runs([], []))
        starts: MutableSequence[int] = array("I") if bits == V4_BITS else []
        values = array("I")
        last = -1
        stack = [(root, 0, 0)]
        pop, push = stack.pop, stack.append
        while stack:
            node, depth, base = pop()
            while True:  # down the left edge, pushing right children (one pop per leaf)
                if node >= node_count:
                    value = places.get(node)
                    if value is None:
                        value = leaf(node, base, bits)
                    if value != last:
                        starts.append(base)
                        values.append(value)
                        last = value
                    break
                if node == alias_node:
                    if base == 0:  # ::/96: placed as IPv4 (the caller marks it so anyway)
                        if last != 1:
                            starts.append(0)
                            values.append(1)
                            last = 1
                        break
                    shift = bits - depth - 32
                    for s, value in zip(alias_runs.starts, alias_runs.values, strict=True):
                        if value != last:
                            starts.append(base + (s << shift))
                            values.append(value)
                            last = value
                    break
                if depth >= bits:
                    raise DatabaseError("the search tree is deeper than an address")
                node, right = read(node)
                depth += 1
                push((right, depth, base | (1 << (bits - depth))))
        return Runs(starts, values)


def _database_runs(locator: Locator, intern: _Places) -> tuple[Runs, Runs]:
    """The database's places as (IPv4 runs, IPv6 runs), mirroring the reader's lookups."""
    reader, data = locator.reader, locator.data
    if reader is None or data is None:
        return Runs([0], [0]), Runs([0], [0])
    tree = _Tree(reader, data, intern)
    try:
        if reader.metadata().ip_version == 4:
            return tree.walk(0, V4_BITS), Runs([0], [0])  # no IPv6 address is in it
        start = tree.ipv4_start()
        if start >= tree.node_count:  # one record holds all of ::/96
            runs4 = Runs([0], [tree.leaf(start, 0, V4_BITS)])
            return runs4, tree.walk(0, V6_BITS)
        runs4 = tree.walk(start, V4_BITS)
        return runs4, tree.walk(0, V6_BITS, (start, runs4))
    except (ValueError, IndexError, InvalidDatabaseError, DatabaseError) as e:
        raise DatabaseError(f"{locator.path}: cannot read its search tree: {e}") from e


_SCANS: weakref.WeakKeyDictionary[Locator, tuple[object, Scan]] = weakref.WeakKeyDictionary()


def scan(locator: Locator | None) -> Scan:
    """Every address's place, per family (cached per locator and database file)."""
    if locator is None:
        return Scan((NOWHERE, IPV4), Runs([0], [0]), Runs([0], [0]))
    cached = _SCANS.get(locator)
    if cached is not None and cached[0] == locator.identity:
        return cached[1]
    intern = _Places()
    db4, db6 = _database_runs(locator, intern)
    v4 = _overlay(db4, _nets_runs(locator.nets, 4, intern))
    v6 = _overlay(db6, _nets_runs(locator.nets, 6, intern))
    v6 = _ipv4_marked(v6)
    found = Scan(intern.all(), v4, v6)
    _SCANS[locator] = (locator.identity, found)
    return found


class Placement(NamedTuple):
    """Where one client of one steered name goes."""

    group: str  # the location group's id (its ordered regions, comma-joined)
    scope: int  # leading bits of the client's address the placement depends on
    why: str


CACHE_SIZE = 1 << 16  # placements remembered per compiled rule and family
COARSE_BITS = 16  # leading address bits of the first-level index


class _Family:
    """One family's compiled runs: the outcome of each, the stretch of addresses around it
    that get its group, and the placements of clients asked about lately.  Per-run data is
    kept in arrays (IPv6 starts, which do not fit 64 bits, in a list)."""

    __slots__ = (
        "after",
        "bits",
        "cache",
        "coarse",
        "first",
        "made",
        "outcomes",
        "shift",
        "starts",
        "starts_end",
        "why",
    )

    def __init__(
        self,
        runs: Runs,
        outcome_of: Sequence[int],
        outcomes: Sequence[tuple[str, str]],
        bits: int,
    ) -> None:
        merged = _merged(runs.starts, (outcome_of[v] for v in runs.values), bits == V4_BITS)
        self.bits = bits
        self.starts = merged.starts
        self.why = outcomes
        self.outcomes = merged.values
        self.cache: dict[int, Placement] = {}
        self.made: dict[int, Placement] = {}  # (outcome, scope) → its one Placement
        n = len(self.starts)
        # coarse[j]: the run holding the first address whose leading COARSE_BITS are j, so
        # a lookup bisects only the runs between two of them (a few, not a million)
        self.shift = bits - COARSE_BITS
        self.coarse = array(
            "I", (bisect_right(self.starts, j << self.shift) - 1 for j in range(1 << COARSE_BITS))
        )
        self.coarse.append(n - 1)
        # run i's group holds from the start of run first[i] to before the start of run
        # after[i] (to the top when after[i] is n): the maximal stretch of runs around it
        self.first = array("I", bytes(4 * n))
        self.after = array("I", bytes(4 * n))
        groups: dict[str, int] = {}
        group_of = array("I", (groups.setdefault(g, len(groups)) for g, _ in outcomes))
        runs_of = self.outcomes
        first = 0
        group = group_of[runs_of[0]]
        for i in range(1, n + 1):
            if i == n or group_of[runs_of[i]] != group:
                self.first[first:i] = array("I", [first]) * (i - first)
                self.after[first:i] = array("I", [i]) * (i - first)
                first = i
                if i < n:
                    group = group_of[runs_of[i]]
        self.starts_end = n

    def place(self, value: int) -> Placement:
        """The placement of one address (as an int)."""
        found = self.cache.get(value)
        if found is not None:
            return found
        j = value >> self.shift
        i = bisect_right(self.starts, value, self.coarse[j], self.coarse[j + 1] + 1) - 1
        starts, bits = self.starts, self.bits
        # the /p around value lies in the stretch lo..hi iff it holds neither lo - 1 nor
        # hi + 1: a /p holds x iff x shares value's first p bits, iff (x ^ value) >> (bits -
        # p) == 0, iff p <= bits - (x ^ value).bit_length()
        lo = starts[self.first[i]]
        scope = bits + 1 - ((lo - 1) ^ value).bit_length() if lo else 0
        after = self.after[i]
        if after != self.starts_end:
            above = bits + 1 - (starts[after] ^ value).bit_length()
            if above > scope:
                scope = above
        outcome = self.outcomes[i]
        key = outcome << 8 | scope
        found = self.made.get(key)
        if found is None:
            if len(self.made) >= CACHE_SIZE:
                self.made.clear()
            group, why = self.why[outcome]
            found = self.made[key] = Placement(group, scope, why)
        if len(self.cache) >= CACHE_SIZE:
            self.cache.clear()  # cheaper than LRU bookkeeping; refills from hot clients
        self.cache[value] = found
        return found


class Compiled:
    """One rule compiled over a scan: `v4.place` and `v6.place` place an address."""

    def __init__(self, rule: Rule, known: Sequence[tuple[str, ...]], found: Scan) -> None:
        outcomes: dict[tuple[str, str], int] = {}
        outcome_of: list[int] = []
        for where in found.places:
            if where is IPV4:  # never placed from IPv6 runs: a group no other run has
                outcome_of.append(outcomes.setdefault(("", "IPv4"), len(outcomes)))
                continue
            steered = placed(rule, where, known)
            outcome = (group_id(steered.order), steered.why)
            outcome_of.append(outcomes.setdefault(outcome, len(outcomes)))
        listed = tuple(outcomes)
        self.v4 = _Family(found.v4, outcome_of, listed, V4_BITS)
        self.v6 = _Family(found.v6, outcome_of, listed, V6_BITS)
        # every address alike (no locator): scope 0, mapped IPv6 addresses included
        self.everywhere: Placement | None = None
        only = self.v4.outcomes[0]
        if len(self.v4.outcomes) == len(self.v6.outcomes) == 1 and self.v6.outcomes[0] == only:
            self.everywhere = Placement(listed[only][0], 0, listed[only][1])

    def __len__(self) -> int:
        """Runs in both tables (a measure of its size)."""
        return len(self.v4.starts) + len(self.v6.starts)
