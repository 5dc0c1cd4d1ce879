"""A small synchronous client of the dnsfailover HTTP API, for the CLI.

urllib, not aiohttp: each CLI command makes one or two calls and exits, so an event loop
buys nothing.  Failures become `ApiError` with a one-line message fit to print as it is.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnsfailover.errors import DnsFailoverError

if TYPE_CHECKING:
    import urllib.error

API_ENV = "DNSFAILOVER_API"
TOKEN_ENV = "DNSFAILOVER_API_TOKEN"
DEFAULT_API = "http://127.0.0.1:8053"
TIMEOUT = 10.0


class ApiError(DnsFailoverError):
    """The API call failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(ApiError):
    """The API cannot be reached at all."""


def base_url(given: str | None) -> str:
    """`--api`, else $DNSFAILOVER_API, else the default; `HOST:PORT` gets `http://`."""
    url = (given or os.environ.get(API_ENV) or DEFAULT_API).strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def read_token(token_file: str | None) -> str | None:
    """The bearer token: from `--token-file`, else $DNSFAILOVER_API_TOKEN (None if neither)."""
    if token_file is not None:
        path = Path(token_file).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except OSError as e:
            raise ApiError(f"cannot read the token file {path}: {e.strerror or e}") from e
    value = os.environ.get(TOKEN_ENV, "").strip()
    return value or None


class Client:
    def __init__(self, base: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        self.base = base.rstrip("/")
        self._token = token
        self._timeout = timeout

    def get(self, path: str, **params: Any) -> Any:
        query = {k: str(v) for k, v in params.items() if v is not None}
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        return self._call("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def delete(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("DELETE", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import urllib.error  # with urllib.request (http.client, ssl, email): only when called
        import urllib.request

        url = f"{self.base}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._token is not None and method != "GET":
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            raise ApiError(_error_text(e), e.code) from None
        except urllib.error.URLError as e:
            raise Unreachable(self._unreachable(e.reason)) from None
        except TimeoutError as e:
            raise Unreachable(self._unreachable(e)) from None
        except ConnectionError as e:
            raise Unreachable(self._unreachable(e)) from None
        except json.JSONDecodeError:
            raise ApiError(f"{url} did not answer JSON; is it the dnsfailover API?") from None

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, TimeoutError | socket.timeout):
            why = f"no answer within {self._timeout:g}s"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror.lower()
        else:
            why = str(reason)
        return (
            f"cannot reach the dnsfailover API at {self.base}: {why}; "
            "is `dnsfailover serve --api` running?"
        )


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"{}")
        message = body.get("error") if isinstance(body, dict) else None
        problems = body.get("problems") if isinstance(body, dict) else None
        if message and isinstance(problems, list) and problems:
            message = "\n".join([f"{message}:", *(f"  {p}" for p in problems)])
    except (json.JSONDecodeError, OSError):
        message = None
    return str(message) if message else f"HTTP {e.code} {e.reason}"
