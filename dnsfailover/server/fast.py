"""A fast path for the common query: answers replayed from wire bytes the full path produced.

Most queries are one question for a name and type the zone knows (or an NXDOMAIN/NODATA),
with or without a plain EDNS OPT (or one carrying only an EDNS Client Subnet option: the
reply is the plain one with the option echoed, SCOPE 0 unless the answer is steered).  For
the same question bytes their reply differs from query to query only in the ID and the RD
bit, so :class:`FastTable` keeps, per snapshot, the reply that
:func:`~dnsfailover.server.wire.respond` gave once, and patches those two.

The key is the question without case: the full path compresses names caselessly
(`wire.pack`), so its reply to ``WWW.example.test`` is laid out as the one to
``www.example.test`` and differs only in the question's bytes (later names point at them),
which `patch` copies from the query; 0x20-randomised queries share one template.

Every template comes from ``respond()`` itself and is checked against ``respond()``'s
answer to a real query before it is kept, so the fast path cannot disagree with the full
one: anything it does not recognise, it declines (returns None).

A weighted name (:mod:`dnsfailover.server.weighted`) answers one record per query: its key
gets one template per record (from a snapshot pinned to it), and the name's own rotor picks
one, so fast and full path share one rotation.

A steered name (:mod:`dnsfailover.server.steered`) answers each location group its own
set: its key gets one template per group (from a `Pinned` snapshot); a hit places the
client (ECS network, else source address), remembers the placement with the ECS option to
echo, and replays its group's template.  Two steered names or a weighted group: full path.

With ``c_hits``, every template learnt here is also put in a `_mmsg.HitTable` (one for UDP,
one for TCP): the C hit path (`_mmsg.UdpLoop`, and `answer` for a TCP frame) answers those
keys (weighted ones turning the same `Rotor.cycle`); steered keys stay here (placing a
client takes the location database).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from dnsfailover.geo.ecs import SourceLimits
from dnsfailover.geo.steering import Steering
from dnsfailover.rdata import Labels
from dnsfailover.server.lookup import WILDCARD
from dnsfailover.server.relearn import remade
from dnsfailover.server.replay import (
    MAX_PLACEMENTS,
    Responder,
    canonical,
    echo,
    full_path,
    own_name,
    patch,
    positive,
    question_labels,
    replay_steered,
    replayable,
    rotor_turn,
    scoped,
    split_query,
    wire_name,
    with_option,
)
from dnsfailover.server.steered import (
    DEFAULT_LIMITS,
    Pinned,
    Where,
    ecs_scope,
)
from dnsfailover.server.weighted import Rotor, always
from dnsfailover.server.wire import DEFAULT_UDP_PAYLOAD, HEADER_LEN, MIN_UDP_PAYLOAD
from dnsfailover.server.zone import ZoneSnapshot

try:
    from dnsfailover.server._mmsg import HitTable
except ImportError:  # not built: every hit takes this module's path
    HitTable = None  # type: ignore[assignment,misc]

__all__ = ["MAX_ENTRIES", "MAX_PLACEMENTS", "FastTable", "split_query"]

MAX_ENTRIES = 65_536
"""Templates kept per snapshot; when full, the table starts over (hot keys come back)."""
_DECLINE = b""
"""Cached for keys whose reply cannot be replayed (too big, or not a pure function)."""


Key = tuple[bytes, int, int, bool]
LARGE = 2
"""Added to a UDP query's EDNS variant (1 OPT, 2 OPT+DO) when its payload size is at least
the server's: its reply's limit is then the server's whatever the client said, so a reply
of any size that fits is replayed (signed answers, with their proofs, are mostly over 512
bytes); smaller payloads keep the 512-byte rule."""
Rotating = tuple[Callable[[], int], tuple[bytes, ...]]
"""A weighted key: its rotor's next-turn function and one template per choice."""
SteeredKey = tuple[str, dict[str, bytes]]
"""A steered key: the steered name its answer meets, and one template per location group
(_DECLINE: that group's reply cannot be replayed)."""


class FastTable:
    """Replayable replies for one snapshot, built lazily on the second miss of a key.

    A key is (question bytes, keyed flags, EDNS variant, transport).  UDP
    templates are kept only when the reply fits in 512 bytes, so the client's advertised
    payload size cannot change it (a template is checked against one real query only, so a
    full path whose reply depended on the payload size would need it in the key).  Not
    locked: single dict and set operations are atomic under the GIL, and concurrent misses
    at worst build a template twice.

    With a `Steering`, a key whose answer meets one steered name keeps one template per
    location group: a hit places the client (its ECS network truncated to `limits`, else
    its source address) and replays its group's template with the ECS SCOPE of the
    placement.  The steering is the table's: a new one takes a new table.
    """

    __slots__ = (
        "_by_name",
        "_carry",
        "_hits",
        "_limits",
        "_max_entries",
        "_max_udp_payload",
        "_placed",
        "_queries",
        "_respond",
        "_rotating",
        "_rule_of",
        "_seen",
        "_snapshot",
        "_stale",
        "_steered",
        "_steering",
        "_table",
        "trusted",
    )

    def __init__(
        self,
        snapshot: ZoneSnapshot,
        *,
        max_udp_payload: int = DEFAULT_UDP_PAYLOAD,
        max_entries: int = MAX_ENTRIES,
        responder: Responder = full_path,
        steering: Steering | None = None,
        limits: SourceLimits = DEFAULT_LIMITS,
        queries: dict[tuple[str, str], int] | None = None,
        c_hits: bool = False,
    ) -> None:
        self._snapshot = snapshot
        self._max_udp_payload = max_udp_payload
        self._max_entries = max_entries
        self._respond = responder
        self._steering = steering
        self._limits = limits
        self._table: dict[Key, bytes] = {}
        self._rotating: dict[Key, Rotating] = {}  # weighted keys; `_table` has _DECLINE
        self._steered: dict[Key, SteeredKey] = {}  # steered keys; `_table` has _DECLINE
        # (name, ECS option, source address when no ECS network) → (group, the ECS option
        # to echo); it depends only on the steering, so tables of later snapshots share it
        # (a new steering: a new table)
        # (keyed by the name's rule table, so names with one rule share placements)
        self._placed: dict[tuple[Hashable, bytes, str], tuple[str, bytes]] = {}
        self._rule_of: dict[str, Hashable] = {}  # steered name → `Steering.table_of` it
        # queries answered per (steered name, group), kept by the server across tables (a
        # count may be lost to a race between the UDP and TCP threads: it is for metrics)
        self._queries: dict[tuple[str, str], int] = queries if queries is not None else {}
        self._seen: set[Key] = set()
        # The replies that depend on their own name's records only (a copy of their entries
        # in `_table`), and their keys by that name: what a publish that changes other names
        # may keep (see `carried`), found at the cost of what it changed.
        self._carry: dict[Key, bytes] = {}
        self._by_name: dict[Labels, tuple[Key, ...]] = {}
        self._stale: dict[Key, bytes] = {}  # changed keys: old replies (`relearn`)
        self.trusted = False  # a relearnt template was checked against the full path
        # the UDP templates again, in C memory, for the C hit path (see the module's doc)
        self._hits = (  # (UDP, TCP)
            (HitTable(max_udp_payload), HitTable(max_udp_payload, tcp=True))
            if c_hits and HitTable is not None and max_entries > 0 and max_udp_payload >= 512
            else None
        )

    @property
    def hits(self) -> HitTable | None:
        """This table's UDP templates for the C hit path (None: it has none)."""
        return None if self._hits is None else self._hits[0]

    @property
    def steering(self) -> Steering | None:
        return self._steering

    def carried(
        self,
        snapshot: ZoneSnapshot,
        changed: frozenset[Labels] | None,
    ) -> FastTable:
        """A table for `snapshot`, the next version of this one's, that keeps the replies of
        names a publish did not change (None: it may have changed anything).

        Only positive answers to a name's own records are kept: negative answers carry the
        SOA (its serial moves with every publish), and an answer through a CNAME or a
        wildcard depends on other names.  A changed wildcard name changes other names too.
        """
        table = FastTable(
            snapshot,
            max_udp_payload=self._max_udp_payload,
            max_entries=self._max_entries,
            responder=self._respond,
            steering=self._steering,
            limits=self._limits,
            queries=self._queries,
            c_hits=self._hits is not None,
        )
        table._placed, table._rule_of = self._placed, self._rule_of
        if changed is None or WILDCARD in {name[0] for name in changed if name}:
            return table
        # Copies (this table may go on learning on another thread meanwhile), `_carry` first:
        # `_learn` files a key by name before it adds its reply, so every reply copied here
        # is found under its name below.
        carry, by_name = dict(self._carry), dict(self._by_name)
        if len(changed) < len(by_name) // 2:  # drop what changed (kept in `_stale`)
            for name in changed:
                for key in by_name.pop(name, ()):
                    if old := carry.pop(key, None):
                        table._stale[key] = old
        else:  # most names changed (a regional outage): take what did not
            table._stale = {
                k: old for n in changed for k in by_name.get(n, ()) if (old := carry.get(k))
            }
            by_name = {n: keys for n, keys in by_name.items() if n not in changed}
            carry = {k: carry[k] for keys in by_name.values() for k in keys if k in carry}
        if self._rotating:  # a weighted set keeps its rotation only if `snapshot` does
            for k, r in dict(self._rotating).items():
                if k in carry and rotor_turn(snapshot, k[0]) is r[0]:
                    table._rotating[k] = r
                else:
                    carry.pop(k, None)
        table._carry, table._by_name = carry, by_name
        table._table = dict(carry)
        if self._hits is not None:  # by name: also right for what is learnt meanwhile
            gone = [wire_name(name) for name in changed]
            table._hits = hits = (self._hits[0].carried(gone), self._hits[1].carried(gone))
            for k, (pick, made) in table._rotating.items():  # (C carries no rotation)
                hits[k[3]].put(k[0], k[1], k[2], made, getattr(pick, "__self__", None), carry=True)
        if self._steered:
            # only each key's positive group replies: a negative one carries the SOA
            table._steered = {
                k: (name, {g: t for g, t in dict(groups).items() if positive(t)})
                for k, (name, groups) in dict(self._steered).items()
                if k in carry
            }
        return table

    @property
    def snapshot(self) -> ZoneSnapshot:
        return self._snapshot

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, data: bytes, *, tcp: bool, client: str | None = None) -> bytes | None:
        """The reply from a template, or None: not a plain query, or not (yet) cached."""
        keyed = self._key(data, tcp)
        if keyed is None:
            return None
        key, qend = keyed
        template = self._table.get(key)
        if template:
            return echo(patch(template, data, qend), data, qend, tcp)
        if template is None:
            return None
        rotating = self._rotating.get(key)
        if rotating is not None:
            return echo(patch(rotating[1][rotating[0]()], data, qend), data, qend, tcp)
        steered = self._steered.get(key)
        return None if steered is None else self._steer(steered, data, qend, tcp, client)

    def answer(self, data: bytes, *, tcp: bool, client: str | None = None) -> bytes | None:
        """The reply to a query: from a template, or from the full path (learning a template).

        ``client``: the query's source address (UDP or TCP peer), which places the client
        of a steered name when the query has no ECS network.
        """
        if tcp and self._hits is not None and (fast := self._hits[1].reply(data)) is not None:
            return fast  # (a UDP hit never gets here: the UDP thread's C loop answered it)
        keyed = self._key(data, tcp)
        if keyed is None:
            where = self._where(client)
            return self._counted(where, self._full(self._snapshot, data, tcp, where))
        key, qend = keyed
        question = data[HEADER_LEN:qend]
        template = self._table.get(key)
        if template:
            fast = echo(patch(template, data, qend), data, qend, tcp)
            if fast is not None:
                return fast
        elif template is not None:  # declined, steered or weighted
            steered = self._steered.get(key)
            if steered is not None:
                # a client placed before: its group's template, as `_steer` does, inlined
                option = data[qend + 11 :]
                placed = (
                    self._rule_of.get(steered[0]),
                    option,
                    "" if option and option[6] else client or "",
                )
                found = self._placed.get(placed)
                made = steered[1].get(found[0]) if found is not None else None
                if made and found is not None:
                    reply = patch(made, data, qend)
                    fast = with_option(reply, found[1], tcp) if option else reply
                    counts, at = self._queries, (steered[0], found[0])
                    counts[at] = counts.get(at, 0) + 1
                else:
                    fast = self._steer(steered, data, qend, tcp, client)
                if fast is not None:
                    return fast
            elif (rotating := self._rotating.get(key)) is not None:
                fast = echo(patch(rotating[1][rotating[0]()], data, qend), data, qend, tcp)
                if fast is not None:
                    return fast
        elif (  # a changed name's new reply, made from its old one's layout
            self.trusted
            and key in self._stale
            and (made := remade(self, key))
            and (fast := echo(patch(made, data, qend), data, qend, tcp)) is not None
        ):
            return fast
        where = self._where(client)
        slow = self._counted(where, self._full(self._snapshot, data, tcp, where))
        if template is None or (where is not None and key in self._steered):
            self._learn(key, question, data, qend, slow, where)
        return slow

    @property
    def stale(self) -> dict[Key, bytes]:
        """Changed keys → their previous templates, each popped by who remakes it."""
        return self._stale

    def adopt(self, key: Key, template: bytes) -> None:
        """Files a template made for `key` outside `answer` (`relearn`), as `_learn` does."""
        if self._max_entries <= 0 or self._table.get(key):
            return  # (a query taught it meanwhile)
        self._make_room()
        self._table[key] = template
        carry = self._file(key, key[0], template, template)
        if self._hits is not None:
            self._hits[key[3]].put(key[0], key[1], key[2], [template], carry=carry)

    def full_reply(self, key: Key) -> bytes | None:
        """The full path's reply to the query a template of `key` is made from."""
        query = canonical(key[0], key[1], key[2], self._max_udp_payload)
        return self._respond(self._snapshot, query, key[3], self._max_udp_payload)

    def _key(self, data: bytes, tcp: bool) -> tuple[Key, int] | None:
        """The query's key, one for every spelling of the question, and its question's end
        (None: not a query the table serves)."""
        split = split_query(data)
        if split is None:
            return None
        qend, keyed, variant = split
        if variant and not tcp and (data[qend + 3] << 8 | data[qend + 4]) >= self._max_udp_payload:
            variant += LARGE  # (see `LARGE`)
        return (data[HEADER_LEN:qend].lower(), keyed, variant, tcp), qend

    def _counted(self, where: Where | None, reply: bytes | None) -> bytes | None:
        """`reply`, counting the groups its query was placed in (full path)."""
        if where is not None and where.placed and reply is not None:
            counts = self._queries
            for at in where.placed:
                counts[at] = counts.get(at, 0) + 1
        return reply

    def _where(self, client: str | None) -> Where | None:
        return None if self._steering is None else Where(self._steering, client, self._limits)

    def _full(
        self, snapshot: ZoneSnapshot, data: bytes, tcp: bool, where: Where | None
    ) -> bytes | None:
        if where is None:
            return self._respond(snapshot, data, tcp, self._max_udp_payload)
        return self._respond(snapshot, data, tcp, self._max_udp_payload, where)

    def _steer(
        self, steered: SteeredKey, data: bytes, qend: int, tcp: bool, client: str | None
    ) -> bytes | None:
        """The reply to a steered key from its client's group's template (None: the full
        path answers); see `steered.replay`."""
        if self._steering is None:
            return None
        return replay_steered(
            self._steering, self._rule_of, self._placed, self._limits, self._queries,
            steered, data, qend, tcp, client,
        )  # fmt: skip

    def _learn(
        self,
        key: Key,
        question: bytes,
        data: bytes,
        qend: int,
        slow: bytes | None,
        where: Where | None = None,
    ) -> None:
        if self._max_entries <= 0:
            return
        placed = where.placed if where is not None else []
        if where is not None and (where.unplaced or len(placed) > 1):
            return  # not one template per group: the full path answers it every time
        steered = self._steered.get(key)
        if steered is not None:  # a steered key: learn this group's template
            if len(placed) == 1 and placed[0][0] == steered[0] and placed[0][1] not in steered[1]:
                name, group = placed[0]
                made = self._pinned(key, question, data, qend, slow, placed[0], where)
                steered[1][group] = made
                self._file(key, question, made, _DECLINE)
            return
        # Second chance: a key seen once (a random name in a flood) costs one full answer
        # only; a name the zone has is learnt at once (after a publish: its new answer).
        if key not in self._seen and not self._known(question):
            if len(self._seen) >= self._max_entries:
                self._seen.clear()
            self._seen.add(key)
            return
        self._seen.discard(key)
        if placed:
            name, group = placed[0]
            made = self._pinned(key, question, data, qend, slow, placed[0], where)
            self._make_room()
            self._steered[key] = (name, {group: made})
            self._table[key] = _DECLINE
            self._file(key, question, made, _DECLINE)
            return
        _, keyed, variant, tcp = key
        snapshot, rotors = self._recording()
        if slow is not None and not snapshot.weighted and not data[qend + 11 :]:
            # The reply with ID 0 and RD clear is the template: what `canonical` would get
            # (the reply depends on the payload size only through the key's variant and
            # `_limit`); the check below holds it to this query's reply like any other.
            template: bytes | None = b"\0\0" + bytes((slow[2] & 0xFE,)) + slow[3:]
        else:
            made_from = canonical(question, keyed, variant, self._max_udp_payload)
            template = self._respond(snapshot, made_from, tcp, self._max_udp_payload)
        templates = [template]
        if rotors:
            rotor = rotors[0]
            made_from = canonical(question, keyed, variant, self._max_udp_payload)
            for i in range(1, len(rotor.choices)):
                pinned = self._snapshot.pinned(always(i))
                templates.append(self._respond(pinned, made_from, tcp, self._max_udp_payload))
        usable = (
            slow is not None
            and len(rotors) <= 1
            and all(replayable(t, question, qend, tcp, self.limit(key)) for t in templates)
            # The check that makes the fast path safe: replaying a template for this very
            # query gives exactly what the full path answered.
            and any(
                echo(patch(t, data, qend), data, qend, tcp) == slow
                for t in templates
                if t is not None
            )
        )
        self._make_room()
        if usable and rotors:
            self._rotating[key] = (rotors[0].pick, tuple(t for t in templates if t is not None))
            self._table[key] = _DECLINE
        else:
            self._table[key] = template if usable and template is not None else _DECLINE
        if usable and template is not None:
            carry = self._file(key, question, template, self._table[key])
            if self._hits is not None:
                kept = [t for t in templates if t is not None]  # (all are: `usable`)
                cycle = rotors[0].cycle if rotors else None
                self._hits[tcp].put(key[0], keyed, variant, kept, cycle, carry=carry)

    def _known(self, question: bytes) -> bool:
        """Whether the question's name is one the zone has (not a random name)."""
        name = question_labels(question[:-4])
        zone = self._snapshot.find_zone(name)
        return zone is not None and name in zone.names

    def _recording(self) -> tuple[ZoneSnapshot, list[Rotor]]:
        """The snapshot to make a template from: one that records the rotors it meets instead
        of turning them (when it has any), and the list they are recorded in."""
        snapshot, rotors = self._snapshot, list[Rotor]()
        if snapshot.weighted:

            def record(rotor: Rotor) -> int:
                rotors.append(rotor)
                return 0

            snapshot = snapshot.pinned(record)
        return snapshot, rotors

    def _make_room(self) -> None:
        if len(self._table) >= self._max_entries:
            self._table.clear()
            self._rotating.clear()
            self._steered.clear()
            self._carry.clear()
            self._by_name.clear()
            for hits in self._hits or ():
                hits.clear()

    def _file(self, key: Key, question: bytes, template: bytes, entry: bytes) -> bool:
        """Keep `entry` (the key's `_table` value) across publishes that do not change the
        name `template` (a reply for `key`) depends on alone, if there is one (True)."""
        if template and (name := own_name(self._snapshot, template, question)):
            keys = self._by_name.get(name, ())
            if key not in keys:
                self._by_name[name] = (*keys, key)  # first (see `carried`)
            self._carry[key] = entry
            return True
        return False

    def _pinned(
        self,
        key: Key,
        question: bytes,
        data: bytes,
        qend: int,
        slow: bytes | None,
        placed: tuple[str, str],
        where: Where | None,
    ) -> bytes:
        """The template of a steered key for the clients of `group` of steered `name`, or
        _DECLINE when it cannot be replayed: checked, like every template, against what the
        full path answered this very query (`slow`)."""
        steering = self._steering
        if slow is None or steering is None or where is None:
            return _DECLINE
        name, group = placed
        _, keyed, variant, tcp = key
        made_from = canonical(question, keyed, variant, self._max_udp_payload)
        snapshot, rotors = self._recording()
        pin = Pinned(steering, name, group)
        template = self._respond(snapshot, made_from, tcp, self._max_udp_payload, pin)
        if (
            template is None
            or rotors
            or pin.unplaced
            or not replayable(template, question, qend, tcp, self.limit(key))
        ):
            return _DECLINE  # (a weighted group rotates: its replies take the full path)
        # with the SCOPE the fast path would echo for this query's placement
        option = data[qend + 11 :]
        scope = ecs_scope(option, where.depends_on, self._limits)
        reply = with_option(patch(template, data, qend), scoped(option, scope), tcp)
        return template if reply == slow else _DECLINE

    def limit(self, key: Key) -> int:
        """The largest UDP template of `key`: any size the client takes for a LARGE variant,
        else 512 (a reply that depends on the client's payload size is not replayed)."""
        return self._max_udp_payload if key[2] > LARGE else MIN_UDP_PAYLOAD
