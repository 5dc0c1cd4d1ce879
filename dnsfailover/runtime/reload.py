"""What a reload changes besides the config itself: probes, provider safety, and (through
`Serving.retarget`) zone-transfer ACLs, TSIG keys and NOTIFY targets.  The node calls it
under its decide lock, so no decision sees half a reload."""

from __future__ import annotations

from collections.abc import Mapping

from dnsfailover.checks.scheduler import ProbeScheduler
from dnsfailover.config.schema import Config
from dnsfailover.provider.sync import ZoneSync
from dnsfailover.runtime.serving import Serving
from dnsfailover.runtime.wiring import cold_start_deadline, safety


async def apply_reload(
    old: Config,
    config: Config,
    *,
    scheduler: ProbeScheduler | None,
    syncs: Mapping[str, ZoneSync],
    serving: Serving,
) -> str:
    """Bring the running parts in line with `config`; a summary of the targets' change."""
    before = set(old.targets())
    added = set(config.targets()) - before
    if scheduler is not None:
        scheduler.update(config.targets())
        if added:
            # New targets are probed once before deciding, so the reload publishes its
            # whole change at once instead of serving them as unknown first.
            await scheduler.run_round(cold_start_deadline(config), only=added)
    for origin, sync in syncs.items():
        sync.safety = safety(config, origin)
        sync.force = config.zones[origin].force
        sync.read_all()
    await serving.retarget(old, config)
    after = set(config.targets())
    return (
        f"{len(after - before)} target(s) added, {len(before - after)} removed, "
        f"{len(after & before)} kept"
    )
