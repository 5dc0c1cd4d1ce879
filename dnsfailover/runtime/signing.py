"""DNSSEC for a node's embedded zones: their signers, and the re-signing of what ages.

`zone_signers` makes one `ZoneSigner` per embedded zone with a `dnssec:` section, with
the keys of its `key_files`, or else those generated into the state directory on first
start (`<state>.keys/<zone>/`).  `resign` wakes the node when the first signature of a
signed zone reaches its refresh time: the node then publishes that zone with a new serial,
and the publish re-makes every signature that is due (so secondaries transfer them too).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from dnsfailover.alerts.alerter import Alerter
from dnsfailover.alerts.notice import Notice
from dnsfailover.config.schema import Config, ZoneConfig
from dnsfailover.dnssec import keys, rollover
from dnsfailover.dnssec.keys import KeySet
from dnsfailover.dnssec.status import describe
from dnsfailover.engine.decide import decide
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.simulate import resolve
from dnsfailover.health.tracker import HealthTracker
from dnsfailover.model import State
from dnsfailover.rdata import name_labels
from dnsfailover.runtime.publish import Publisher
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.secure import ZoneSigner, presign

log = logging.getLogger("dnsfailover.dnssec")

MIN_SLEEP = 1.0
MAX_SLEEP = 3600.0
KEY_CHECK = 60.0
"""How often the key files are read again: `dnsfailover dnssec rollover` changes them from
outside, and the automatic ZSK rollover writes its next steps then."""


def zone_keys(
    zone: ZoneConfig,
    origin: str,
    state: str | os.PathLike[str] | None,
    now: float | None = None,
    max_ttl: float = 86400.0,
) -> KeySet:
    """The keys `zone` signs with: its `key_files`, else those in the state directory
    (generated there when missing, and the automatic ZSK rollover's due steps written: see
    `rollover.ensure`; with no state file, in a directory beside the cwd).

    :raises keys.KeyFileError: a key file is missing, unreadable, open to others or wrong.
    """
    section = zone.dnssec
    assert section is not None
    if section.key_paths:
        return keys.load(section.key_paths, origin, section.algorithm, section.keys)
    where = state if state not in (None, ":memory:") else "dnsfailover.db"
    assert where is not None
    found = rollover.ensure(
        keys.keys_directory(where, origin),
        origin,
        section.algorithm,
        section.keys,
        time.time() if now is None else now,
        section.zsk_rollover,
        section.dnskey_ttl,
        max_ttl,
    )
    for key in found.keys:
        files = key.files
        if files is not None and files[0] in found.generated:
            log.warning(
                "dnssec: generated %s %d (%s) for %s in %s: its DS goes to the parent "
                "(dnsfailover dnssec ds)",
                key.role.upper(),
                key.tag,
                keys.ALGORITHMS[key.algorithm],
                origin,
                files[0].parent,
            )
    return found


def _max_ttl(config: Config, origin: str) -> float:
    """The longest TTL the zone serves (how long a resolver may cache a signature)."""
    zone = config.zones[origin]
    assert zone.dnssec is not None
    ttls = [rs.ttl for rs in zone.static_records(origin)]
    ttls += [r.ttl for o, _n, r in config.managed() if o == origin and r.ttl is not None]
    return float(max([zone.dnssec.dnskey_ttl, *ttls]))


def zone_signer(
    config: Config,
    origin: str,
    state: str | os.PathLike[str] | None,
    clock: Callable[[], float],
) -> ZoneSigner:
    """`origin`'s signer, with the keys as their files say now; its `renew` makes the next
    one (the files read again: a rollover step, `dnssec rollover`)."""
    zone = config.zones[origin]
    section = zone.dnssec
    assert section is not None
    signer = ZoneSigner(
        zone_keys(zone, origin, state, clock(), _max_ttl(config, origin)),
        section.policy,
        section.denial == "nsec3",
        dnskey_ttl=section.dnskey_ttl,
        cds=section.cds,
        clock=clock,
    )
    signer.renew = functools.partial(zone_signer, config, origin, state, clock)
    signer.zsk_policy = section.zsk_rollover
    return signer


def zone_signers(
    config: Config,
    state: str | os.PathLike[str] | None,
    clock: Callable[[], float],
) -> dict[str, ZoneSigner]:
    """A signer for each embedded zone with `dnssec:` (origin → signer)."""
    signers: dict[str, ZoneSigner] = {}
    for origin, zone in config.zones.items():
        section = zone.dnssec
        if section is None or zone.provider != "embedded":
            continue
        signers[origin] = signer = zone_signer(config, origin, state, clock)
        log.info("dnssec: %s signed with %s (%s)", origin, _keys(signer), section.denial.upper())
    return signers


def _keys(signer: ZoneSigner) -> str:
    st = signer.state
    return ", ".join(
        f"{k.role.upper()} {k.tag} {keys.ALGORITHMS[k.algorithm]}"
        + ("" if k in st.ksks or k in st.zsks else " (published)")
        for k in st.published
    )


def renewed(current: Mapping[str, ZoneSigner]) -> dict[str, ZoneSigner]:
    """The signers whose keys now do something else (a rollover step came, the files
    changed): origin → its next signer.  A signer whose keys cannot be read stays, with its
    problem said (status, metric, notice)."""
    fresh: dict[str, ZoneSigner] = {}
    for origin, signer in current.items():
        if signer.renew is None:
            continue
        try:
            new = signer.renew()
        except keys.KeyFileError as e:
            signer.stats.problem = f"cannot read its keys: {e}"
            continue
        if signer.stats.problem and signer.stats.problem.startswith("cannot read its keys"):
            signer.stats.problem = None
        if new.fingerprint != signer.fingerprint:
            new.stats = signer.stats  # the counts go on
            fresh[origin] = new
            log.warning("dnssec: %s keys now: %s", origin, _keys(new))
    return fresh


async def signers(
    config: Config, state: str | os.PathLike[str] | None, clock: Callable[[], float]
) -> dict[str, ZoneSigner]:
    """`zone_signers` on a thread (it reads, and may generate, key files)."""
    return await asyncio.to_thread(zone_signers, config, state, clock)


OVERDUE = 600.0
"""Signatures due this long without a publish that re-makes them are a problem (status,
metric, a `dnssec` notice): they keep being served until they expire."""


def status(embedded: EmbeddedZones, now: float) -> dict[str, dict[str, Any]]:
    """Each signed zone's keys, signatures and their times, and what is wrong (if anything)."""
    out: dict[str, dict[str, Any]] = {}
    for origin, secure in sorted(embedded.snapshot.secured().items()):
        signer = secure.signer
        policy = signer.policy
        expiry = secure.refresh_at + policy.refresh * policy.validity
        described = describe(
            signer.keys,
            now,
            cds=signer.cds,
            zsk=signer.zsk_policy,
            dnskey_ttl=signer.dnskey_ttl,
            propagation=signer.zsk_policy.propagation if signer.zsk_policy else 3600.0,
        )
        for key, found in zip(signer.keys.keys, described["keys"], strict=True):
            found["ds"] = key.ds().to_text() if key.role != "zsk" else None
        out[origin] = {
            **described,
            "denial": "nsec3" if signer.nsec3 else "nsec",
            "signatures_made": signer.stats.signatures,
            "signing_cpu_seconds": round(signer.stats.seconds, 3),
            "next_refresh": secure.refresh_at,
            "next_expiry": expiry,
            "last_refresh": signer.stats.last_refresh or None,
            "problem": problem(
                origin,
                secure.refresh_at,
                expiry,
                signer.stats.problem or "; ".join(described["problems"]) or None,
                now,
            ),
        }
    return out


def problem(
    origin: str, refresh_at: float, expiry: float, failed: str | None, now: float
) -> str | None:
    """Why `origin`'s signatures are in danger, in words (None: they are not)."""
    if failed is not None:
        return f"dnssec: {origin}: signing fails ({failed}); signatures expire {_at(expiry)}"
    if now - refresh_at > OVERDUE:
        return (
            f"dnssec: {origin}: signatures due for re-signing since {_at(refresh_at)} are "
            f"not re-made (no publish); the first expires {_at(expiry)}"
        )
    return None


def _at(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(when))


class Signed(Protocol):
    """What `resign` needs of the node."""

    embedded: EmbeddedZones
    publisher: Publisher
    alerter: Alerter
    config: Config

    @property
    def tracker(self) -> HealthTracker: ...

    def overrides(self) -> list[Override]: ...

    def wake(self, force: bool = False) -> None: ...


WARM_AFTER = 5.0
WARM_EVERY = 6 * 3600.0
"""Signing ahead (`warm`) starts this long after start-up, and runs again this often."""


def failure_domains(config: Config) -> list[str]:
    """The tiers whose loss a failover answers (every tier name of an active-passive record
    with several tiers; name tiers after regions and these are the regions)."""
    return sorted({t.name for _o, _n, r in config.managed() if len(r.tiers) > 1 for t in r.tiers})


def warm_once(node: Signed, now: float) -> tuple[int, int]:
    """Sign ahead the answers each failure domain's loss would serve (decided from the
    health now, with that tier DOWN), so that the failover itself signs nothing but its SOA;
    (signatures made, domains).  Runs on a thread: `decide` and signing are pure."""
    signers = node.embedded.signers
    config = node.config
    domains = failure_domains(config)
    if not signers or not domains:
        return 0, 0
    states = node.tracker.states()
    overrides = node.overrides()
    made = 0
    for tier in domains:
        down = resolve(config, [f"tier:{tier}"])
        health = {k: State.DOWN if k in down else v for k, v in states.items()}
        decision = decide(config, health, node.publisher.engine, now, overrides=overrides)
        for zone in decision.zones:
            signer, served = signers.get(zone.origin), node.embedded.contents.get(zone.origin)
            if signer is None or served is None:
                continue
            differ = [rs for k, rs in zone.managed.items() if served.managed.get(k) != rs]
            made += presign(signer, name_labels(zone.origin), differ)
    return made, len(domains)


async def warm(node: Signed, clock: Callable[[], float]) -> None:
    """Sign ahead (`warm_once`) after start-up, then every `WARM_EVERY` (signatures last
    far longer; a reload's new answers are signed ahead at the next pass)."""
    await asyncio.sleep(WARM_AFTER)
    while True:
        started = time.monotonic()
        try:
            made, domains = await asyncio.to_thread(warm_once, node, clock())
        except Exception:  # a failover signs what it needs anyway
            log.warning("dnssec: cannot sign ahead", exc_info=True)
        else:
            if made:
                log.info(
                    "dnssec: signed ahead %d answers for the loss of %d tier(s) in %.1fs",
                    made,
                    domains,
                    time.monotonic() - started,
                )
        await asyncio.sleep(WARM_EVERY)


async def resign(node: Signed, clock: Callable[[], float] = time.time) -> None:
    """Wake `node` for a publish of each signed zone whose signatures are due: the
    publisher counts them as changed (a new serial, so secondaries transfer them too), and
    the publish re-makes every signature that is due.  Until that publish, every second.
    Also signs ahead what failovers would serve (`warm`)."""
    ahead = asyncio.create_task(warm(node, clock), name="dnsfailover-sign-ahead")
    try:
        await _resign(node, clock)
    finally:
        ahead.cancel()


async def _resign(node: Signed, clock: Callable[[], float]) -> None:
    told: set[str] = set()
    check_keys = clock() + KEY_CHECK
    alarmed: set[str] = set()
    while True:
        now = clock()
        for origin, found in status(node.embedded, now).items():
            bad = found["problem"]
            if bad is not None and origin not in alarmed:
                log.error("%s", bad)
                node.alerter.emit(Notice("dnssec", origin, bad, now, "critical"))
                alarmed.add(origin)
            elif bad is None and origin in alarmed:
                message = f"dnssec: {origin}: signatures are re-made again"
                log.warning("%s", message)
                node.alerter.emit(Notice("dnssec", origin, message, now, "info"))
                alarmed.discard(origin)
        current = node.embedded.signers
        events = [rollover.next_event(s.keys, now) for s in current.values()]
        key_event = min((e for e in events if e is not None), default=check_keys)
        if now >= min(check_keys, key_event):
            check_keys = now + KEY_CHECK
            fresh = await asyncio.to_thread(renewed, current)
            if fresh:  # the next publish signs these zones anew with their new keys
                node.embedded.sign_with({**current, **fresh})
                node.publisher.resign |= set(fresh)
                node.wake(force=True)
        secured = node.embedded.snapshot.secured()
        due = {o for o, s in secured.items() if s.refresh_at <= now}
        if due:
            if due - told:
                log.info("dnssec: re-signing what ages in %s", ", ".join(sorted(due)))
            told = due
            node.publisher.resign |= due
            node.wake(force=True)
        later = [s.refresh_at for o, s in secured.items() if o not in due]
        wait = min([*later, check_keys, key_event]) - now
        await asyncio.sleep(min(MAX_SLEEP, max(MIN_SLEEP, wait)))
