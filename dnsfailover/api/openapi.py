"""The route table and the OpenAPI 3.1 description built from it (served at /openapi.json).

The server registers exactly the routes listed here, so the description cannot leave one
out; tests check the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnsfailover import __version__


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: str
    summary: str
    mutating: bool = False


ROUTES = (
    Route("GET", "/api/v1/status", "status", "Zones, serials, every name's answer and why, mode"),
    Route("GET", "/api/v1/endpoints", "endpoints", "Every endpoint: voted and per-region health"),
    Route("GET", "/api/v1/events", "events", "The decision and event history, newest first"),
    Route("POST", "/api/v1/events", "add_event", "Record a drill's report", mutating=True),
    Route("GET", "/api/v1/explain/{name}", "explain", "Why a name answers what it answers"),
    Route("GET", "/api/v1/overrides", "overrides", "Operator overrides in force"),
    Route("POST", "/api/v1/overrides", "add_override", "Set an override", mutating=True),
    Route(
        "DELETE", "/api/v1/overrides/{id}", "remove_override", "Remove an override", mutating=True
    ),
    Route(
        "POST", "/api/v1/reload", "reload", "Re-read the config file (like SIGHUP)", mutating=True
    ),
    Route(
        "POST",
        "/api/v1/zones/{zone}/sync",
        "sync_zone",
        "Re-read an external provider's zone and apply the latest decision to it now",
        mutating=True,
    ),
    Route(
        "POST",
        "/api/v1/breaker/reset",
        "reset_breaker",
        "Release the circuit breaker: today's health becomes the baseline",
        mutating=True,
    ),
    Route("GET", "/metrics", "metrics", "Prometheus metrics (text exposition format)"),
    Route("GET", "/openapi.json", "openapi", "This description"),
    Route("GET", "/", "page", "The status page (HTML, refreshes itself)"),
    Route("GET", "/healthz", "healthz", "200 once answers are published and state is writable"),
    Route("GET", "/readyz", "readyz", "200 once the first decision is served (readiness probe)"),
    Route("GET", "/livez", "livez", "200 while the engine loop runs (liveness probe)"),
)

_ERROR = {"$ref": "#/components/responses/Error"}
_OBJECT = {"type": "object", "additionalProperties": True}

_OVERRIDE = {
    "type": "object",
    "required": ["id", "action", "reason", "who", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "action": {"$ref": "#/components/schemas/Action"},
        "name": {"type": ["string", "null"]},
        "endpoint": {"type": ["string", "null"]},
        "tier": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "who": {"type": "string"},
        "created_at": {"type": "number"},
        "expires_at": {"type": ["number", "null"]},
        "force": {"type": "boolean"},
        "description": {"type": "string"},
    },
}

_NEW_OVERRIDE = {
    "type": "object",
    "required": ["action", "reason"],
    "additionalProperties": False,
    "properties": {
        "action": {"$ref": "#/components/schemas/Action"},
        "name": {"type": "string", "description": "managed name, absolute or its first label"},
        "endpoint": {"type": "string", "description": "endpoint address"},
        "tier": {"type": "string"},
        "reason": {"type": "string", "minLength": 1},
        "who": {"type": "string", "description": "default api@<client address>"},
        "expires_in": {
            "type": ["string", "number"],
            "description": "a duration: 30m, 90s, 1h or seconds",
        },
        "expires_at": {"type": "number", "description": "unix time"},
        "force": {"type": "boolean", "default": False, "description": "bypass interlocks"},
    },
}

_REMOVAL = {
    "type": "object",
    "required": ["reason"],
    "additionalProperties": False,
    "properties": {"reason": {"type": "string", "minLength": 1}, "who": {"type": "string"}},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.handler,
        "summary": route.summary,
        # 421: a Host: this API does not serve (DNS rebinding); 503: too many connections.
        "responses": {"200": _json(_OBJECT), "421": _ERROR, "500": _ERROR, "503": _ERROR},
    }
    params: list[dict[str, Any]] = []
    if "{name}" in route.path:
        params.append(
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        )
        op["responses"]["404"] = _ERROR
    if "{id}" in route.path:
        params.append({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}})
    if route.handler == "events":
        params += [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                         "maximum": 1000, "default": 50}},
            {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1},
             "description": "page back from this event id (next_before of the last page)"},
        ]  # fmt: skip
        op["responses"]["400"] = _ERROR
    if route.handler == "explain":
        params.append(
            {"name": "client", "in": "query", "schema": {"type": "string"},
             "description": "an address or client subnet (192.0.2.1, 2001:db8::/48): which "
                            "location group of a steered name it is in, why, and its answer"}
        )  # fmt: skip
        op["responses"]["400"] = _ERROR
    if params:
        op["parameters"] = params
    if route.handler == "metrics":
        op["responses"]["200"] = {
            "description": "OK",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    elif route.handler == "page":
        op["responses"]["200"] = {
            "description": "OK",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    elif route.handler == "healthz":
        op["responses"]["503"] = _json(_OBJECT, "Starting, or probes cannot run (`problems`)")
    elif route.handler == "readyz":
        op["responses"]["503"] = _json(_OBJECT, "No decision served yet")
    elif route.handler == "livez":
        op["responses"]["503"] = _json(_OBJECT, "The engine loop has stopped beating")
    elif route.handler == "overrides":
        op["responses"]["200"] = _json(
            {"type": "object", "properties": {"overrides": {"type": "array", "items": _OVERRIDE}}}
        )
    if route.mutating:
        op["security"] = [{"bearer": []}]
        op["responses"].update({"400": _ERROR, "401": _ERROR, "403": _ERROR, "408": _ERROR})
    if route.handler == "add_override":
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _NEW_OVERRIDE}},
        }
        op["responses"].pop("200")
        op["responses"]["201"] = _json(
            {"type": "object", "properties": {"override": _OVERRIDE}}, "Set"
        )
        op["responses"]["409"] = _ERROR
    if route.handler == "add_event":
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["kind", "subject", "message"],
                        "properties": {
                            "kind": {"type": "string", "enum": ["drill"]},
                            "subject": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    }
                }
            },
        }
        op["responses"].pop("200")
        op["responses"]["201"] = _json(_OBJECT, "Recorded")
    if route.handler == "reload":
        op["responses"]["400"] = _ERROR
    if route.handler == "sync_zone":
        op["responses"]["404"] = _ERROR
    if route.handler == "remove_override":
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": _REMOVAL}},
        }
        op["parameters"] += [
            {"name": "reason", "in": "query", "schema": {"type": "string"}},
            {"name": "who", "in": "query", "schema": {"type": "string"}},
        ]
        op["responses"]["404"] = _ERROR
    return op  # fmt: skip


def openapi() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dnsfailover API",
            "version": __version__,
            "description": "Status, explanations, history and operator overrides of a "
            "dnsfailover node. Read-only calls are open; mutating calls need the bearer token.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Action": {
                    "type": "string",
                    "enum": ["drain", "force_up", "force_down", "failover", "failback"],
                },
                "Override": _OVERRIDE,
                "NewOverride": _NEW_OVERRIDE,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
            },
            "responses": {
                "Error": _json({"$ref": "#/components/schemas/Error"}, "An error, explained")
            },
        },
    }
