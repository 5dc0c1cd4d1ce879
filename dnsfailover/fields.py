"""Value types shared by every config model (the core's and the providers' options)."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION = 366 * 86400.0  # a year: timers, datetimes and sleeps all hold it


def parse_duration(value: Any) -> float:
    """Seconds from `100ms`, `1s`, `2.5s`, `1m`, `1h` or a bare number of seconds; finite,
    and at most `MAX_DURATION` (`.inf`, `.nan` and 10**400 are refused here, not by a timer
    at run time)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 1s or 1m")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNIT[m.group(2)]
        else:
            raise ValueError(f"expected a duration such as 500ms, 1s or 1m, got {value!r}")
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration can be at most 366 days ({MAX_DURATION:.0f}s)")
    return seconds


def absolute_name(name: str, origin: str) -> str:
    """`www` in `example.test.` → `www.example.test.`; `@` → the origin; absolute names stay."""
    name = name.strip().lower()
    if name in ("@", ""):
        return origin
    if name.endswith("."):
        return name
    return f"{name}.{origin}" if origin != "." else f"{name}."


def in_zone(name: str, origin: str) -> bool:
    return origin == "." or name == origin or name.endswith("." + origin)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _fqdn(value: str) -> str:
    name = value.strip().lower()
    if not name or name == ".":
        return "."
    if not name.endswith("."):
        raise ValueError(f"{value!r} must be absolute (end with a dot)")
    labels = name[:-1].split(".")
    if any(not label or len(label) > 63 for label in labels) or len(name) > 254:
        raise ValueError(f"{value!r} is not a valid domain name")
    return name


Duration = Annotated[float, BeforeValidator(parse_duration)]
IPAddress = Annotated[str, AfterValidator(_ip)]
Fqdn = Annotated[str, AfterValidator(_fqdn)]
Port = Annotated[int, Field(ge=1, le=65535)]
Ttl = Annotated[int, Field(ge=0, le=2_147_483_647)]


class Model(BaseModel):
    # allow_inf_nan: no setting of a config means anything with `.inf` or `.nan`
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)
