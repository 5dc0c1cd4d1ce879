"""Reading secrets: the API's bearer token and TSIG key secrets, from files or the environment.

A secret never appears in the config (configs end up in repositories), in a log line or in
an error message: errors name the key or the setting and say what is wrong with where the
secret should be, nothing more.  Both are read when the config is loaded (`token_problems`,
`crosscheck`), so `validate` finds a missing or short one before anything is started.
Secret files are read bounded (`files.read_bounded`): a FIFO or `/dev/zero` is refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from dnsfailover.config.api import MIN_TOKEN_LENGTH, TOKEN_ENV, ApiConfig
from dnsfailover.config.files import MAX_SECRET_BYTES, UnreadableFile, read_text_bounded
from dnsfailover.config.schema import Config, TsigKeyConfig
from dnsfailover.config.yamlpos import YamlPath
from dnsfailover.errors import DnsFailoverError


class TokenError(DnsFailoverError):
    """The API token cannot be read."""

    def __init__(self, message: str, path: YamlPath = ("api",)) -> None:
        super().__init__(message)
        self.path = path  # the config setting at fault


def token_problems(
    config: Config, environ: dict[str, str] | None = None
) -> list[tuple[YamlPath, str]]:
    """What is wrong with where the API token comes from, as (setting, message): checked
    with the rest of the config, so a node never starts serving DNS with a broken one."""
    try:
        resolve_token(config.api, environ)
    except TokenError as e:
        return [(e.path, str(e))]
    return []


def resolve_token(api: ApiConfig, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token for mutating calls: `token_file`, else `token_env`, else
    $DNSFAILOVER_API_TOKEN; None when none is set (mutating calls are then refused).

    :raises TokenError: when a configured source is missing, empty or too short; a typo
        must not silently leave the API without its token.  Messages never contain the token.
    """
    env = os.environ if environ is None else environ
    if api.token_file is not None:
        path = Path(api.token_file).expanduser()
        where: YamlPath = ("api", "token_file")
        try:
            token = read_text_bounded(path, MAX_SECRET_BYTES).strip()
        except UnreadableFile as e:
            raise TokenError(f"api.token_file: cannot read {path}: {e}", where) from None
        return _checked(token, f"api.token_file {path}", where)
    if api.token_env is not None:
        where = ("api", "token_env")
        value = env.get(api.token_env)
        if value is None:
            message = f"api.token_env: environment variable {api.token_env} is not set"
            raise TokenError(message, where)
        return _checked(value.strip(), f"environment variable {api.token_env}", where)
    value = env.get(TOKEN_ENV)
    if value is None or not value.strip():
        return None
    return _checked(value.strip(), f"environment variable {TOKEN_ENV}", ("api",))


def _checked(token: str, source: str, where: YamlPath) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        message = f"{source}: the API token must be at least {MIN_TOKEN_LENGTH} characters"
        raise TokenError(message, where)
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
            text = read_text_bounded(Path(key.secret_file), MAX_SECRET_BYTES)
        except UnreadableFile as why:
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
