"""Delivery to one destination: a signed webhook POST, or an SNS publish.

A sender tries once and raises `DeliveryError` saying whether another try could help; the
alerter owns retries, backoff and rate limits.  Errors and logs name the destination by its
label (host and port, or topic name), never by the full URL: a webhook's path or query often
is a credential in itself.

Webhook signature: `X-Dnsfailover-Signature: sha256=HEX`, HEX being the HMAC-SHA256, keyed
with the shared secret, of `TIMESTAMP.BODY` (the `X-Dnsfailover-Timestamp` header, a dot, the
raw body bytes).  Binding the timestamp in lets a receiver refuse replays older than a few
minutes; each retry is signed afresh with its own timestamp.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from dnsfailover import __version__
from dnsfailover.alerts.notice import Notice
from dnsfailover.config.alerts import SnsConfig, WebhookConfig
from dnsfailover.errors import DnsFailoverError

logger = logging.getLogger("dnsfailover.alerts")

SIGNATURE_HEADER = "X-Dnsfailover-Signature"
TIMESTAMP_HEADER = "X-Dnsfailover-Timestamp"
DELIVERY_HEADER = "X-Dnsfailover-Delivery"
EVENT_HEADER = "X-Dnsfailover-Event"
SNS_SUBJECT_LIMIT = 100
_SNS_RETRYABLE_CODES = frozenset(
    {"Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
     "TooManyRequestsException", "InternalError", "InternalFailure", "ServiceUnavailable",
     "KMSThrottling"}
)  # fmt: skip


class DeliveryError(DnsFailoverError):
    """A delivery attempt failed; `retryable` says whether trying again could help."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class SetupError(DnsFailoverError):
    """A destination cannot work as configured (a missing key); it is disabled."""


class Sender(Protocol):
    """Delivers notices to one destination.

    Overrides must: raise `DeliveryError` for every failure of `send` (never anything
    else), keep secrets out of every message, and not block the event loop.
    """

    label: str

    async def start(self) -> None: ...

    async def send(self, notice: Notice, delivery_id: str) -> None: ...

    async def close(self) -> None: ...


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Dnsfailover-Signature` value for a body sent at `timestamp`."""
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: ignore it, our own backoff applies


def _read_key(config: WebhookConfig) -> bytes | None:
    """The HMAC key from the environment or a file; None when none is configured."""
    if config.secret_env is not None:
        value = os.environ.get(config.secret_env)
        if not value:
            raise SetupError(f"environment variable {config.secret_env} is not set or empty")
        return value.encode()
    if config.secret_file is not None:
        try:
            raw = Path(config.secret_file).read_bytes().strip()
        except OSError as exc:
            raise SetupError(
                f"cannot read secret_file {config.secret_file}: {exc.strerror}"
            ) from None
        if not raw:
            raise SetupError(f"secret_file {config.secret_file} is empty")
        return raw
    return None


class WebhookSender:
    """POSTs the notice's JSON; 2xx is delivered, 429/5xx/network errors are retryable."""

    def __init__(
        self,
        config: WebhookConfig,
        label: str,
        *,
        node: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.label = label
        self._config = config
        self._node = node
        self._clock = clock
        self._key: bytes | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._key = await asyncio.to_thread(_read_key, self._config)
        if self._key is None:
            logger.warning("notify: %s has no secret_env/secret_file: sent unsigned", self.label)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            headers={"User-Agent": f"dnsfailover/{__version__}"},
            trust_env=False,
        )

    async def send(self, notice: Notice, delivery_id: str) -> None:
        assert self._session is not None, "start() first"
        body = body_bytes(notice.payload(self._node))
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: notice.kind,
        }
        if self._key is not None:
            headers[SIGNATURE_HEADER] = sign(self._key, timestamp, body)
        try:
            async with self._session.post(
                self._config.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                await response.read()
        except TimeoutError:
            raise DeliveryError(
                f"timeout after {self._config.timeout:g}s", retryable=True
            ) from None
        except aiohttp.ClientConnectorError as exc:
            reason = (exc.os_error.strerror or type(exc.os_error).__name__).lower()
            raise DeliveryError(f"cannot connect: {reason}", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"HTTP error: {type(exc).__name__}", retryable=True) from None
        if 200 <= status < 300:
            return
        retryable = status == 429 or status >= 500
        raise DeliveryError(f"HTTP {status}", retryable=retryable, retry_after=retry_after)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def sns_subject(notice: Notice) -> str:
    """SNS subjects: ASCII, printable, no line breaks, at most 100 characters."""
    text = "".join(c if " " <= c <= "~" else "?" for c in notice.title())
    if len(text) > SNS_SUBJECT_LIMIT:
        text = text[: SNS_SUBJECT_LIMIT - 3] + "..."
    return text


class SnsSender:
    """`sns.publish` in a worker thread; throttling, 5xx and network errors are retryable.

    The message is the same JSON document a webhook gets; `kind` and `severity` are also
    message attributes, so subscriptions can filter on them (SNS filter policies).
    botocore's own retries are off: the alerter retries with its backoff and rate limit.
    """

    def __init__(self, config: SnsConfig, label: str, *, node: str | None = None) -> None:
        self.label = label
        self._config = config
        self._node = node
        self._client: Any = None

    async def start(self) -> None:
        self._client = await asyncio.to_thread(self._make_client)

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        boto_config = BotoConfig(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=self._config.timeout,
            read_timeout=self._config.timeout,
        )
        return boto3.session.Session().client(
            "sns",
            region_name=self._config.topic_region,
            endpoint_url=self._config.endpoint_url,
            config=boto_config,
        )

    async def send(self, notice: Notice, delivery_id: str) -> None:
        assert self._client is not None, "start() first"
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        payload = notice.payload(self._node)
        payload["delivery"] = delivery_id
        try:
            await asyncio.to_thread(
                self._client.publish,
                TopicArn=self._config.topic_arn,
                Subject=sns_subject(notice),
                Message=json.dumps(payload, sort_keys=True, default=str),
                MessageAttributes={
                    "kind": {"DataType": "String", "StringValue": notice.kind},
                    "severity": {"DataType": "String", "StringValue": notice.severity},
                },
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            retryable = status >= 500 or status == 429 or code in _SNS_RETRYABLE_CODES
            raise DeliveryError(f"SNS {code} (HTTP {status})", retryable=retryable) from None
        except NoCredentialsError:
            raise DeliveryError("no AWS credentials found", retryable=False) from None
        except BotoCoreError as exc:
            raise DeliveryError(f"SNS: {type(exc).__name__}", retryable=True) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
