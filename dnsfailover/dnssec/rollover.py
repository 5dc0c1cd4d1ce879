"""A zone's key lifecycle: which keys it publishes and signs with at a moment, and its
rollovers (RFC 7583), from the keys' timing metadata (`timing.Timing`, BIND's).

For the re-signer (pure; the clock is a parameter):

- `state(keyset, now, cds=True) -> KeyState`:
  `published`: the keys whose DNSKEY is in the DNSKEY RRset now (Publish <= now < Delete);
  `ksks`: the KSKs and CSKs that sign the DNSKEY RRset (and CDS, CDNSKEY) now;
  `zsks`: the ZSKs and CSKs that sign every other RRset now (a key signs when it is
  published and Activate <= now < Inactive), the KSKs while no ZSK signs (a `csk` zone
  turned `ksk+zsk` while its first ZSK is pre-published);
  `cds`: the published KSKs and CSKs whose CDS and CDNSKEY are in the zone now
  (SyncPublish <= now < SyncDelete), none when `cds` is False; `state.cds_keyset` is the
  `KeySet` to give `sign.cds`.
  An unset time: no Publish, published from the start; no Activate, active when published
  if the key has no Publish either, else never (a published standby key, as in BIND); no
  Inactive, Delete or SyncDelete, never; no SyncPublish, with its DNSKEY.  So a key with no
  times at all is published and active forever (as before keys had times).
- `next_event(keyset, now) -> float | None`: the first moment after `now` at which `state`
  may change (None: never).  Wake then: the DNSKEY RRset and the CDS/CDNSKEY change or get
  new signers, and RRsets signed from then on use the new `zsks`.  An RRset signed before
  may keep its signatures until it is refreshed: the times below keep every key that made
  a signature still served or cached published until that signature is gone.
- Automatic ZSK rollover, pre-publish (RFC 7583 §3.3.1), for generated keys in `ksk+zsk`
  mode: `zsk_due(keyset, policy, dnskey_ttl)` is when the next successor must be made (wake
  then too), `plan_zsk(...)` the actions, and `ensure(directory, ...)` (in place of
  `keys.ensure`, on every re-sign tick) writes them under the key directory's lock.
- KSK/CSK rollover, double-KSK with CDS (RFC 7583 §3.3.2, RFC 7344), started and completed
  by the operator (`dnsfailover dnssec rollover`): `start_ksk` / `complete_ksk` (writing),
  `plan_ksk_start` / `plan_ksk_complete` (pure), `ksk_roll` (the rollover in progress).
  That command changes the key files from outside the node: read them again (`ensure`) on
  every tick and at least every `propagation_delay` (the times it writes count on a node
  serving a change within that delay), or when the key directory's mtime changes.

Signing with a `KeyState`: the DNSKEY RRset is `[k.dnskey for k in st.published]`, signed
by `st.ksks`; the CDS/CDNSKEY RRsets are `sign.cds(st.cds_keyset, ttl)` (none when
`st.cds` is empty), signed by `st.ksks`; every other RRset and the NSEC/NSEC3 chain are
signed by `st.zsks`.  (`sign.dnskey` and `sign_zone` take a `KeySet` and sign with all its
keys by role: give them `KeySet(zone, st.published)` only when no key is published without
signing, or sign with the lists above.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dnsfailover.dnssec import keys
from dnsfailover.dnssec.keys import KeyMode, KeySet, Role, SigningKey
from dnsfailover.dnssec.timing import Timing
from dnsfailover.errors import DnsFailoverError

DAY = 86400.0


class RolloverError(DnsFailoverError):
    """A rollover step that would leave the zone unverifiable is refused (the message says
    why and what to do)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """How keys roll: `zsk_lifetime` (None: never), `propagation` (how long a change takes
    to reach every secondary and resolver, beyond TTLs) and the signature `validity` (an
    old key's signatures may be served that long after it stops signing)."""

    zsk_lifetime: float | None = 90 * DAY
    propagation: float = 3600.0
    validity: float = 14 * DAY


# -- state ------------------------------------------------------------------------------------


def published(key: SigningKey, now: float) -> bool:
    t = key.timing
    return (t.publish is None or t.publish <= now) and (t.delete is None or now < t.delete)


def active(key: SigningKey, now: float) -> bool:
    """Signs at `now` (it is published, activated, not inactive)."""
    t = key.timing
    if not published(key, now):
        return False
    if t.activate is None:
        return t.publish is None
    return t.activate <= now and (t.inactive is None or now < t.inactive)


def _syncing(key: SigningKey, now: float) -> bool:
    t = key.timing
    return (t.sync_publish is None or t.sync_publish <= now) and (
        t.sync_delete is None or now < t.sync_delete
    )


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the zone publishes and signs with at one moment (see the module's doc)."""

    keyset: KeySet  # every key, whatever its times
    published: tuple[SigningKey, ...]
    ksks: tuple[SigningKey, ...]
    zsks: tuple[SigningKey, ...]
    cds: tuple[SigningKey, ...]

    @property
    def cds_keyset(self) -> KeySet:
        """The keys whose CDS/CDNSKEY are published, for `sign.cds`."""
        return KeySet(self.keyset.zone, self.cds)

    @property
    def problems(self) -> list[str]:
        """What makes the zone unsigned or unverifiable now (timings set by hand)."""
        out = []
        if not self.ksks:
            out.append("no active KSK or CSK: the DNSKEY RRset cannot be signed")
        if not self.zsks:
            out.append("no active ZSK or CSK: the zone's data cannot be signed")
        return out


def state(keyset: KeySet, now: float, cds: bool = True) -> KeyState:
    """The keys `keyset`'s zone publishes and signs with at `now` (see the module's doc)."""
    shown = tuple(k for k in keyset.keys if published(k, now))
    signing = [k for k in shown if active(k, now)]
    ksks = tuple(k for k in signing if k.role in ("csk", "ksk"))
    # no ZSK signs yet (a csk zone turned ksk+zsk pre-publishes its first ZSK): the KSKs
    # go on signing the data, as they did as CSKs
    zsks = tuple(k for k in signing if k.role in ("csk", "zsk")) or ksks
    return KeyState(
        keyset,
        shown,
        ksks,
        zsks,
        tuple(k for k in shown if cds and k.role in ("csk", "ksk") and _syncing(k, now)),
    )


def next_event(keyset: KeySet, now: float) -> float | None:
    """The first moment after `now` at which `state(keyset, ...)` may change, or None."""
    later = [t for k in keyset.keys for t in k.timing.events() if t > now]
    return min(later, default=None)


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewKey:
    """Generate a key for `role` with `timing`."""

    role: Role
    timing: Timing


@dataclass(frozen=True, slots=True)
class SetTime:
    """Give `key` the times `timing` (`dnssec-settime`)."""

    key: SigningKey
    timing: Timing


Action = NewKey | SetTime


def apply(
    keyset: KeySet, actions: Sequence[Action], directory: Path | None, now: float
) -> tuple[KeySet, list[SigningKey]]:
    """`keyset` after `actions`, and the keys they made: written into `directory` (new
    keys first, so a crash between leaves a successor that `plan_zsk` finishes), or in
    memory only when `directory` is None (tests, simulations)."""
    found = list(keyset.keys)
    made: list[SigningKey] = []
    for action in sorted(actions, key=lambda a: isinstance(a, SetTime)):
        if isinstance(action, NewKey):
            flags = keys.ZSK_FLAGS if action.role == "zsk" else keys.KSK_FLAGS
            algorithm = found[0].algorithm
            key = keys.fresh(keyset.zone, algorithm, flags, action.role, found)
            key = key.with_timing(action.timing.replace(created=action.timing.created or now))
            if directory is not None:
                key = keys.write(key, directory, now)
            found.append(key)
            made.append(key)
        else:
            old = action.key
            new = (
                keys.settime(old, action.timing)
                if directory is not None
                else old.with_timing(action.timing)
            )
            found = [new if k == old else k for k in found]
    return KeySet(keyset.zone, tuple(found), keyset.generated), made


def _up(t: float) -> float:
    """A moment rounded up to a second, as key files keep it (later is the safe side)."""
    return float(math.ceil(t))


def _born(key: SigningKey) -> float | None:
    t = key.timing
    return t.activate if t.activate is not None else t.publish or t.created


# -- ZSK rollover (automatic, pre-publish) ------------------------------------------------------


def _zsk_chain(keyset: KeySet) -> list[SigningKey]:
    """The ZSKs not yet retired (no Inactive), oldest first: the last is the current one
    (or its pre-published successor)."""
    live = [k for k in keyset.keys if k.role == "zsk" and k.timing.inactive is None]
    return sorted(live, key=lambda k: (_born(k) or 0.0, k.tag))


def zsk_due(keyset: KeySet, policy: Policy, dnskey_ttl: float) -> float | None:
    """When the current ZSK's successor must be published (its lifetime less the time a
    new DNSKEY takes to reach every cache), or None (no lifetime, no ZSK)."""
    chain = _zsk_chain(keyset)
    if not policy.zsk_lifetime or not chain:
        return None
    born = _born(chain[-1])
    if born is None:
        return None
    return born + policy.zsk_lifetime - (dnskey_ttl + policy.propagation)


def plan_zsk(
    keyset: KeySet, now: float, policy: Policy, dnskey_ttl: float, max_zone_ttl: float
) -> list[Action]:
    """What the pre-publish ZSK rollover (RFC 7583 §3.3.1) needs done at `now`.

    When the current ZSK's successor is due: a new ZSK published now and active once its
    DNSKEY is in every cache (`dnskey_ttl` + propagation later); the old one inactive at
    that moment and deleted once every signature it made can be gone from every server
    and cache (the signature validity + `max_zone_ttl` + propagation later).  A successor
    found without its predecessor's times (a crash between the two writes) gets them."""
    chain = _zsk_chain(keyset)
    if not chain:
        return []
    current = chain[-1]
    actions: list[Action] = []
    due = zsk_due(keyset, policy, dnskey_ttl)
    switch = _born(current) or now
    olds = chain[:-1]
    if due is not None and now >= due:
        switch = _up(now + dnskey_ttl + policy.propagation)
        timing = Timing(publish=_up(now), activate=switch).linked(predecessor=current.tag)
        actions.append(NewKey("zsk", timing))
        olds = chain
    for old in olds:
        inactive = max(switch, _up(now))
        delete = _up(inactive + policy.validity + max_zone_ttl + policy.propagation)
        actions.append(SetTime(old, old.timing.replace(inactive=inactive, delete=delete)))
    return actions


def ensure(
    directory: Path,
    zone: str,
    algorithm: int,
    mode: KeyMode,
    now: float,
    policy: Policy | None,
    dnskey_ttl: float,
    max_zone_ttl: float,
) -> KeySet:
    """`keys.ensure`, then the ZSK rollover's due steps written (`policy` None: none),
    under the directory's lock: a node calls it on every re-sign tick, with generated keys
    only (`key_files` keys roll by their files' times, set with `dnssec-settime`)."""
    keys.prepare(directory)
    lead = dnskey_ttl + (policy or Policy()).propagation
    with keys.locked(directory):
        keyset = keys.ensure_locked(directory, zone, algorithm, mode, now, lead)
        if policy is None or mode != "ksk+zsk":
            return keyset
        actions = plan_zsk(keyset, now, policy, dnskey_ttl, max_zone_ttl)
        if not actions:
            return keyset
        after, made = apply(keyset, actions, directory, now)
        generated = [f for k in made for f in k.files or ()]
        return KeySet(after.zone, after.keys, (*keyset.generated, *generated))


# -- KSK / CSK rollover (operator-driven, double-KSK with CDS) --------------------------------


@dataclass(frozen=True, slots=True)
class KskRoll:
    """A KSK or CSK rollover: `old` is being replaced by `new`; `completed` once the
    operator said the parent has the new DS (`old` then has its Inactive and Delete)."""

    old: SigningKey
    new: SigningKey
    completed: bool


def _seps(keyset: KeySet, now: float) -> list[SigningKey]:
    """The KSKs and CSKs not deleted at `now`, oldest first."""
    live = [k for k in keyset.ksks if k.timing.delete is None or now < k.timing.delete]
    return sorted(live, key=lambda k: (_born(k) or 0.0, k.tag))


def ksk_roll(keyset: KeySet, now: float) -> KskRoll | None:
    """The KSK or CSK rollover in progress at `now`, if any: the new key is the one that
    names the other as its predecessor (or that the other names as its successor, as
    `dnssec-keygen -S` records), else the younger."""
    live = _seps(keyset, now)
    unretired = [k for k in live if k.timing.inactive is None]
    retiring = [k for k in live if k.timing.inactive is not None]
    if len(unretired) >= 2:
        old, new = unretired[0], unretired[-1]
        for a in unretired:
            for b in unretired:
                if b.timing.predecessor == a.tag or a.timing.successor == b.tag:
                    old, new = a, b
        return KskRoll(old, new, completed=False)
    if len(unretired) == 1 and retiring:
        return KskRoll(retiring[-1], unretired[0], completed=True)
    return None


def when(t: float | None) -> str:
    """A key time for people: `2026-12-02 16:30:53 UTC`, or `never`."""
    if t is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def plan_ksk_start(keyset: KeySet, now: float, role: Role) -> NewKey:
    """The successor of the zone's KSK or CSK (`role`): published and signing the DNSKEY
    RRset (a CSK: everything) beside the old one from `now`, its CDS and CDNSKEY beside
    the old one's, so the parent may list both DS.

    :raises RolloverError: a rollover is in progress or finishing, or there is no active
        KSK/CSK to roll from.
    """
    roll = ksk_roll(keyset, now)
    if roll is not None and not roll.completed:
        raise RolloverError(
            f"a rollover from key {roll.old.tag} to {roll.new.tag} is in progress: once the "
            f"parent serves the DS of {roll.new.tag}, finish it with --complete"
        )
    if roll is not None:
        raise RolloverError(
            f"the previous rollover is finishing: key {roll.old.tag} signs until "
            f"{when(roll.old.timing.inactive)} and is removed at "
            f"{when(roll.old.timing.delete)}; start the next one after that"
        )
    live = _seps(keyset, now)
    signing = [k for k in live if active(k, now)]
    if not signing:
        raise RolloverError(
            f"{keyset.zone} has no active KSK or CSK to roll from (see `dnssec keys`)"
        )
    # a second after the old key's birth at least: which key is the new one is their order
    start = max(_up(now), *((_born(k) or 0.0) + 1 for k in live))
    timing = Timing(publish=start, activate=start, sync_publish=start)
    return NewKey(role, timing.linked(predecessor=signing[-1].tag))


def plan_ksk_complete(
    keyset: KeySet,
    now: float,
    policy: Policy,
    dnskey_ttl: float,
    max_zone_ttl: float,
    ds_ttl: float,
) -> list[Action]:
    """Retire the old KSK or CSK once the parent serves the new DS: its CDS and CDNSKEY
    leave now; it signs until no resolver can hold a DS set without the new DS (`ds_ttl` +
    propagation from now) and the new DNSKEY has reached every cache; then it leaves the
    DNSKEY RRset after the DNSKEY TTL + propagation (a CSK: after its last signatures on
    the zone's data can be gone, the signature validity + `max_zone_ttl` + propagation).

    :raises RolloverError: no rollover in progress, or one already completed, or the new
        key does not sign (yet) or has an end set.
    """
    roll = ksk_roll(keyset, now)
    if roll is None:
        raise RolloverError(
            "no rollover in progress: start one with `dnsfailover dnssec rollover CONFIG ZONE`"
        )
    if roll.completed:
        raise RolloverError(
            f"the rollover to key {roll.new.tag} is completed already: key {roll.old.tag} "
            f"signs until {when(roll.old.timing.inactive)} and is removed at "
            f"{when(roll.old.timing.delete)}"
        )
    new = roll.new
    since = new.timing.publish if new.timing.publish is not None else now
    cached = since + dnskey_ttl + policy.propagation
    if now < cached:
        raise RolloverError(
            f"the new key {new.tag} may not be in every cached DNSKEY RRset before "
            f"{when(cached)} (published {when(since)}, + the DNSKEY TTL and propagation "
            "delay): once its CDS is gone the parent may drop the old DS, so complete "
            "after that"
        )
    if not active(new, now) or new.timing.inactive is not None or new.timing.delete is not None:
        raise RolloverError(
            f"the new key {new.tag} does not sign from now on (Activate "
            f"{when(new.timing.activate)}, Inactive {when(new.timing.inactive)}, Delete "
            f"{when(new.timing.delete)}): the zone would be left without a KSK"
        )
    inactive = _up(max(now + ds_ttl + policy.propagation, since + dnskey_ttl + policy.propagation))
    tail = dnskey_ttl + policy.propagation
    if new.role == "csk":
        tail = policy.validity + max_zone_ttl + policy.propagation
    olds = [k for k in _seps(keyset, now) if k.timing.inactive is None and k != new]
    return [
        SetTime(
            k,
            k.timing.replace(
                inactive=inactive, delete=_up(inactive + tail), sync_delete=float(int(now))
            ),
        )
        for k in olds
    ]


def _role(mode: KeyMode) -> Role:
    return "csk" if mode == "csk" else "ksk"


def start_ksk(directory: Path, zone: str, algorithm: int, mode: KeyMode, now: float) -> SigningKey:
    """`plan_ksk_start`, written into `directory` under its lock; the new key.

    :raises RolloverError: see `plan_ksk_start`.
    """
    keys.prepare(directory)
    with keys.locked(directory):
        keyset = keys.ensure_locked(directory, zone, algorithm, mode, now)
        action = plan_ksk_start(keyset, now, _role(mode))
        _, made = apply(keyset, [action], directory, now)
        return made[0]


def complete_ksk(
    directory: Path,
    zone: str,
    algorithm: int,
    mode: KeyMode,
    now: float,
    policy: Policy,
    dnskey_ttl: float,
    max_zone_ttl: float,
    ds_ttl: float,
) -> KeySet:
    """`plan_ksk_complete`, written into `directory` under its lock; the keys after.

    :raises RolloverError: see `plan_ksk_complete`.
    """
    keys.prepare(directory)
    with keys.locked(directory):
        keyset = keys.ensure_locked(directory, zone, algorithm, mode, now)
        actions = plan_ksk_complete(keyset, now, policy, dnskey_ttl, max_zone_ttl, ds_ttl)
        after, _ = apply(keyset, actions, directory, now)
        return after
