"""TSIG keys (RFC 8945) as dnspython keys, their secrets read by `config.secrets`."""

from __future__ import annotations

from collections.abc import Mapping

import dns.name
import dns.tsig

from dnsfailover.config.schema import TsigKeyConfig
from dnsfailover.config.secrets import read_secret

ALGORITHMS: Mapping[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}

Keyring = dict[dns.name.Name, dns.tsig.Key]


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
