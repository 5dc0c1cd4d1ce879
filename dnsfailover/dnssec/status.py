"""What a zone's keys are doing, for people (`dnssec keys`) and for the status API and
metrics: each key's state and times, the rollovers in progress, the next ZSK rollover and
the next change of the key state.  Pure; the clock is a parameter."""

from __future__ import annotations

from typing import Any

from dnsfailover.dnssec import rollover
from dnsfailover.dnssec.keys import ALGORITHMS, KeySet, SigningKey
from dnsfailover.dnssec.rollover import Policy, when

#: the states `key_state` names, in a key's life order
STATES = ("pending", "published", "active", "retired", "removed")


def key_state(key: SigningKey, now: float) -> str:
    """pending (not published yet), published (not signing: pre-published or a standby
    key), active, retired (still published, no longer signing) or removed."""
    t = key.timing
    if rollover.active(key, now):
        return "active"
    if rollover.published(key, now):
        return "retired" if t.inactive is not None and t.inactive <= now else "published"
    return "pending" if t.publish is not None and now < t.publish else "removed"


def rollovers(
    keyset: KeySet, now: float, zsk: Policy | None, dnskey_ttl: float, propagation: float
) -> list[str]:
    """One line per rollover in progress (KSK/CSK, ZSK), and when the next ZSK one starts
    (`zsk`: the automatic ZSK rollover's policy, None when off)."""
    out = []
    roll = rollover.ksk_roll(keyset, now)
    if roll is not None:
        kind = roll.new.role.upper()
        if roll.completed:
            out.append(
                f"rollover: {kind} {roll.old.tag} -> {roll.new.tag} completed: "
                f"{roll.old.tag} signs until {when(roll.old.timing.inactive)} and is removed "
                f"at {when(roll.old.timing.delete)}"
            )
        else:
            start = roll.new.timing.publish or now
            ready = start + dnskey_ttl + propagation
            out.append(
                f"rollover: {kind} {roll.old.tag} -> {roll.new.tag} started "
                f"{when(start)}: once the parent serves the DS of {roll.new.tag} "
                f"(`dnssec ds`), and not before {when(ready)}, run `dnsfailover dnssec "
                "rollover CONFIG ZONE --complete`"
            )
    zsks = [k for k in keyset.keys if k.role == "zsk" and rollover.published(k, now)]
    for new in zsks:
        if not rollover.active(new, now) and new.timing.activate is not None:
            out.append(f"rollover: ZSK {new.tag} signs from {when(new.timing.activate)}")
    for old in zsks:
        if old.timing.inactive is not None:
            out.append(
                f"rollover: ZSK {old.tag} signs until {when(old.timing.inactive)}, "
                f"removed at {when(old.timing.delete)}"
            )
    due = rollover.zsk_due(keyset, zsk, dnskey_ttl) if zsk else None
    if due is not None:
        out.append(f"next ZSK rollover: {when(max(due, now))} (zsk_lifetime)")
    return out


def describe(
    keyset: KeySet,
    now: float,
    *,
    cds: bool = True,
    zsk: Policy | None = None,
    dnskey_ttl: float = 3600,
    propagation: float = 3600,
) -> dict[str, Any]:
    """The zone's keys as JSON-ready data (times as POSIX seconds, None when not set): for
    the status API and metrics."""
    now_state = rollover.state(keyset, now, cds)
    keys = []
    for key in keyset.keys:
        t = key.timing
        keys.append(
            {
                "tag": key.tag,
                "role": key.role,
                "algorithm": ALGORITHMS.get(key.algorithm, str(key.algorithm)),
                "flags": key.flags,
                "state": key_state(key, now),
                "cds": key in now_state.cds,
                "publish": t.publish,
                "activate": t.activate,
                "inactive": t.inactive,
                "delete": t.delete,
            }
        )
    due = rollover.zsk_due(keyset, zsk, dnskey_ttl) if zsk else None
    return {
        "keys": keys,
        "rollovers": rollovers(keyset, now, zsk, dnskey_ttl, propagation),
        "next_zsk_rollover": due,
        "next_change": rollover.next_event(keyset, now),
        "problems": now_state.problems,
    }
