"""The `regions:` and `cluster:` sections of the config (see runtime/cluster_link.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from dnsfailover.fields import Duration, IPAddress, Model


class RegionConfig(Model):
    """A vantage point; nodes started with `--region NAME` probe from it."""

    # Probes leave from this address (a multi-homed checker, or an allow-listed source).
    source_address: IPAddress | None = None


class EtcdTls(Model):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def _etcd_endpoint(value: str) -> str:
    """`http://127.0.0.1:2379`, `https://...` or `HOST:PORT`, returned as `HOST:PORT`."""
    text = value.strip()
    m = re.fullmatch(r"(?:(https?)://)?(\[[^\]]+\]|[^:/\[\]]+):(\d{1,5})/?", text)
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise ValueError(f"{value!r} is not an etcd endpoint such as http://127.0.0.1:2379")
    return f"{m.group(2)}:{m.group(3)}"


class EtcdConfig(Model):
    endpoints: Annotated[
        tuple[Annotated[str, AfterValidator(_etcd_endpoint)], ...], Field(min_length=1)
    ]
    prefix: Annotated[str, Field(pattern=r"^/[^\s]*[^/\s]$")] = "/dnsfailover/default"
    username: str | None = None
    password_env: str | None = None  # the password is read from the environment, never YAML
    tls: EtcdTls | None = None
    timeout: Duration = 2.0  # per etcd call


class ClusterConfig(Model):
    """Several nodes sharing observations, overrides and one published decision."""

    etcd: EtcdConfig
    # How long a node's lease (observations, leadership) outlives its last keep-alive.
    lease_ttl: Annotated[int, Field(ge=1, le=60)] = 2


def regions_shorthand(value: Any) -> Any:
    """`regions: [us, eu]` is shorthand for `regions: {us: {}, eu: {}}`."""
    if isinstance(value, list | tuple):
        return {str(name): {} for name in value}
    return value
