"""The HTTP API (aiohttp): status, endpoints, events, explain, overrides, metrics, status page.

Read-only routes are open: by default the API listens on loopback only.  Mutating calls
(setting and removing overrides) need the bearer token; with no token configured they are
refused, so a fresh install cannot be changed by anyone who can reach the port.  The token
is compared in constant time and never logged or echoed.  Every error is JSON
`{"error": "..."}` with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from dnsfailover.api import views
from dnsfailover.api.explain import explain
from dnsfailover.api.metrics import Metrics
from dnsfailover.api.openapi import ROUTES, openapi
from dnsfailover.api.ports import NodeControl, NodeView
from dnsfailover.api.requests import BadRequest, parse_override, parse_removal
from dnsfailover.engine.overrides import OverrideRefused
from dnsfailover.errors import ConfigError, NotReady, StoreError, UserError

log = logging.getLogger("dnsfailover.api")

NO_TOKEN = (
    "mutating calls are disabled: no API token is configured; start `dnsfailover serve` with "
    "DNSFAILOVER_API_TOKEN set (or api.token_env / api.token_file in the config) and give "
    "the CLI the same token (DNSFAILOVER_API_TOKEN or --token-file)"
)
MAX_EVENTS = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON with a useful message; never a traceback to the client."""
    try:
        return await handler(request)
    except views.NotFound as e:
        return error(404, str(e))
    except UserError as e:  # BadRequest and every other error that is the caller's
        return error(400, str(e))
    except (NotReady, StoreError) as e:  # starting, or the state file cannot be used
        return error(503, str(e))
    except web.HTTPNotFound:
        return error(404, f"no such route: {request.method} {request.path}; see /openapi.json")
    except web.HTTPMethodNotAllowed as e:
        allowed = ", ".join(sorted(e.allowed_methods))
        return error(405, f"{request.method} is not allowed on {request.path} (allowed: {allowed})")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error(e.status, e.text or e.reason)
    except Exception:
        log.exception("api: %s %s failed", request.method, request.path)
        return error(500, "internal error; see the server's log")


class ApiServer:
    """Serves the API of one node on `host:port` (port 0 picks a free one): read-only routes
    through `view`, mutating ones (with the token) through `control`."""

    def __init__(
        self,
        view: NodeView,
        control: NodeControl,
        host: str,
        port: int,
        *,
        token: str | None,
        metrics: Metrics,
    ) -> None:
        self.view, self.control, self.metrics = view, control, metrics
        self.host, self.port = host, port
        self._token = token.encode() if token else None
        self._runner: web.AppRunner | None = None
        self._page = b""
        self.app = self._build()

    def _build(self) -> web.Application:
        app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024)
        handlers: dict[str, Handler] = {
            "status": self.get_status,
            "endpoints": self.get_endpoints,
            "events": self.get_events,
            "explain": self.get_explain,
            "overrides": self.get_overrides,
            "add_override": self.post_override,
            "remove_override": self.delete_override,
            "reload": self.post_reload,
            "sync_zone": self.post_sync_zone,
            "add_event": self.post_event,
            "reset_breaker": self.post_reset_breaker,
            "metrics": self.get_metrics,
            "openapi": self.get_openapi,
            "page": self.get_page,
            "healthz": self.get_healthz,
        }
        for route in ROUTES:
            app.router.add_route(route.method, route.path, handlers[route.handler])
        return app

    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the address actually bound."""
        self._page = await asyncio.to_thread(_read_page)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        if not is_loopback(str(host)):
            log.warning(
                "api: listening on %s:%d: status, metrics and the page are readable by anyone "
                "who can reach it (overrides still need the token)",
                host,
                port,
            )
        log.info(
            "api: listening on http://%s:%d (mutating calls %s)",
            host,
            port,
            "need the bearer token" if self._token else "disabled: no token configured",
        )
        return str(host), int(port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- auth -------------------------------------------------------------------------------

    def _authorize(self, request: web.Request) -> web.Response | None:
        """None when the request carries the token; otherwise the response refusing it."""
        if self._token is None:
            return error(403, NO_TOKEN)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return error(
                401,
                "this call needs the API token: send `Authorization: Bearer TOKEN`",
                **{"WWW-Authenticate": 'Bearer realm="dnsfailover"'},
            )
        if not hmac.compare_digest(given.strip().encode(), self._token):
            log.warning("api: %s %s with a wrong token from %s", request.method, request.path,
                        request.remote)  # fmt: skip
            return error(
                401,
                "the API token is wrong",
                **{"WWW-Authenticate": 'Bearer realm="dnsfailover", error="invalid_token"'},
            )
        return None

    # -- read-only --------------------------------------------------------------------------

    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response(views.status(self.view, time.time()))

    async def get_endpoints(self, request: web.Request) -> web.Response:
        return web.json_response(views.endpoints(self.view, time.time()))

    async def get_events(self, request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", 50, 1, MAX_EVENTS)
        before = _int_param(request, "before", None, 1, 2**62)
        rows = await self.view.events(limit, before)
        return web.json_response(views.events(rows, limit))

    async def get_explain(self, request: web.Request) -> web.Response:
        name = views.resolve_name(self.view.config, request.match_info["name"])
        return web.json_response(explain(self.view, name, time.time()))

    async def get_overrides(self, request: web.Request) -> web.Response:
        overrides = self.view.overrides()
        return web.json_response({"overrides": [views.override_json(o) for o in overrides]})

    async def get_metrics(self, request: web.Request) -> web.Response:
        metrics = self.metrics
        snap = metrics.snapshot(self.view)  # on the loop, where the counts change
        body = await asyncio.to_thread(metrics.render, snap)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi())

    async def get_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._page,
            headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"},
        )

    async def get_healthz(self, request: web.Request) -> web.Response:
        ready = self.view.published is not None
        problem = self.view.state_problem()  # still serving DNS, but monitoring must know
        body = {"ok": ready and problem is None} | ({"problem": problem} if problem else {})
        return web.json_response(body, status=200 if body["ok"] else 503)

    # -- mutating ---------------------------------------------------------------------------

    async def post_override(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        override = parse_override(body, self.view.config, time.time(), request.remote)
        try:
            await self.control.add_override(override)
        except OverrideRefused as e:
            return error(409, f"refused by an interlock: {e}; add force to override it")
        log.info("api: override %s set by %s: %s", override.id, override.who, override.reason)
        return web.json_response({"override": views.override_json(override)}, status=201)

    async def delete_override(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        body = await _json_body(request, optional=True)
        who, reason = parse_removal(body, dict(request.query), request.remote)
        override_id = request.match_info["id"]
        if not await self.control.remove_override(override_id, who, reason):
            active = ", ".join(o.id for o in self.view.overrides()) or "none"
            return error(404, f"no override {override_id!r} (active: {active})")
        log.info("api: override %s removed by %s: %s", override_id, who, reason)
        return web.json_response({"removed": override_id, "who": who, "reason": reason})

    async def post_reload(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        try:
            summary = await self.control.reload_from_file()
        except ConfigError as e:
            problems = [str(p) for p in e.problems]
            return web.json_response(
                {"error": "the config is invalid; the running one stays", "problems": problems},
                status=400,
            )
        except (UserError, OSError) as e:
            return error(400, f"{e}; the running config stays")
        log.info("api: config reloaded by %s: %s", request.remote, summary)
        return web.json_response({"reloaded": summary})

    async def post_sync_zone(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        text = request.match_info["zone"].strip().lower()
        zone = text if text.endswith(".") else f"{text}."
        syncs = self.view.sync_statuses()
        if zone not in syncs:
            known = ", ".join(sorted(syncs)) or "none"
            raise views.NotFound(f"{text!r} is no external provider's zone (they are: {known})")
        status = await self.control.sync_zone(zone)
        log.info("api: zone %s re-synced by %s", zone, request.remote)
        return web.json_response({"zone": zone, "sync": views.jsonable(status)})

    async def post_event(self, request: web.Request) -> web.Response:
        """Only what a client measured itself goes here: a drill's report."""
        refused = self._authorize(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        if body.get("kind") != "drill":
            raise BadRequest("kind must be 'drill' (the only event a client may record)")
        subject, message = body.get("subject"), body.get("message")
        if not isinstance(subject, str) or not subject.strip():
            raise BadRequest("subject must be a non-empty string")
        if not isinstance(message, str) or not message.strip() or len(message) > 2000:
            raise BadRequest("message must be a non-empty string of at most 2000 characters")
        await self.control.record_event("drill", subject.strip(), message.strip())
        return web.json_response(
            {"recorded": {"kind": "drill", "subject": subject.strip()}}, status=201
        )

    async def post_reset_breaker(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        body = await _json_body(request, optional=True)
        who = str(body.get("who") or request.remote or "api")
        reason = str(body.get("reason") or "").strip()
        if not reason:
            raise BadRequest("a reason is required")
        frozen = await self.control.reset_breaker(who, reason)
        return web.json_response({"was_frozen": frozen, "who": who, "reason": reason})


def _read_page() -> bytes:
    return resources.files("dnsfailover.api").joinpath("page.html").read_bytes()


def _int_param(request: web.Request, key: str, default: int | None, low: int, high: int) -> Any:
    text = request.query.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{key} must be a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{key} must be between {low} and {high}, got {value}")
    return value


async def _json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        if optional:
            return {}
        raise BadRequest('the body must be a JSON object, e.g. {"action": ..., "reason": ...}')
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
    return body
