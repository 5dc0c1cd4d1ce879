"""Reading secrets: the API's bearer token and TSIG key secrets, from files or the environment.

A secret never appears in the config (configs end up in repositories), in a log line or in
an error message: errors name the key or the setting and say what is wrong with where the
secret should be, nothing more.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from dnsfailover.config.api import MIN_TOKEN_LENGTH, TOKEN_ENV, ApiConfig
from dnsfailover.config.schema import TsigKeyConfig
from dnsfailover.errors import DnsFailoverError


class TokenError(DnsFailoverError):
    """The API token cannot be read."""


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


# `tsig-keygen` prints a BIND key block; a secret file may hold that or the bare base64.
_BLOCK_SECRET = re.compile(r'secret\s+"([^"]+)"\s*;')


class TsigSecretError(DnsFailoverError):
    """A TSIG key's secret cannot be read."""


def read_secret(name: str, key: TsigKeyConfig) -> bytes:
    """The decoded secret of key ``name``.

    :raises TsigSecretError: naming the key and the source, never the secret.
    """
    if key.secret_file is not None:
        try:
            text = Path(key.secret_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
            raise TsigSecretError(
                f"TSIG key {name}: cannot read secret_file {key.secret_file}: {why}"
            ) from None
        source = f"secret_file {key.secret_file}"
    else:
        assert key.secret_env is not None  # the schema wants exactly one source
        value = os.environ.get(key.secret_env)
        if value is None:
            raise TsigSecretError(
                f"TSIG key {name}: environment variable {key.secret_env} is not set"
            )
        text, source = value, f"secret_env {key.secret_env}"
    found = _BLOCK_SECRET.search(text)
    encoded = (found.group(1) if found else text).strip()
    try:
        secret = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise TsigSecretError(f"TSIG key {name}: {source} does not hold a base64 secret") from None
    if not secret:
        raise TsigSecretError(f"TSIG key {name}: {source} is empty")
    return secret
