"""DNSSEC for a node's embedded zones: their signers, and the re-signing of what ages.

`zone_signers` makes one `ZoneSigner` per embedded zone with a `dnssec:` section, with
the keys of its `key_files`, or else those generated into the state directory on first
start (`<state>.keys/<zone>/`).  `resign` wakes the node when the first signature of a
signed zone reaches its refresh time: the node then publishes that zone with a new serial,
and the publish re-makes every signature that is due (so secondaries transfer them too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from dnsfailover.alerts.alerter import Alerter
from dnsfailover.alerts.notice import Notice
from dnsfailover.config.schema import Config, ZoneConfig
from dnsfailover.dnssec import keys
from dnsfailover.dnssec.keys import KeySet
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


def zone_keys(zone: ZoneConfig, origin: str, state: str | os.PathLike[str] | None) -> KeySet:
    """The keys `zone` signs with: its `key_files`, else those in the state directory
    (generated there when missing; with no state file, in a directory beside the cwd).

    :raises keys.KeyFileError: a key file is missing, unreadable, open to others or wrong.
    """
    section = zone.dnssec
    assert section is not None
    if section.key_paths:
        return keys.load(section.key_paths, origin, section.algorithm, section.keys)
    where = state if state not in (None, ":memory:") else "dnsfailover.db"
    assert where is not None
    found = keys.ensure(keys.keys_directory(where, origin), origin, section.algorithm, section.keys)
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
        signers[origin] = ZoneSigner(
            zone_keys(zone, origin, state),
            section.policy,
            section.denial == "nsec3",
            dnskey_ttl=int(getattr(section, "dnskey_ttl", 3600)),
            cds=bool(getattr(section, "cds", True)),
            clock=clock,
        )
        found = signers[origin].keys
        log.info(
            "dnssec: %s signed with %s (%s, %s)",
            origin,
            ", ".join(f"{k.role.upper()} {k.tag}" for k in found.keys),
            keys.ALGORITHMS[found.keys[0].algorithm],
            section.denial.upper(),
        )
    return signers


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
        out[origin] = {
            "keys": [
                {
                    "tag": k.tag,
                    "role": k.role,
                    "algorithm": keys.ALGORITHMS.get(k.algorithm, str(k.algorithm)),
                    "ds": k.ds().to_text() if k.role != "zsk" else None,
                }
                for k in signer.keys.keys
            ],
            "denial": "nsec3" if signer.nsec3 else "nsec",
            "signatures_made": signer.stats.signatures,
            "signing_cpu_seconds": round(signer.stats.seconds, 3),
            "next_refresh": secure.refresh_at,
            "next_expiry": expiry,
            "last_refresh": signer.stats.last_refresh or None,
            "problem": problem(origin, secure.refresh_at, expiry, signer.stats.problem, now),
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
        secured = node.embedded.snapshot.secured()
        due = {o for o, s in secured.items() if s.refresh_at <= now}
        if due:
            if due - told:
                log.info("dnssec: re-signing what ages in %s", ", ".join(sorted(due)))
            told = due
            node.publisher.resign |= due
            node.wake(force=True)
        later = [s.refresh_at for o, s in secured.items() if o not in due]
        wait = min(later, default=now + MAX_SLEEP) - now
        await asyncio.sleep(min(MAX_SLEEP, max(MIN_SLEEP, wait)))
