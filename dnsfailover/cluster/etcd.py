"""Build aetcd clients from `EtcdConfig`: endpoints, credentials and TLS.

The password comes from the environment variable named by `password_env` and TLS files
are read once (off the event loop); neither is ever logged.  aetcd 1.0 only opens
plaintext channels, so `_TlsClient` repeats its `connect` with a secure channel.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher

from dnsfailover.config.cluster import EtcdConfig
from dnsfailover.errors import DnsFailoverError


class ClusterUnavailable(DnsFailoverError):
    """etcd cannot be reached right now; the change was not made (retry when it is back)."""


class ClusterConfigError(DnsFailoverError):
    """The etcd settings cannot be used (the message says which; it never holds secrets)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client needs besides the endpoint; `repr` hides the secrets."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: bytes | None = field(default=None, repr=False)
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    tls: bool = False


def _read_files(config: EtcdConfig) -> tuple[bytes | None, bytes | None, bytes | None]:
    tls = config.tls
    if tls is None:
        return None, None, None
    out: list[bytes | None] = []
    for what, name in (
        ("ca_file", tls.ca_file),
        ("cert_file", tls.cert_file),
        ("key_file", tls.key_file),
    ):
        try:
            out.append(None if name is None else Path(name).read_bytes())
        except OSError as e:
            raise ClusterConfigError(f"etcd.tls.{what}: cannot read {name}: {e.strerror}") from e
    return out[0], out[1], out[2]


async def load_credentials(config: EtcdConfig) -> Credentials:
    """Read the password from the environment and the TLS files from disk."""
    password: str | None = None
    if config.password_env is not None:
        password = os.environ.get(config.password_env)
        if password is None:
            raise ClusterConfigError(
                f"etcd.password_env: environment variable {config.password_env} is not set"
            )
    if (config.username is None) != (password is None):
        raise ClusterConfigError("etcd: username and password_env must be set together")
    ca, cert, key = await asyncio.to_thread(_read_files, config)
    return Credentials(config.username, password, ca, cert, key, tls=config.tls is not None)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host as gRPC wants it, port)."""
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def make_client(endpoint: str, creds: Credentials, timeout: float) -> aetcd.Client:
    """A client for one endpoint; every call it makes is bounded by `timeout` seconds."""
    host, port = split_endpoint(endpoint)
    # Keep gRPC's own reconnect backoff short: the cluster layer has its own.
    options = {"grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 1000}
    if creds.tls:
        return _TlsClient(
            creds,
            host=host,
            port=port,
            username=creds.username,
            password=creds.password,
            timeout=timeout,
            options=options,
        )
    return aetcd.Client(
        host=host,
        port=port,
        username=creds.username,
        password=creds.password,
        timeout=timeout,
        options=options,
    )


class _TlsClient(aetcd.Client):  # type: ignore[misc]
    """aetcd's client over a TLS channel (same steps as `aetcd.Client.connect`)."""

    def __init__(self, creds: Credentials, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=creds.ca, private_key=creds.key, certificate_chain=creds.cert
        )

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        target = f"{self._host}:{self._port}"
        self.channel = rpc.secure_channel(
            target, self._channel_credentials, options=self._options.items()
        )
        try:
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                request = rpc.AuthenticateRequest(name=self._username, password=self._password)
                resp = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.metadata = (("token", resp.token),)
        except rpc.AioRpcError as e:
            raise aetcd.ClientError(f"authenticate: {e.code().name}") from None
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(
            rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


READ_PAGE = 500  # keys per Range call: ~0.5 MB at most, far below gRPC's 4 MB reply cap


async def read_prefix(
    client: Any, prefix: bytes, per_call: float, page: int = READ_PAGE
) -> tuple[list[Any], int]:
    """Every key under `prefix` as of one revision, read `page` keys per call; returns the
    key-values (`aetcd.rtypes.KeyValue`) and that revision.

    One `get_prefix` brings the whole prefix in one gRPC reply, and a reply past 4 MB is
    refused by the client: with 10,000 names a joining node could never read the cluster.
    Later pages are pinned to the first page's revision, so the read is one snapshot.

    :raises aetcd.ClientError: as aetcd's own calls do.
    """
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    key, revision = prefix, 0
    out: list[Any] = []
    while True:
        request = rpc.RangeRequest(
            key=key, range_end=end, limit=page, revision=revision,
            sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY,
        )  # fmt: skip
        try:
            reply = await client.kvstub.Range(request, timeout=per_call, metadata=client.metadata)
        except grpc.aio.AioRpcError as e:
            kind = _ERRORS.get(e.code(), aetcd.ClientError)
            raise kind(e.details()) from e
        revision = revision or int(reply.header.revision)
        out += [aetcd.rtypes.KeyValue(kv) for kv in reply.kvs]
        if not reply.more or not reply.kvs:
            return out, revision
        key = bytes(reply.kvs[-1].key) + b"\0"


_ERRORS: dict[grpc.StatusCode, type[aetcd.ClientError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: aetcd.ConnectionTimeoutError,
    grpc.StatusCode.UNAVAILABLE: aetcd.ConnectionFailedError,
    grpc.StatusCode.INTERNAL: aetcd.InternalError,
}
