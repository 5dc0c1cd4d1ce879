"""The zone's `options:` mapping for `provider: rfc2136`, and reading the TSIG secret.

The secret is never an option: `secret_file` names a file and `secret_env` an environment
variable that hold it.  It is read in `start()`, kept only in dnspython's keyring, and never
logged or put into an error message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import dns.name
import dns.tsig
from pydantic import AfterValidator, Field, model_validator

from dnsfailover.fields import Duration, IPAddress, Port
from dnsfailover.provider.contract import ProviderError, ProviderOptions

ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}

Seconds = Annotated[Duration, Field(gt=0)]

# `secret "base64";` inside a BIND/Knot-style key block (tsig-keygen's output)
_KEY_BLOCK_SECRET = re.compile(r'secret\s+"([^"]*)"')


def _key_name(value: str) -> str:
    try:
        name = dns.name.from_text(value.strip())
    except dns.exception.DNSException as e:
        raise ValueError(f"{value!r} is not a valid key name: {e}") from e
    return name.to_text().lower()


class Rfc2136Options(ProviderOptions):
    """Options of a zone kept on an RFC 2136 primary (BIND, Knot, PowerDNS)."""

    #: the primary's IP address (a host name is not resolved)
    server: IPAddress
    port: Port = 53
    #: the TSIG key's name, as the primary knows it
    key_name: Annotated[str, AfterValidator(_key_name)]
    algorithm: Literal["hmac-sha256", "hmac-sha512", "hmac-sha1"] = "hmac-sha256"
    #: a file with the base64 secret, alone or in a `key "..." { ... secret "..."; };` block
    secret_file: Path | None = None
    #: an environment variable holding the base64 secret
    secret_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    #: per query or update message
    timeout: Seconds = 5.0
    #: send over TCP (True) or UDP with TCP fallback for truncated answers (False)
    tcp: bool = True
    #: written into every ownership marker
    owner_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")] = "dnsfailover"
    #: one apply's updates, retries included, must be done within this
    deadline: Seconds = 60.0
    #: retry backoff: a random sleep in [0, min(backoff_max, backoff_base * 2**attempt)]
    backoff_base: Seconds = 0.5
    backoff_max: Seconds = 10.0
    #: how long to wait for the primary to serve the new answers after the updates
    confirm_timeout: Seconds = 30.0
    #: resource records per UPDATE message (prerequisites, deletions and additions together)
    max_batch_records: Annotated[int, Field(ge=8, le=5000)] = 500

    @model_validator(mode="after")
    def _one_secret(self) -> Rfc2136Options:
        if (self.secret_file is None) == (self.secret_env is None):
            raise ValueError(
                "give exactly one of secret_file and secret_env (the secret itself is never "
                "an option)"
            )
        return self

    @property
    def algorithm_name(self) -> dns.name.Name:
        return ALGORITHMS[self.algorithm]


def read_secret(opts: Rfc2136Options) -> bytes:
    """The TSIG secret, decoded.  Errors say where it was looked for, never what was found."""
    if opts.secret_file is not None:
        where = f"secret_file {opts.secret_file}"
        try:
            text = opts.secret_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ProviderError(f"{where}: cannot read it: {type(e).__name__}") from None
        found = _KEY_BLOCK_SECRET.findall(text)
        if len(found) > 1:
            raise ProviderError(f"{where}: holds {len(found)} key blocks; give it only one")
        if found:
            text = found[0]
    else:
        assert opts.secret_env is not None
        where = f"secret_env {opts.secret_env}"
        text = os.environ.get(opts.secret_env, "")
        if not text:
            raise ProviderError(f"{where}: the variable is not set or empty")
    try:
        secret = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        # from None: the decoder's message could quote part of the secret
        raise ProviderError(f"{where}: the secret is not valid base64") from None
    if not secret:
        raise ProviderError(f"{where}: the secret is empty")
    return secret
