"""The `api:` section of the config, and where the bearer token for mutating calls comes from.

The token itself never appears in YAML (configs end up in repositories): the config names a
file or an environment variable that holds it.
"""

from __future__ import annotations

from dnsfailover.fields import Model

TOKEN_ENV = "DNSFAILOVER_API_TOKEN"


MIN_TOKEN_LENGTH = 16


class ApiConfig(Model):
    """Where the HTTP API listens and how mutating calls are authorised."""

    listen: str | None = None  # HOST:PORT; `serve --api` overrides it
    token_env: str | None = None  # bearer token for mutating calls, from the environment
    token_file: str | None = None
    # Host names (besides addresses and localhost) the API answers to; others get 421.
    allowed_hosts: tuple[str, ...] = ()
