"""The HTTP API (aiohttp): status, endpoints, events, explain, overrides, metrics, status page.

Read-only routes are open: by default the API listens on loopback only.  Mutating calls
(setting and removing overrides) need the bearer token; with no token configured they are
refused, so a fresh install cannot be changed by anyone who can reach the port.  The token
is compared in constant time and never logged or echoed (`logs.protect` masks it in every
log record).  Every error is JSON `{"error": "..."}` with a message that says what to do;
bad requests are 4xx, never a 500, and what they log is rate-limited.  Connection limits,
timeouts, the `Host:` allow-list and security headers live in `guard.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from dnsfailover.api import views
from dnsfailover.api.explain import UnsteeredClient, explain
from dnsfailover.api.guard import (
    DATA_POLICY,
    IDLE_TIMEOUT,
    ConnectionGuard,
    GuardedSite,
    ProtocolLog,
    host_problem,
    page_policy,
    read_body,
)
from dnsfailover.api.metrics import Metrics
from dnsfailover.api.openapi import ROUTES, openapi
from dnsfailover.api.ports import NodeControl, NodeView
from dnsfailover.api.requests import BadRequest, parse_override, parse_removal
from dnsfailover.engine.overrides import OverrideRefused
from dnsfailover.errors import ConfigError, NotReady, StoreError, UserError
from dnsfailover.geo.ecs import ClientSubnet, network_of
from dnsfailover.logs import RateLimitedLog, protect

log = logging.getLogger("dnsfailover.api")
_failures = RateLimitedLog(log, period=60.0, burst=5)
_bad_requests = RateLimitedLog(log, period=60.0, burst=10)
MAX_DEPTH = 32  # no request body needs more; deeper is refused before parsing
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')

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
        # A bug, not the client: with its traceback, but a bounded number a minute.
        _failures.log(logging.ERROR, "api: %s %s failed", request.method, request.path,
                      exc_info=True)  # fmt: skip
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
        max_connections: int | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.view, self.control, self.metrics = view, control, metrics
        self.host, self.port = host, port
        if token:
            protect(token)
        self._token = token.encode() if token else None
        self._runner: web.AppRunner | None = None
        self._page = b""
        self._page_policy = DATA_POLICY
        self.guard = ConnectionGuard(max_connections, idle_timeout)
        self.app = self._build()

    def _build(self) -> web.Application:
        app = web.Application(
            middlewares=[self.guard.middleware, self._known_host, json_errors],
            client_max_size=64 * 1024,
        )
        app.on_response_prepare.append(self._secure_headers)
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
            "readyz": self.get_readyz,
            "livez": self.get_livez,
        }
        for route in ROUTES:
            app.router.add_route(route.method, route.path, handlers[route.handler])
        return app

    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the address actually bound."""
        self._page = await asyncio.to_thread(_read_page)
        self._page_policy = page_policy(self._page)
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.guard.idle_timeout,
            logger=ProtocolLog(),
        )
        await self._runner.setup()
        site = GuardedSite(self._runner, self.host, self.port, self.guard)
        await site.start()
        assert site.listener is not None
        host, port = site.listener.addresses[0]
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

    # -- every request ----------------------------------------------------------------------

    @web.middleware
    async def _known_host(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse a `Host:` this API does not answer for (DNS rebinding; see guard.py)."""
        allowed = (*self.view.config.api.allowed_hosts, self.host)
        problem = host_problem(request.headers.get("Host"), allowed)
        if problem is not None:
            status, message = problem
            _bad_requests.log(
                logging.WARNING, "api: %s from %s refused: %s", request.path, request.remote,
                message,
            )  # fmt: skip
            return error(status, message)
        return await handler(request)

    async def _secure_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        is_page = request.path == "/" and response.content_type == "text/html"
        headers["Content-Security-Policy"] = self._page_policy if is_page else DATA_POLICY

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
        # aiohttp hands over non-UTF-8 header bytes as surrogate escapes: compare the bytes.
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._token):
            _bad_requests.log(
                logging.WARNING, "api: %s %s with a wrong token from %s", request.method,
                request.path, request.remote,
            )  # fmt: skip
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
        client = None
        text = request.query.get("client")
        if text:
            try:
                network = network_of(text.strip())
            except ValueError:
                raise BadRequest(
                    f"client must be an address or network (192.0.2.1, 2001:db8::/48), got {text!r}"
                ) from None
            client = self.view.source_limits().lookup(ClientSubnet(network))
        try:
            found = explain(self.view, name, time.time(), client)
        except UnsteeredClient as e:
            raise BadRequest(str(e)) from None
        return web.json_response(found)

    async def get_overrides(self, request: web.Request) -> web.Response:
        overrides = self.view.overrides()
        return web.json_response({"overrides": [views.override_json(o) for o in overrides]})

    async def get_metrics(self, request: web.Request) -> web.Response:
        metrics = self.metrics
        snap = metrics.snapshot(self.view)  # on the loop, where the counts change
        snap = dataclasses.replace(snap, families=(*snap.families, *self.guard.families()))
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
        found = views.problems(self.view)  # still serving DNS, but monitoring must know
        if not found:
            return web.json_response({"ok": ready}, status=200 if ready else 503)
        return web.json_response({"ok": False, "problems": found}, status=503)

    async def get_readyz(self, request: web.Request) -> web.Response:
        """Readiness (Kubernetes): the first decision is published and the DNS server runs.
        Unlike /healthz, a problem the node rides out (a full disk, etcd away) keeps it ready:
        its last answers are still the right ones to serve."""
        if self.view.published is None or self.view.dns_counts() is None:
            return web.json_response({"ok": False, "reason": "starting"}, status=503)
        return web.json_response({"ok": True})

    async def get_livez(self, request: web.Request) -> web.Response:
        """Liveness (Kubernetes): the engine loop beat within its `stale_after` (a restart
        would help: nothing decides any more)."""
        beat = self.view.supervision
        age = beat.age()
        body: dict[str, object] = {"ok": beat.alive(), "engine_beat_age": age}
        if beat.alive():
            return web.json_response(body)
        body["reason"] = f"the engine loop has not run for {age:.0f}s (> {beat.stale_after:g}s)"
        return web.json_response(body, status=503)

    # -- mutating ---------------------------------------------------------------------------

    async def post_override(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        body = await _json_body(request, self.guard.idle_timeout)
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
        body = await _json_body(request, self.guard.idle_timeout, optional=True)
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
        body = await _json_body(request, self.guard.idle_timeout)
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
        body = await _json_body(request, self.guard.idle_timeout, optional=True)
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


def _not_json(constant: str) -> Any:
    raise BadRequest(f"the body is not valid JSON: {constant} is not a JSON number")


async def _json_body(
    request: web.Request, limit: float, *, optional: bool = False
) -> dict[str, Any]:
    """The body as a JSON object: strict UTF-8, strict JSON (no NaN/Infinity), at most
    `MAX_DEPTH` deep, every string valid Unicode; else a 400 that says which."""
    raw = await read_body(request, limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(
            f"the body must be UTF-8 encoded JSON (byte {e.start} is not UTF-8)"
        ) from None
    if not text.strip():
        if optional:
            return {}
        raise BadRequest('the body must be a JSON object, e.g. {"action": ..., "reason": ...}')
    if _depth(text) > MAX_DEPTH:
        raise BadRequest(f"the body is nested more than {MAX_DEPTH} levels deep")
    try:
        body = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4,300 digits
        raise BadRequest(f"the body is not acceptable JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
    _check_text(body)
    return body


def _depth(text: str) -> int:
    """How deeply arrays and objects nest, brackets inside strings aside."""
    depth = deepest = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_text(value: Any) -> None:
    """Refuse strings that are not valid Unicode (`"\\ud800"`) and non-finite numbers."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                raise BadRequest(
                    f"the body holds a string that is not valid Unicode (a lone surrogate "
                    f"{item[e.start]!r})"
                ) from None
        elif isinstance(item, float) and not math.isfinite(item):
            raise BadRequest("the body holds a number too large to be a JSON number")
