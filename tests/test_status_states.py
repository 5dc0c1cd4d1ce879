"""Name states and endpoint roles as an on-call reader sees them: a real in-process node and
its API over real HTTP endpoints on 127.0.0.7x, real DNS, the `status` and `endpoints`
commands and /metrics.

`api` is active-passive (primary C, backup D, failback manual), `www` active-active (A, B).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_support import API, WWW, A, B, C, D, Live, live_service
from geo_mmdb import FRANKFURT, city, write_mmdb
from support import HttpEndpoints

from dnsfailover.api.server import ApiServer
from dnsfailover.api.states import summary
from dnsfailover.cli.ops import register
from dnsfailover.config.load import load
from dnsfailover.health.tracker import HealthTracker, Hysteresis, Streak
from dnsfailover.model import Observation, State
from dnsfailover.runtime.node import Node


def name(status: dict[str, Any], wanted: str) -> dict[str, Any]:
    return next(n for n in status["names"] if n["name"] == wanted)


def endpoint(body: dict[str, Any], wanted: str, address: str) -> dict[str, Any]:
    return next(e for e in body["endpoints"] if e["name"] == wanted and e["address"] == address)


async def cli(live: Live, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run one operator command against the live API (on a thread: it blocks on HTTP)."""
    p = argparse.ArgumentParser(prog="dnsfailover")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args([*argv, "--api", live.base])
    code = await asyncio.to_thread(args.func, args)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


async def cli_until(live: Live, capsys: pytest.CaptureFixture[str], first: str, *argv: str) -> str:
    """The command's output once its first line is `first` (health moves on its own: a
    100 ms probe can time out on a loaded machine)."""
    async with asyncio.timeout(10):
        while (out := await cli(live, capsys, *argv)).splitlines()[0] != first:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return out


async def metric(live: Live, line: str) -> float:
    async with live.http.get(live.base + "/metrics") as r:
        text = await r.text()
    values = [ln.rsplit(" ", 1)[1] for ln in text.splitlines() if ln.startswith(line + " ")]
    assert values, f"no {line} in /metrics"
    return float(values[0])


def state_line(zone_name: str, state: str) -> str:
    labels = f'group="",name="{zone_name}",state="{state}",zone="example.test."'  # sorted
    return f"dnsfailover_name_state{{{labels}}}"


async def test_a_failover_is_failed_over_everywhere_not_healthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with live_service(tmp_path) as live:
        await live.until_answer(API, (C,))
        await live.until_answer(WWW, (A, B))
        await live.until("/api/v1/status", lambda b: b["summary"]["text"] == "2 names: 2 healthy")
        eps = await live.until("/api/v1/endpoints", lambda b: endpoint(b, API, D)["state"] == "up")
        # healthy, but its tier is not serving: standby, not struck through as failed
        assert endpoint(eps, API, D)["role"] == "standby"
        assert endpoint(eps, API, C)["role"] == "serving"
        out = await cli(live, capsys, "endpoints")
        assert "UP standby" in next(ln for ln in out.splitlines() if ln.startswith(API) and D in ln)

        await asyncio.to_thread(live.endpoints.stop, C)
        await live.until_answer(API, (D,))
        status = await live.until(
            "/api/v1/status", lambda b: b["summary"]["text"] == "2 names: 1 healthy, 1 failed over"
        )
        api = name(status, API)
        assert api["state"] == "failed_over"
        assert api["state_text"] == "failed over to backup (primary down)"
        assert api["tier"] == "backup"
        assert api["mode"] == "healthy"  # the engine's word: the backup tier is complete
        assert status["summary"]["failed_over"] == 1
        assert status["summary"]["healthy"] == 1

        # the DOWN endpoint's reason is live: its streak grows between two reads
        eps = await live.until("/api/v1/endpoints", lambda b: endpoint(b, API, C)["streak"])
        first = endpoint(eps, API, C)
        assert first["role"] == "down"
        assert endpoint(eps, API, D)["role"] == "serving"
        await live.until(  # a healthy endpoint's run of successes: no count (see Streak)
            "/api/v1/endpoints",
            lambda b: endpoint(b, API, D)["reason"].startswith("passing (HTTP 200"),
        )
        assert first["streak"]["ok"] is False
        assert first["reason"].startswith(f"{first['streak']['count']} consecutive failure")
        eps = await live.until(
            "/api/v1/endpoints",
            lambda b: endpoint(b, API, C)["streak"]["count"] > first["streak"]["count"] + 2,
        )
        later = endpoint(eps, API, C)
        assert later["streak"]["since"] == first["streak"]["since"]  # the same run
        assert later["since"] == first["since"]  # DOWN since the same moment ...
        assert later["for"] > first["for"]  # ... for longer
        assert later["reason"] != first["reason"]
        assert f"{later['streak']['count']} consecutive failures" in later["reason"]
        assert later["changed_reason"].startswith("2 consecutive failures")  # fall: 2

        out = await cli_until(live, capsys, "2 names: 1 healthy, 1 failed over", "status")
        line = next(ln for ln in out.splitlines() if ln.startswith(API))
        assert "failed over to backup (primary down)" in line
        assert "healthy" not in line.split("backup (primary down)")[0]
        explained = await cli(live, capsys, "explain", "api")
        assert explained.startswith(f"{API} answers {D}: failed over to backup (primary down)")
        assert f"{C} DOWN" in explained
        assert f"{D} UP" in explained
        assert "(serving)" in explained

        assert await metric(live, state_line(API, "failed_over")) == 1
        assert await metric(live, state_line(API, "healthy")) == 0
        assert await metric(live, state_line(WWW, "healthy")) == 1

        # the primary comes back; failback is manual, so the name stays failed over and
        # says why; the primary's endpoint is now a healthy standby
        await asyncio.to_thread(live.endpoints.start, C)
        status = await live.until(
            "/api/v1/status", lambda b: "up again" in name(b, API)["state_text"]
        )
        assert name(status, API)["state"] == "failed_over"
        assert "failback waiting for an operator" in name(status, API)["state_text"]
        eps = await live.until("/api/v1/endpoints", lambda b: endpoint(b, API, C)["state"] == "up")
        assert endpoint(eps, API, C)["role"] == "standby"


async def test_all_down_and_degraded_are_their_own_states(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with live_service(tmp_path) as live:
        await live.until_answer(API, (C,))
        await live.until_answer(WWW, (A, B))
        await asyncio.to_thread(live.endpoints.stop, B)
        for address in (C, D):
            await asyncio.to_thread(live.endpoints.stop, address)
        status = await live.until(
            "/api/v1/status",
            lambda b: name(b, API)["state"] == "all_down" and name(b, WWW)["state"] == "degraded",
        )
        assert name(status, API)["state_text"] == "all down (fail open: serving every endpoint)"
        assert name(status, WWW)["state_text"] == "degraded: 1/2 endpoints up"
        assert status["summary"]["text"] == "2 names: 0 healthy, 1 degraded, 1 all down"
        # one state at a time: all down is not also failed over
        assert await metric(live, state_line(API, "all_down")) == 1
        assert await metric(live, state_line(API, "failed_over")) == 0
        assert await metric(live, state_line(WWW, "degraded")) == 1
        eps = await live.get("/api/v1/endpoints")
        assert endpoint(eps, WWW, B)["role"] == "down"
        assert endpoint(eps, WWW, A)["role"] == "serving"
        await cli_until(live, capsys, "2 names: 0 healthy, 1 degraded, 1 all down", "status")


async def test_a_drained_endpoint_is_drained_and_its_name_degraded(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        await live.until_answer(WWW, (A, B))
        body = {"action": "drain", "endpoint": A, "name": WWW, "reason": "patching"}
        await live.call("POST", "/api/v1/overrides", body, status=201)
        await live.until_answer(WWW, (B,))
        eps = await live.until(
            "/api/v1/endpoints", lambda b: endpoint(b, WWW, A)["role"] == "drained"
        )
        assert endpoint(eps, WWW, A)["state"] == "up"  # its health is still shown as it is
        status = await live.get("/api/v1/status")
        assert name(status, WWW)["state"] == "degraded"


def test_the_summary_line_names_each_state_once() -> None:
    states = ["healthy"] * 9 + ["failed_over"] * 2 + ["all_down"]
    assert summary(states)["text"] == "12 names: 9 healthy, 2 failed over, 1 all down"
    one = summary(["no_data"], shadow=1, frozen=True)
    assert one["text"] == (
        "1 name: 0 healthy, 1 no data (1 in shadow mode); circuit breaker frozen: every answer "
        "is held"
    )
    assert one["no_data"] == 1
    assert one["names"] == 1


def test_the_tracker_keeps_the_live_streak_beside_the_state_it_changed_with() -> None:
    target = "web@127.0.0.75:80"
    t = HealthTracker({target: Hysteresis(rise=2, fall=2, interval=1.0)})

    def probe(ok: bool, at: float) -> Streak | None:
        detail = "HTTP 200" if ok else "connection refused"
        t.observe(Observation(target, "local", ok, at, 0.002, detail))
        return t.regions(target)["local"].streak

    assert probe(True, 1.0) == Streak(True, 1, 1.0, 1.0)
    assert probe(True, 2.0) == Streak(True, None, 1.0, 2.0)  # past rise: not all are sent
    assert probe(False, 3.0) == Streak(False, 1, 3.0, 3.0)
    assert probe(False, 4.0) == Streak(False, 2, 3.0, 4.0)
    assert t.state(target) is State.DOWN
    went_down = t.reason(target)
    assert went_down == "2 consecutive failures (connection refused, 2ms)"
    for at in range(5, 15):
        streak = probe(False, float(at))
    assert streak == Streak(False, 12, 3.0, 14.0)
    assert t.reason(target) == went_down  # the state's reason stays the transition's
    assert t.since(target) == 4.0
    assert probe(True, 15.0) == Streak(True, 1, 15.0, 15.0)  # recovering, still DOWN
    assert t.state(target) is State.DOWN


EU, US = "127.0.0.76", "127.0.0.77"
GEO = "geo.example.test."


async def test_a_steered_name_is_in_its_worst_location_groups_state(tmp_path: Path) -> None:
    """DE clients are served eu then us; everyone else us then eu.  With eu down, only the
    DE group is failed over, and the name says so."""
    write_mmdb(tmp_path / "geo.mmdb", {"192.0.2.0/24": city("DE", "EU", FRANKFURT)})
    endpoints = await asyncio.to_thread(HttpEndpoints)
    try:
        ports = {a: await asyncio.to_thread(endpoints.start, a) for a in (EU, US)}
        path = tmp_path / "geo.yaml"
        path.write_text(f"""\
checks:
  web: {{type: http, path: /healthz, interval: 100ms, timeout: 100ms, fall: 2, rise: 2}}
geo: {{database: geo.mmdb}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    records:
      ns1: {{type: A, values: [127.0.0.1]}}
    failover:
      geo:
        policy: active-passive
        check: web
        tiers:
          - {{name: eu, endpoints: [{{address: {EU}, check_port: {ports[EU]}}}]}}
          - {{name: us, endpoints: [{{address: {US}, check_port: {ports[US]}}}]}}
        steering: {{by: country, map: {{DE: [eu, us]}}, default: [us, eu]}}
""")
        config = await asyncio.to_thread(load, path)
        node = Node(config, dns_host="127.0.0.1", dns_port=0, state_path=tmp_path / "s.db")
        await node.start()
        api = ApiServer(node, node, "127.0.0.1", 0, token=None, metrics=node.metrics)
        try:
            host, port = await api.start()
            async with aiohttp.ClientSession() as http:
                live = Live(node, api, f"http://{host}:{port}", 0, endpoints, http)

                def groups(b: dict[str, Any]) -> dict[str, str]:
                    return {g["group"]: g["state"] for g in name(b, GEO)["groups"]}

                status = await live.until(
                    "/api/v1/status",
                    lambda b: groups(b) == {"us,eu": "healthy", "eu,us": "healthy"},
                )
                assert name(status, GEO)["state"] == "healthy"
                await asyncio.to_thread(endpoints.stop, EU)
                status = await live.until(
                    "/api/v1/status", lambda b: groups(b)["eu,us"] == "failed_over"
                )
                geo = name(status, GEO)
                assert groups(status)["us,eu"] == "healthy"  # the default group: on us already
                assert geo["state"] == "failed_over"
                assert geo["state_text"] == "location group eu,us: failed over to us (eu down)"
                assert status["summary"]["text"] == "1 name: 0 healthy, 1 failed over"
                labels = f'name="{GEO}",state="failed_over",zone="example.test."'
                assert await metric(live, f'dnsfailover_name_state{{group="eu,us",{labels}}}') == 1
                assert await metric(live, f'dnsfailover_name_state{{group="",{labels}}}') == 0
                eps = await live.get("/api/v1/endpoints")
                assert endpoint(eps, GEO, EU)["role"] == "down"
                assert endpoint(eps, GEO, US)["role"] == "serving"
        finally:
            await api.stop()
            await node.stop()
    finally:
        await asyncio.to_thread(endpoints.close)


async def test_a_failover_says_whether_the_primary_is_drained_or_an_operator_moved_it(
    tmp_path: Path,
) -> None:
    async with live_service(tmp_path) as live:
        await live.until_answer(API, (C,))
        body = {"action": "failover", "name": API, "reason": "drill"}
        moved = (await live.call("POST", "/api/v1/overrides", body, status=201))["override"]
        await live.until_answer(API, (D,))
        status = await live.until("/api/v1/status", lambda b: name(b, API)["tier"] == "backup")
        api = name(status, API)
        assert api["state"] == "failed_over"
        assert api["state_text"] == f"failed over to backup (operator failover {moved['id']})"
        body = {"action": "failback", "name": API, "reason": "drill over"}
        await live.call("POST", "/api/v1/overrides", body, status=201)
        await live.until_answer(API, (C,))

        body = {"action": "drain", "endpoint": C, "name": API, "reason": "kernel upgrade"}
        await live.call("POST", "/api/v1/overrides", body, status=201)
        await live.until_answer(API, (D,))
        status = await live.until("/api/v1/status", lambda b: name(b, API)["tier"] == "backup")
        assert name(status, API)["state_text"] == "failed over to backup (primary drained)"
        eps = await live.get("/api/v1/endpoints")
        assert endpoint(eps, API, C)["role"] == "drained"
        assert endpoint(eps, API, D)["role"] == "serving"


async def test_with_several_regions_the_reason_is_the_votes_and_this_regions_streak(
    tmp_path: Path,
) -> None:
    async with live_service(tmp_path) as live:
        await live.until_answer(WWW, (A, B))
        await asyncio.to_thread(live.endpoints.stop, B)
        eps = await live.until(
            "/api/v1/endpoints", lambda b: endpoint(b, WWW, B)["state"] == "down"
        )
        target = endpoint(eps, WWW, B)["target"]
        now = time.time()
        # another region's node reports B down too (as the cluster would pass it on)
        live.service.tracker.seen("eu", now)
        live.service.tracker.set_remote(
            target, "eu", State.DOWN, now, "3 consecutive failures", now
        )
        eps = await live.until(
            "/api/v1/endpoints", lambda b: len(endpoint(b, WWW, B)["regions"]) == 2
        )
        row = endpoint(eps, WWW, B)
        eu, local = row["regions"]
        assert eu["region"] == "eu"
        assert eu["streak"] is None  # probed there, not here
        assert eu["reason"] == "3 consecutive failures"
        assert local["streak"]["count"] >= 2
        assert row["reason"] == f"{row['changed_reason']}; here (local): {local['reason']}"
        assert f"{local['streak']['count']} consecutive failures (connection" in local["reason"]
