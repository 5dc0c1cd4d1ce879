"""`plan` and `apply`: one round of probes, one decision, and the provider diffs.

Neither serves DNS nor writes the state store. `plan` changes nothing anywhere; `apply`
pushes the plans to external providers once, refusing unsafe ones unless forced.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from dnsfailover.checks.scheduler import ProbeScheduler
from dnsfailover.config.schema import Config
from dnsfailover.engine.decide import decide
from dnsfailover.engine.values import Decision, EngineState
from dnsfailover.health.tracker import HealthTracker
from dnsfailover.model import Observation
from dnsfailover.provider.contract import ApplyResult, create_provider
from dnsfailover.provider.plan import Plan, UnsafePlan
from dnsfailover.provider.sync import ZoneSync
from dnsfailover.runtime.store import SavedHealth, Store
from dnsfailover.runtime.wiring import (
    cold_start_deadline,
    hysteresis,
    provider_records,
    region_source,
    safety,
)


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """One external zone's plan, or why there is none."""

    zone: str
    provider: str
    plan: Plan | None
    unsafe: tuple[str, ...] = ()
    error: str = ""
    result: ApplyResult | None = None


@dataclass(frozen=True, slots=True)
class PlanResult:
    observations: tuple[Observation, ...]
    decision: Decision
    zones: tuple[ZonePlan, ...] = field(default=())


def _read_saved(state_path: str | Path) -> tuple[list[SavedHealth], EngineState]:
    """Health and engine state from a store, if there is one; never creates it."""
    if not Path(state_path).exists():
        return [], EngineState()
    store = Store(state_path, readonly=True)
    try:
        return store.health(), store.engine_state()
    finally:
        store.close()


async def decide_once(
    config: Config, state_path: str | Path | None, region: str = "local"
) -> tuple[tuple[Observation, ...], Decision]:
    """One round of probes (store only read), then a decision."""
    tracker = HealthTracker(hysteresis(config), config.votes())
    engine = EngineState()
    if state_path is not None:
        saved, engine = await asyncio.to_thread(_read_saved, state_path)
        for h in saved:
            tracker.restore(h.target, h.region, h.state, h.since, h.reason)

    def observe(obs: Observation) -> None:
        tracker.observe(obs)

    scheduler = ProbeScheduler(
        config.targets(),
        region=region,
        on_observation=observe,
        source_address=region_source(config, region),
    )
    try:
        observations = await scheduler.run_round(cold_start_deadline(config))
    finally:
        await scheduler.stop()
    return tuple(observations), decide(config, tracker.states(), engine, time.time())


async def _zone_plan(
    config: Config, decision: Decision, origin: str, *, push: bool, force: bool
) -> ZonePlan:
    zone = config.zones[origin]
    content = next(z for z in decision.zones if z.origin == origin)
    desired = provider_records(content)
    try:
        provider = await asyncio.to_thread(create_provider, zone.provider, origin, zone.options)
    except Exception as e:  # any failure to build or reach it is this zone's error
        return ZonePlan(origin, zone.provider, None, error=f"{type(e).__name__}: {e}")
    sync = ZoneSync(provider, safety(config, origin), force=force or zone.force)
    try:
        plan = await sync.plan(desired, content.steered)
        unsafe = tuple(plan.unsafe_reasons(sync.safety))
        if not push or not plan:
            return ZonePlan(origin, zone.provider, plan, unsafe)
        try:  # refused per key: the safe changes go, the others are held and reported
            cleared, held = plan.partition(sync.safety, force=sync.force)
        except UnsafePlan as e:
            return ZonePlan(origin, zone.provider, plan, unsafe, error=str(e))
        result = await provider.apply(cleared) if cleared else None
        error = f"{len(held)} record set(s) held back, not applied" if held else ""
        return ZonePlan(origin, zone.provider, plan, unsafe, error=error, result=result)
    except Exception as e:
        return ZonePlan(origin, zone.provider, None, error=f"{type(e).__name__}: {e}")
    finally:
        await provider.close()


async def plan(
    config: Config,
    state_path: str | Path | None,
    region: str = "local",
    *,
    push: bool = False,
    force: bool = False,
) -> PlanResult:
    """Probe once, decide, and diff each external zone against its provider.

    With `push`, apply each safe (or forced) plan; embedded zones are served by `serve`.
    """
    observations, decision = await decide_once(config, state_path, region)
    external = [o for o, z in config.zones.items() if z.provider != "embedded"]
    zones = await asyncio.gather(
        *(_zone_plan(config, decision, o, push=push, force=force) for o in external)
    )
    return PlanResult(observations, decision, tuple(zones))
