"""The `api:` section of the config, and where the bearer token for mutating calls comes from.

The token itself never appears in YAML (configs end up in repositories): the config names a
file or an environment variable that holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from dnsfailover.errors import DnsFailoverError
from dnsfailover.fields import Model

TOKEN_ENV = "DNSFAILOVER_API_TOKEN"
MIN_TOKEN_LENGTH = 16


class TokenError(DnsFailoverError):
    """The API token cannot be read."""


class ApiConfig(Model):
    """Where the HTTP API listens and how mutating calls are authorised."""

    listen: str | None = None  # HOST:PORT; `serve --api` overrides it
    token_env: str | None = None  # bearer token for mutating calls, from the environment
    token_file: str | None = None


def resolve_token(api: ApiConfig, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token for mutating calls: `token_file`, else `token_env`, else
    $DNSFAILOVER_API_TOKEN; None when none is set (mutating calls are then refused).

    :raises TokenError: when a configured source is missing, empty or too short; a typo
        must not silently leave the API without its token.  Messages never contain the token.
    """
    env = os.environ if environ is None else environ
    if api.token_file is not None:
        path = Path(api.token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise TokenError(f"api.token_file: cannot read {path}: {e.strerror or e}") from e
        return _checked(token, f"api.token_file {path}")
    if api.token_env is not None:
        value = env.get(api.token_env)
        if value is None:
            raise TokenError(f"api.token_env: environment variable {api.token_env} is not set")
        return _checked(value.strip(), f"environment variable {api.token_env}")
    value = env.get(TOKEN_ENV)
    if value is None or not value.strip():
        return None
    return _checked(value.strip(), f"environment variable {TOKEN_ENV}")


def _checked(token: str, source: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{source}: the API token must be at least {MIN_TOKEN_LENGTH} characters")
    return token
