"""TSIG keys (RFC 8945): read secrets from files or the environment, build dnspython keys.

A secret never appears in the config, in a log line or in an error message: errors name
the key and say what is wrong with where its secret should be, nothing more.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path

import dns.name
import dns.tsig

from dnsfailover.errors import DnsFailoverError
from dnsfailover.schema import TsigKeyConfig

ALGORITHMS: Mapping[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}

Keyring = dict[dns.name.Name, dns.tsig.Key]

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


def make_keyring(keys: Mapping[str, TsigKeyConfig]) -> Keyring:
    """Every configured key as a dnspython key, by absolute key name.

    :raises TsigSecretError: if any secret cannot be read.
    """
    keyring: Keyring = {}
    for name, key in keys.items():
        keyname = key_name(name)
        keyring[keyname] = dns.tsig.Key(keyname, read_secret(name, key), ALGORITHMS[key.algorithm])
    return keyring


def key_name(name: str) -> dns.name.Name:
    """A key name as written in the config (``xfr-key``) as an absolute DNS name."""
    return dns.name.from_text(name)
