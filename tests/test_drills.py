"""Drills: the `drills:` config, and `DrillScheduler` against a real in-process service
(real HTTP endpoints, real DNS queries to the service's own server, its real history)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import API, C, D, Live, live_service
from blockbuster import BlockBuster, blockbuster_ctx
from pydantic import ValidationError

from dnsfailover.config.drill_targets import DrillTargetError, drill_problems, drill_target
from dnsfailover.config.drills import DrillConfig
from dnsfailover.config.load import loads
from dnsfailover.drills.scheduler import DrillScheduler
from dnsfailover.drills.spec import DrillReport

EVERY = 3.0  # test-only: a config file cannot go below 1h


def drill(**fields: Any) -> DrillConfig:
    body = {"name": "api", "tier": "primary", "every": f"{EVERY:g}s", "for": "1s", **fields}
    return DrillConfig.model_validate(body, context={"min_every": 1.0})


@pytest.fixture
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx(["dnsfailover"]) as bb:
        yield bb


async def events(live: Live, kind: str) -> list[dict[str, Any]]:
    body = await live.get("/api/v1/events?limit=500")
    return [e for e in body["events"] if e["kind"] == kind]


async def until_events(live: Live, kind: str, count: int, limit: float) -> list[dict[str, Any]]:
    async with asyncio.timeout(limit):
        while len(found := await events(live, kind)) < count:  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.05)
    return found


# -- config --------------------------------------------------------------------------------------


def test_drill_config_reads_periods_times_and_refuses_what_makes_no_sense() -> None:
    d = DrillConfig.model_validate(
        {"name": "api", "tier": "primary", "every": "7d", "for": "5m", "at": "03:30"}
    )
    assert (d.every, d.for_, d.at) == (7 * 86400, 300, 3 * 3600 + 1800)
    assert d.problems() == []
    with pytest.raises(ValidationError, match="every must be at least 3600s"):
        DrillConfig.model_validate({"name": "api", "tier": "primary", "every": "30m"})
    with pytest.raises(ValidationError, match=r'"03:00" \(quoted\)'):
        # YAML 1.1 reads an unquoted 03:00 as 180
        DrillConfig.model_validate({"name": "api", "tier": "t", "every": "1d", "at": 180})
    with pytest.raises(ValidationError, match="for must be longer than zero"):
        DrillConfig.model_validate({"name": "api", "tier": "t", "every": "1d", "for": 0})
    long = DrillConfig.model_validate(
        {"name": "a", "tier": "t", "every": "2h", "for": "3h", "at": "05:00"}
    )
    assert [k for k, _m in long.problems()] == ["for", "at"]


def test_slots_are_fixed_in_wall_clock_time() -> None:
    daily = DrillConfig.model_validate({"name": "a", "tier": "t", "every": "1d", "at": "03:00"})
    midnight = 1_700_006_400.0  # a UTC midnight
    assert daily.next_slot(midnight) == midnight + 3 * 3600
    assert daily.next_slot(midnight + 3 * 3600) == midnight + 86400 + 3 * 3600, "strictly after"
    assert daily.next_slot(midnight + 5 * 3600) == midnight + 86400 + 3 * 3600
    weekly = DrillConfig.model_validate({"name": "a", "tier": "t", "every": "1w"})
    assert weekly.next_slot(1.0) == 7 * 86400


def test_drill_problems_name_the_missing_tier_and_name() -> None:
    config = loads(_CONFIG)
    good, bad_tier, bad_name = (
        DrillConfig.model_validate({"name": n, "tier": t, "every": "1d"})
        for n, t in (("api", "backup"), ("api", "west"), ("www", "primary"))
    )
    assert drill_problems(config, (good,)) == []
    problems = drill_problems(config, (good, bad_tier, bad_name, good))
    assert problems == [
        (
            ("drills", 1, "tier"),
            "api.example.test. has no tier 'west' (tiers: "
            "api.example.test. backup, api.example.test. primary)",
        ),
        (
            ("drills", 2, "name"),
            "'www' is not an active-passive managed name (active-passive: api.example.test.)",
        ),
        (("drills", 3), "the same drill as drills[0]"),
    ]
    assert drill_target(config, "primary")[1] == "api.example.test."
    with pytest.raises(DrillTargetError, match="no name has a tier 'west'"):
        drill_target(config, "west")


_CONFIG = """\
checks:
  web: {type: http}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, values: [127.0.0.1]}
    failover:
      www: {policy: active-active, check: web, endpoints: [127.0.0.81]}
      api:
        policy: active-passive
        check: web
        tiers:
          - {name: primary, endpoints: [127.0.0.82]}
          - {name: backup, endpoints: [127.0.0.83]}
"""


# -- the scheduler ---------------------------------------------------------------------------


async def test_a_scheduled_drill_runs_at_its_slot_and_restores_the_tier(
    tmp_path: Path, blockbuster: BlockBuster
) -> None:
    async with live_service(tmp_path) as live:
        assert await live.answer(API) == (C,)
        scheduler = DrillScheduler(live.service, [drill()], min_every=1.0)
        scheduler.start()
        try:
            async with asyncio.timeout(4 * EVERY + 10):
                while not scheduler.reports:  # noqa: ASYNC110 - the scheduler's own pace
                    await asyncio.sleep(0.05)
        finally:
            await scheduler.stop()
        report: DrillReport = scheduler.reports[0]
        assert report.ok, report.problem
        assert (report.before, report.during, report.after) == ((C,), (D,), (C,))
        assert report.failover_time is not None
        assert report.failover_time < 5
        assert report.recovery_time is not None
        assert report.recovery_time < 5
        assert report.serial_before is not None
        assert report.serial_after is not None
        assert report.serial_before < report.serial_after
        assert await live.answer(API) == (C,)
        assert live.service.overrides() == []

        (done, *_) = await events(live, "drill")
        assert done["subject"] == f"{API} tier primary"
        assert done["message"].startswith(f"drill {API} tier primary for 1s passed: failed over")
        overrides = [e["message"] for e in await events(live, "override")]
        set_ = next(m for m in overrides if "force_down" in m and m.startswith("set "))
        assert "by drill-scheduler@" in set_
        assert "drill: scheduled drill" in set_
        # at a slot of the wall clock: a multiple of `every` since the epoch
        oid = set_.split()[1].rstrip(":")
        rows = await events(live, "override")
        created = next(e["at"] for e in rows if e["message"].startswith(f"set {oid}:"))
        assert created % EVERY < 1.0
        assert any(
            m.startswith(f"removed {oid} (force_down)") and "hold over" in m for m in overrides
        )


async def test_a_refused_drill_is_recorded_and_waits_for_its_next_slot(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        await asyncio.to_thread(live.endpoints.stop, D)  # backup down: primary is the last
        await live.until(
            "/api/v1/endpoints",
            lambda b: any(e["address"] == D and e["state"] == "down" for e in b["endpoints"]),
        )
        serial = (await live.get("/api/v1/status"))["zones"][0]["serial"]
        scheduler = DrillScheduler(live.service, [drill(every="2s")], min_every=1.0)
        scheduler.start()
        try:
            refusals = await until_events(live, "drill", 2, limit=20)
        finally:
            await scheduler.stop()
        first, second = sorted(e["at"] for e in refusals[:2])
        assert second - first > 1.5, "not retried before the next slot"
        assert all("scheduled drill refused" in e["message"] for e in refusals)
        assert all("refused by an interlock" in e["message"] for e in refusals)
        interlocks = await events(live, "interlock")
        assert any("drill: scheduled drill" in e["message"] for e in interlocks)
        assert not scheduler.reports
        assert live.service.overrides() == []
        assert await live.answer(API) == (C,)
        assert (await live.get("/api/v1/status"))["zones"][0]["serial"] == serial


async def test_stopping_the_scheduler_mid_drill_restores_the_tier(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        scheduler = DrillScheduler(live.service, [], min_every=1.0)
        long = drill(every="1h", **{"for": "10m"})
        running = asyncio.create_task(scheduler.run_once(long))
        await live.until_answer(API, (D,))
        await scheduler.stop()
        report = await asyncio.wait_for(running, 10)
        assert report is not None
        assert report.problem == "aborted: the server is stopping"
        assert report.failover_time is not None
        assert all(o.action != "force_down" for o in live.service.overrides())
        await live.until_answer(API, (C,))  # failback: manual, so the drill asked for one
        await live.until("/api/v1/overrides", lambda b: b["overrides"] == [])  # taken once
        (done,) = await events(live, "drill")
        assert "FAILED: aborted" in done["message"]
