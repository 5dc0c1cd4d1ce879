"""The `notifications:` section of the config.

Secrets are never written in the config: a webhook's HMAC key is named by `secret_env` (an
environment variable) or `secret_file` (a file holding it), and read when the alerter starts.
Credentials in a URL (`https://user:pass@host`) are refused for the same reason.  SNS uses
the standard AWS credential chain (environment, shared config, instance or task role).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from dnsfailover.fields import Duration, Model

EventKind = Literal[
    "all",
    "transition",  # every answer change: failover, failback, all_down and answer
    "failover",
    "failback",
    "all_down",
    "answer",  # an active-active answer gained or lost endpoints
    "health",  # a target's voted state changed
    "interlock",  # an operator request or a plan refused by a safety interlock
    "provider_error",  # a provider push failed, was refused as unsafe, or was fenced
    "provider_applied",  # a provider push succeeded (only if the service reports them)
    "override",  # an operator override set or removed
    "capacity",  # a name's healthy endpoints cannot carry its load (and when they can again)
    "cluster",  # the leader cannot publish its decision to etcd (and when it can again)
    "dnssec",  # a signed zone's signatures cannot be re-made in time (and when they can again)
]
TRANSITION_KINDS = frozenset({"failover", "failback", "all_down", "answer"})
ALL_EVENTS: tuple[EventKind, ...] = ("all",)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")


def _webhook_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; sign with secret_env or secret_file")
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable holding the key, not the key itself"
        )
    return value


def _topic_arn(value: str) -> str:
    if not _TOPIC_ARN.match(value):
        raise ValueError("is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
    return value


WebhookUrl = Annotated[str, AfterValidator(_webhook_url)]
EnvName = Annotated[str, AfterValidator(_env_name)]
TopicArn = Annotated[str, AfterValidator(_topic_arn)]
Events = Annotated[tuple[EventKind, ...], Field(min_length=1)]


class Retry(Model):
    """How a failed delivery is retried: up to `attempts` tries in all, with backoff."""

    attempts: int = Field(default=5, ge=1, le=20)
    backoff: Duration = Field(default=1.0, gt=0)  # the first retry waits up to this long
    max_backoff: Duration = Field(default=60.0, gt=0)


class Destination(Model):
    events: Events = ALL_EVENTS
    retry: Retry = Field(default_factory=Retry)
    # Name in logs and stats; defaults to the host (webhooks) or the topic name (SNS).
    name: str | None = None

    def wants(self, kind: str) -> bool:
        """Whether a notice of `kind` goes to this destination."""
        events = self.events
        return (
            "all" in events
            or kind in events
            or ("transition" in events and kind in TRANSITION_KINDS)
        )


class WebhookConfig(Destination):
    """POST each notice as JSON, signed with HMAC-SHA256 when a key is configured."""

    url: WebhookUrl
    secret_env: EnvName | None = None
    secret_file: str | None = None
    timeout: Duration = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookConfig:
        if self.secret_env is not None and self.secret_file is not None:
            raise ValueError("give secret_env or secret_file, not both")
        return self

    def label(self) -> str:
        """`webhook hooks.example.com:443`: never the path or query, which may hold a token."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"webhook {parts.hostname}:{port}"


class SnsConfig(Destination):
    """Publish each notice to an SNS topic (credentials from the standard AWS chain)."""

    topic_arn: TopicArn
    region: str | None = None  # default: the region in the topic ARN
    endpoint_url: WebhookUrl | None = None  # only for tests and private endpoints
    timeout: Duration = Field(default=10.0, gt=0)

    @property
    def topic_region(self) -> str:
        return self.region or self.topic_arn.split(":")[3]

    def label(self) -> str:
        return self.name or f"sns {self.topic_arn.rsplit(':', 1)[-1]}"


class RateLimit(Model):
    """Per destination: at most `burst` notices at once, refilled at `burst` per `per`."""

    burst: int = Field(default=10, ge=1, le=10_000)
    per: Duration = Field(default=60.0, gt=0)


class NotificationsConfig(Model):
    """Where transitions, failovers, interlock trips and provider errors are sent."""

    webhooks: tuple[WebhookConfig, ...] = ()
    sns: tuple[SnsConfig, ...] = ()
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    # Notices waiting per destination; beyond it the oldest is dropped (and counted).
    queue: int = Field(default=1000, ge=1, le=100_000)

    @property
    def enabled(self) -> bool:
        return bool(self.webhooks or self.sns)

    def destinations(self) -> list[WebhookConfig | SnsConfig]:
        return [*self.webhooks, *self.sns]
