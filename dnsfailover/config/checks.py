"""The `checks:` section: how an endpoint is probed (http, https, tcp, dns), how often, and
how many results make it UP or DOWN."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import re2
from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from dnsfailover.fields import (
    Duration,
    Model,
    Port,
    parse_duration,
)

MIN_INTERVAL = 0.1


DEFAULT_TIMEOUT = 2.0


def _status_range(value: Any) -> tuple[int, int]:
    """`200` → (200, 200); `"2xx"` → (200, 299); `"200-204"` → (200, 204)."""
    if isinstance(value, bool):
        raise ValueError("expected a status code such as 200, a range 200-299 or 2xx")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"[1-5]xx", value.strip().lower()):
        low = int(value.strip()[0]) * 100
        high = low + 99
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*(\d{3})\s*(?:-\s*(\d{3}))?\s*", value)):
        low = int(m.group(1))
        high = int(m.group(2) or m.group(1))
    else:
        raise ValueError(
            f"expected a status code such as 200, a range 200-299 or 2xx, got {value!r}"
        )
    if not (100 <= low <= high <= 599):
        raise ValueError(f"status range {value!r} is outside 100-599")
    return (low, high)


DEFAULT_PORTS = {"http": 80, "https": 443, "dns": 53}


def _is_regex(body: str) -> bool:
    """`expect_body: /ok|ready/` is a regular expression; anything else a plain substring."""
    return len(body) >= 2 and body.startswith("/") and body.endswith("/")


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is raised (and reported), not printed to stderr


def compile_body_regex(pattern: str) -> Any:
    """`pattern` compiled by RE2: matching takes time linear in the body, whatever the
    pattern (`/^(a+)+$/` cannot backtrack for minutes on a hostile target's body).  RE2
    has no backreferences (`\\1`) or lookaround (`(?=`, `(?<=`); those are refused here.

    :raises ValueError: why the pattern is not one RE2 accepts (RE2's words).
    """
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        why = e.args[0] if e.args else e
        why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
        raise ValueError(why) from None


def _quorum(value: Any) -> str | int:
    """`majority` | `any` | `all` | an integer k (regions that must see UP) | `NN%`."""
    if isinstance(value, bool):
        raise ValueError("expected majority, any, all, a number of regions or a percentage")
    if isinstance(value, int):
        if value < 1:
            raise ValueError("a quorum of regions must be at least 1")
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("majority", "any", "all"):
            return text
        if text.isdigit():
            return _quorum(int(text))
        if m := re.fullmatch(r"(\d{1,3})\s*%", text):
            pct = int(m.group(1))
            if not 1 <= pct <= 100:
                raise ValueError(f"quorum percentage {value!r} is outside 1%-100%")
            return f"{pct}%"
    raise ValueError(
        f"expected majority, any, all, a number of regions or a percentage such as 60%, "
        f"got {value!r}"
    )


StatusRange = Annotated[tuple[int, int], BeforeValidator(_status_range)]
Quorum = Annotated[str | int, BeforeValidator(_quorum)]
DnsQueryType = Literal["A", "AAAA", "CAA", "CNAME", "MX", "NAPTR", "NS", "PTR", "SOA", "SRV", "TXT"]


class CheckConfig(Model):
    """A named health check; records refer to it by name."""

    type: Literal["http", "https", "tcp", "dns"]
    port: Port | None = None
    interval: Duration = 10.0
    timeout: Duration = DEFAULT_TIMEOUT
    rise: Annotated[int, Field(ge=1, le=100)] = 2
    fall: Annotated[int, Field(ge=1, le=100)] = 3
    quorum: Quorum = "majority"  # how many fresh regions must see a target UP
    # http / https
    path: str = "/"
    method: Literal["GET", "HEAD"] = "GET"
    expect_status: tuple[StatusRange, ...] = ((200, 399),)
    expect_body: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    host: str | None = None
    insecure: bool = False
    # dns
    query: str | None = None
    query_type: DnsQueryType = "A"
    expect_rcode: Literal["NOERROR", "NXDOMAIN"] = "NOERROR"
    expect_answer: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_timeout(cls, data: Any) -> Any:
        """Without a timeout, use 2s or the interval, whichever is shorter."""
        if isinstance(data, dict) and "timeout" not in data and "interval" in data:
            try:
                interval = parse_duration(data["interval"])
            except ValueError:
                return data  # the interval's own error is reported
            return {**data, "timeout": min(DEFAULT_TIMEOUT, interval)}
        return data

    # Single-field rules are field validators so that errors point at the key itself.
    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < MIN_INTERVAL:
            raise ValueError(f"interval must be at least {int(MIN_INTERVAL * 1000)}ms")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timeout must be greater than zero")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with /")
        return value

    @field_validator("expect_body")
    @classmethod
    def _expect_body(cls, value: str | None) -> str | None:
        if value is not None and _is_regex(value):
            try:
                compile_body_regex(value[1:-1])
            except ValueError as e:
                raise ValueError(
                    f"invalid regular expression {value}: {e} (RE2 syntax: no backreferences "
                    "or lookaround)"
                ) from None
        return value

    @model_validator(mode="after")
    def _coherent(self) -> CheckConfig:
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must not be longer than interval ({self.interval:g}s)"
            )
        if self.type == "tcp" and self.port is None:
            raise ValueError("a tcp check needs a port")
        if self.type == "dns" and not self.query:
            raise ValueError("a dns check needs a query (the name to ask)")
        return self

    @property
    def expect_body_regex(self) -> Any:
        """`expect_body` written as `/regex/`, compiled by RE2 (`compile_body_regex`); None
        when it is a plain substring."""
        if self.expect_body is None or not _is_regex(self.expect_body):
            return None
        return compile_body_regex(self.expect_body[1:-1])

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.type]

    @property
    def detection_time(self) -> float:
        """Worst-case seconds from an endpoint failing to it being marked down."""
        return self.interval * self.fall + self.timeout
