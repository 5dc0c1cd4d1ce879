"""The HTTP API against a real in-process service: real endpoints, real DNS, real HTTP."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_support import API, TOKEN, WWW, A, B, C, D, live_service

from dnsfailover.api.openapi import openapi
from dnsfailover.config.api import ApiConfig
from dnsfailover.config.secrets import TokenError, resolve_token


def endpoint(body: dict[str, Any], name: str, address: str) -> dict[str, Any]:
    return next(e for e in body["endpoints"] if e["name"] == name and e["address"] == address)


async def test_status_endpoints_explain_and_events_follow_a_failure(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        # Both endpoints answer; on a loaded machine a first probe can time out (100ms), so
        # the starting point is "both up", however long the start took to get there.
        await live.until_answer(WWW, (A, B))
        status = await live.get("/api/v1/status")
        www = next(n for n in status["names"] if n["name"] == WWW)
        assert www["answer"] == [A, B]
        assert www["mode"] == "healthy"
        assert list(await live.answer(WWW)) == www["answer"]
        assert status["mode"] == "single"
        zone = status["zones"][0]
        assert zone["zone"] == "example.test."
        assert zone["serial"] > 0

        eps = await live.get("/api/v1/endpoints")
        row = endpoint(eps, WWW, B)
        assert row["state"] == "up"
        assert row["in_answer"] is True
        (region,) = row["regions"]
        assert region["region"] == "local"
        assert region["state"] == "up"
        assert region["latency"] is not None
        assert region["latency"] < 1.0

        await asyncio.to_thread(live.endpoints.stop, B)
        await live.until_answer(WWW, (A,))
        eps = await live.until(
            "/api/v1/endpoints", lambda b: endpoint(b, WWW, B)["state"] == "down"
        )
        row = endpoint(eps, WWW, B)
        assert row["in_answer"] is False
        assert "consecutive failures" in row["regions"][0]["reason"]

        explained = await live.get("/api/v1/explain/www")  # the first label is enough
        assert explained["name"] == WWW
        assert explained["answer"] == [A]
        assert explained["decision"]["mode"] == "degraded"
        text = "\n".join(explained["lines"])
        assert f"{WWW} answers {A}" in text
        assert f"{B} DOWN" in text
        assert "region local: down" in text
        assert "check web: http GET /healthz" in text
        # A is now the last healthy endpoint: draining it would trip the interlock.
        (lock,) = [i for i in explained["interlocks"] if i["endpoint"] == A]
        assert lock["allowed"] is False
        assert lock["refusal"]

        events = await live.get("/api/v1/events?limit=200")
        kinds = {(e["kind"], e["subject"]) for e in events["events"]}
        assert ("answer", WWW) in kinds
        assert any(k == "health" and B in s for k, s in kinds)
        ids = [e["id"] for e in events["events"]]
        assert ids == sorted(ids, reverse=True)  # newest first

        page1 = await live.get("/api/v1/events?limit=2")
        assert len(page1["events"]) == 2
        assert page1["next_before"] == page1["events"][-1]["id"]
        page2 = await live.get(f"/api/v1/events?limit=2&before={page1['next_before']}")
        assert page2["events"][0]["id"] < page1["events"][-1]["id"]


async def test_drain_takes_effect_in_dns_and_is_audited_then_undrained(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        await live.until_answer(WWW, (A, B))
        made = await live.call(
            "POST",
            "/api/v1/overrides",
            {
                "action": "drain",
                "endpoint": A,
                "name": WWW,
                "reason": "kernel upgrade",
                "who": "alice",
                "expires_in": "30m",
            },
            status=201,
        )
        o = made["override"]
        assert o["action"] == "drain"
        assert o["who"] == "alice"
        assert o["expires_at"] is not None
        await live.until_answer(WWW, (B,))
        listed = await live.get("/api/v1/overrides")
        assert [x["id"] for x in listed["overrides"]] == [o["id"]]
        row = endpoint(await live.get("/api/v1/endpoints"), WWW, A)
        assert row["state"] == "up"
        assert row["in_answer"] is False
        assert row["overrides"] == [{"id": o["id"], "action": "drain"}]

        removed = await live.call(
            "DELETE", f"/api/v1/overrides/{o['id']}", {"reason": "done", "who": "bob"}
        )
        assert removed["removed"] == o["id"]
        await live.until_answer(WWW, (A, B))
        events = await live.get("/api/v1/events?limit=100")
        audit = [e["message"] for e in events["events"] if e["kind"] == "override"]
        assert any("by alice" in m and "kernel upgrade" in m for m in audit)
        assert any("by bob" in m and "done" in m for m in audit)
        assert (await live.get("/api/v1/overrides"))["overrides"] == []


async def test_an_endpoint_wide_drain_is_listed_only_for_names_that_have_it(
    tmp_path: Path,
) -> None:
    """The engine applies a drain without a name to the names that answer that endpoint;
    status and explain list it there and nowhere else (one `touches` rule for both)."""
    async with live_service(tmp_path) as live:
        await live.until_answer(WWW, (A, B))
        made = await live.call(
            "POST",
            "/api/v1/overrides",
            {"action": "drain", "endpoint": A, "reason": "rack move", "who": "alice"},
            status=201,
        )
        oid = made["override"]["id"]
        await live.until_answer(WWW, (B,))
        names = {n["name"]: n for n in (await live.get("/api/v1/status"))["names"]}
        assert names[WWW]["overrides"] == [oid]
        assert names[API]["overrides"] == []
        assert [o["id"] for o in (await live.get(f"/api/v1/explain/{WWW}"))["overrides"]] == [oid]
        assert (await live.get(f"/api/v1/explain/{API}"))["overrides"] == []


async def test_failover_and_failback_of_an_active_passive_name(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        await live.until_answer(API, (C,))
        body = {"action": "failover", "name": API, "tier": "backup", "reason": "drill"}
        await live.call("POST", "/api/v1/overrides", body, status=201)
        await live.until_answer(API, (D,))
        status = await live.get("/api/v1/status")
        assert next(n for n in status["names"] if n["name"] == API)["tier"] == "backup"
        back = {"action": "failback", "name": "api", "reason": "drill over"}
        await live.call("POST", "/api/v1/overrides", back, status=201)
        await live.until_answer(API, (C,))
        # the failback was taken once and ended the failover: nothing is left in force
        for _ in range(100):
            if (await live.get("/api/v1/overrides"))["overrides"] == []:
                break
            await asyncio.sleep(0.05)
        assert (await live.get("/api/v1/overrides"))["overrides"] == []
        events = await live.get("/api/v1/events?limit=100")
        assert any("ended by a failback" in e["message"] for e in events["events"])


async def test_interlock_refuses_draining_the_last_healthy_endpoint_unless_forced(
    tmp_path: Path,
) -> None:
    async with live_service(tmp_path) as live:
        await asyncio.to_thread(live.endpoints.stop, B)
        await live.until_answer(WWW, (A,))
        body = {"action": "drain", "endpoint": A, "name": WWW, "reason": "oops"}
        refused = await live.call("POST", "/api/v1/overrides", body, status=409)
        assert "interlock" in refused["error"]
        assert "force" in refused["error"]
        assert (await live.get("/api/v1/overrides"))["overrides"] == []
        forced = await live.call("POST", "/api/v1/overrides", {**body, "force": True}, status=201)
        assert forced["override"]["force"] is True
        events = await live.get("/api/v1/events?limit=100")
        assert any(e["kind"] == "interlock" for e in events["events"])


async def test_mutating_calls_need_the_token_and_never_echo_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"action": "drain", "endpoint": A, "reason": "r"}
    async with live_service(tmp_path) as live:
        missing = await live.call("POST", "/api/v1/overrides", body, token=None, status=401)
        assert "Bearer" in missing["error"]
        wrong = await live.call("POST", "/api/v1/overrides", body, token="x" * 30, status=401)
        assert "wrong" in wrong["error"]
        gone = await live.call(
            "DELETE", "/api/v1/overrides/abc", {"reason": "r"}, token=None, status=401
        )
        assert "token" in gone["error"]
        assert (await live.get("/api/v1/overrides"))["overrides"] == []
    assert TOKEN not in caplog.text
    assert "x" * 30 not in caplog.text

    (tmp_path / "b").mkdir()
    async with live_service(tmp_path / "b", token=None) as live:
        off = await live.call("POST", "/api/v1/overrides", body, status=403)
        assert "DNSFAILOVER_API_TOKEN" in off["error"]
        # Reads stay open.
        assert (await live.get("/api/v1/status"))["names"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "drain", "endpoint": A}, "reason is required"),
        ({"action": "drain", "endpoint": A, "reason": "  "}, "reason must not be empty"),
        ({"action": "explode", "endpoint": A, "reason": "r"}, "not one of: drain, force_up"),
        ({"action": "drain", "endpoint": "127.0.0.99", "reason": "r"}, "not an endpoint"),
        ({"action": "drain", "endpoint": A, "name": "nope", "reason": "r"}, "not a managed name"),
        ({"action": "failover", "name": API, "tier": "moon", "reason": "r"}, "no tier 'moon'"),
        ({"action": "drain", "endpoint": A, "reason": "r", "expires_in": "soon"}, "expires_in"),
        ({"action": "drain", "endpoint": A, "reason": "r", "expires_at": 5}, "in the past"),
        ({"action": "drain", "endpoint": A, "reason": "r", "force": "yes"}, "force must be"),
        ({"action": "drain", "endpoint": A, "reason": "r", "colour": 1}, "unknown field(s) colour"),
        ({"action": "failover", "reason": "r"}, "needs the managed name"),
    ],
)
async def test_bad_override_requests_get_a_precise_400(
    tmp_path: Path, body: dict[str, Any], message: str
) -> None:
    async with live_service(tmp_path) as live:
        answer = await live.call("POST", "/api/v1/overrides", body, status=400)
        assert message in answer["error"]
        assert (await live.get("/api/v1/overrides"))["overrides"] == []


async def test_other_bad_requests_are_explained(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        assert "managed: " in (await live.get("/api/v1/explain/nope", status=404))["error"]
        assert "limit" in (await live.get("/api/v1/events?limit=abc", status=400))["error"]
        assert "between" in (await live.get("/api/v1/events?limit=0", status=400))["error"]
        assert "openapi" in (await live.get("/api/v2/nothing", status=404))["error"]
        gone = await live.call("DELETE", "/api/v1/overrides/abc", {"reason": "r"}, status=404)
        assert "no override 'abc'" in gone["error"]
        no_reason = await live.call("DELETE", "/api/v1/overrides/abc", None, status=400)
        assert "reason is required" in no_reason["error"]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with live.http.post(
            live.base + "/api/v1/overrides", data=b"{not json", headers=headers
        ) as r:
            assert r.status == 400
            assert "not valid JSON" in (await r.json())["error"]
        async with live.http.put(live.base + "/api/v1/status") as r:
            assert r.status == 405
            assert "allowed" in (await r.json())["error"]
        async with live.http.get(live.base + "/healthz") as r:
            assert r.status == 200
            assert (await r.json()) == {"ok": True}


async def test_openapi_describes_every_route_the_app_serves(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        doc = await live.get("/openapi.json")
        assert doc == openapi()
        served = {
            (route.method, route.resource.canonical)
            for route in live.api.app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        }
        described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        assert served == described
        assert doc["openapi"] == "3.1.0"
        for ops in doc["paths"].values():
            for op in ops.values():
                assert op["responses"]
                assert op["summary"]
        refs = _refs(doc)
        assert refs, "uses shared components"
        for ref in refs:
            node: Any = doc
            for part in ref.removeprefix("#/").split("/"):
                node = node[part]  # every $ref resolves


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if "$ref" in node else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


async def test_status_page_is_served(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live, live.http.get(live.base + "/") as r:
        html = await r.text()
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/html")
        assert 'name="viewport"' in html
        assert "api/v1/status" in html
        assert "http://" not in html
        assert "https://" not in html


def test_token_comes_from_file_then_env_then_default(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-the-file-0123456789\n")
    assert resolve_token(ApiConfig(token_file=str(secret)), {}) == "from-the-file-0123456789"
    named = ApiConfig(token_env="MY_TOKEN")
    assert resolve_token(named, {"MY_TOKEN": "from-my-env-0123456789"}) == "from-my-env-0123456789"
    default = {"DNSFAILOVER_API_TOKEN": "from-default-0123456789"}
    assert resolve_token(ApiConfig(), default) == "from-default-0123456789"
    assert resolve_token(ApiConfig(), {}) is None
    with pytest.raises(TokenError, match="MY_TOKEN is not set"):
        resolve_token(named, {})
    with pytest.raises(TokenError, match="at least 16") as short:
        resolve_token(named, {"MY_TOKEN": "short-secret"})
    assert "short-secret" not in str(short.value)
    with pytest.raises(TokenError, match="cannot read"):
        resolve_token(ApiConfig(token_file=str(tmp_path / "missing")), {})


async def test_api_address_in_use_is_an_error(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        from dnsfailover.api.server import ApiServer

        port = int(live.base.rsplit(":", 1)[1])
        second = ApiServer(
            live.service, live.service, "127.0.0.1", port, token=None, metrics=live.service.metrics
        )
        with pytest.raises(OSError, match="address already in use"):
            await second.start()
        await second.stop()
        async with aiohttp.ClientSession() as http, http.get(live.base + "/healthz") as r:
            assert r.status == 200


async def test_only_a_drill_report_may_be_recorded_and_only_with_the_token(
    tmp_path: Path,
) -> None:
    async with live_service(tmp_path) as live:
        report = {"kind": "drill", "subject": API, "message": "drill passed: failed over in 0.2s"}
        await live.call("POST", "/api/v1/events", report, token=None, status=401)
        other = await live.call(
            "POST", "/api/v1/events", {**report, "kind": "failover"}, status=400
        )
        assert "kind must be 'drill'" in other["error"]
        empty = await live.call("POST", "/api/v1/events", {**report, "message": " "}, status=400)
        assert "message" in empty["error"]
        await live.call("POST", "/api/v1/events", report, status=201)
        events = (await live.get("/api/v1/events?limit=5"))["events"]
        assert events[0]["kind"] == "drill"
        assert events[0]["message"] == "drill passed: failed over in 0.2s"
