"""A reload, all or nothing: build and check everything the new config needs, then swap.

`stage` does every step that can fail (derives the new config's tables on a thread, builds
the new probes and their timers, reads the new TSIG keys and swaps the transfer ACLs, which
is itself atomic) and changes nothing the node runs on until the last of them has
succeeded; the node then swaps its config and calls `commit`, whose steps only swap what
was built.  A failed reload leaves the running config, its probes and its answers whole,
and `report_failure` says so (an ERROR log line and a `reload-failed` event).  The node
runs both under its decide lock, so no decision sees half a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dnsfailover.alerts.alerter import Alerter
from dnsfailover.checks.scheduler import Prober
from dnsfailover.config.schema import Config
from dnsfailover.engine.index import index
from dnsfailover.errors import ConfigError, UserError
from dnsfailover.geo.steering import Steering
from dnsfailover.provider.sync import ZoneSync
from dnsfailover.runtime.serving import Serving
from dnsfailover.runtime.wiring import cold_start_deadline, hysteresis, safety

log = logging.getLogger("dnsfailover.service")


class ReloadRefused(UserError):
    """The new config needs a restart, not a reload; the running one stays."""


class ReloadFailed(UserError):
    """The new config could not be applied; the running one stays, whole."""


@dataclass(frozen=True, slots=True)
class Staged:
    """What a reload will swap in: all of it built and checked, none of it in use yet."""

    config: Config
    rules: dict[str, Any]  # hysteresis per target
    votes: dict[str, tuple[str, str | int]]
    probes: Any  # the prober's staged update, or None
    alerter: Alerter | None  # a new one when the notifications changed
    steering: Steering | None = None  # the new config's, over its database read again


def refuse_unreloadable(old: Config, config: Config) -> None:
    """Adding or removing zones, or changing a zone's provider, needs a restart."""
    if set(config.zones) != set(old.zones) or any(
        (z.provider, z.options) != (old.zones[o].provider, old.zones[o].options)
        for o, z in config.zones.items()
    ):
        raise ReloadRefused(
            "reload cannot add or remove zones or change a zone's provider; restart instead"
        )
    signing = [o for o, z in config.zones.items() if z.dnssec != old.zones[o].dnssec]
    if signing:
        raise ReloadRefused(
            f"reload cannot change how a zone is signed ({', '.join(signing)}: its dnssec "
            "section); restart instead (docs/dnssec.md)"
        )


def _derive(config: Config) -> tuple[dict[str, Any], dict[str, tuple[str, str | int]]]:
    """The new config's tables, built once (on a thread: a big config takes a while)."""
    config.targets()
    index(config)  # the engine's, so the first decision after the swap builds nothing
    return dict(hysteresis(config)), config.votes()


async def stage(
    old: Config,
    config: Config,
    *,
    scheduler: Prober | None,
    serving: Serving,
    node_id: str,
) -> Staged:
    """Every step of a reload that can fail; the node runs on `old` as before if it raises.

    :raises ReloadRefused: the change needs a restart.
    :raises ReloadFailed: any other failure, with its reason.
    """
    refuse_unreloadable(old, config)
    try:
        rules, votes = await asyncio.to_thread(_derive, config)
        probes = await scheduler.stage_update(config.targets()) if scheduler is not None else None
        alerter = None
        if config.notifications != old.notifications:
            alerter = Alerter(config.notifications, node=node_id)
        steering = await serving.restage(old, config)
        await serving.retarget(old, config)  # last: it swaps (atomically) when it succeeds
    except Exception as e:
        raise ReloadFailed(f"cannot apply the new config: {type(e).__name__}: {e}") from e
    return Staged(config, rules, votes, probes, alerter, steering)


async def commit(
    old: Config,
    staged: Staged,
    *,
    scheduler: Prober | None,
    syncs: Mapping[str, ZoneSync],
    serving: Serving,
) -> str:
    """Swap in the probes, steering and provider settings that `stage` built; a summary of
    the targets' change.  (The node has already swapped its config, rules and alerter.)"""
    config = staged.config
    await serving.resteer(config, staged.steering)
    before = set(old.targets())
    after = set(config.targets())
    if scheduler is not None and staged.probes is not None:
        scheduler.commit(staged.probes)
        if added := after - before:
            # New targets are probed once before deciding, so the reload publishes its
            # whole change at once instead of serving them as unknown first.
            await scheduler.run_round(cold_start_deadline(config), only=added)
    for origin, sync in syncs.items():
        sync.safety = safety(config, origin)
        sync.force = config.zones[origin].force
        sync.read_all()
    return (
        f"{len(after - before)} target(s) added, {len(before - after)} removed, "
        f"{len(after & before)} kept"
    )


def describe_failure(error: BaseException, path: str | None) -> str:
    """One message for a failed reload: the problems of a bad file, else the reason."""
    if isinstance(error, ConfigError):
        return f"{path} is invalid:\n  " + "\n  ".join(str(p) for p in error.problems)
    return str(error) or type(error).__name__


async def report_failure(
    error: BaseException,
    path: str | None,
    record: Callable[[str, str, str], Awaitable[None]],
) -> None:
    """Log a failed reload at ERROR and record it as a `reload-failed` event."""
    message = describe_failure(error, path)
    log.error("reload: %s; still running the previous config", message)
    with contextlib.suppress(Exception):  # the history may be unwritable; the log has it
        await record("reload-failed", "config", message[:2000])
