"""The `api:` section of the config."""

from __future__ import annotations

from dnsfailover.fields import Model


class ApiConfig(Model):
    """Where the HTTP API listens and how mutating calls are authorised."""

    listen: str | None = None  # HOST:PORT; `serve --api` overrides it
    token_env: str | None = None  # bearer token for mutating calls, from the environment
    token_file: str | None = None
