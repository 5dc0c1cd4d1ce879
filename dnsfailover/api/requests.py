"""Turning the JSON bodies of mutating calls into `Override` values, with precise 400s.

Each message names the field and what would be accepted, so an operator (or the CLI that
relays it) can fix the request without reading the code.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dnsfailover.api.views import NotFound, resolve_name
from dnsfailover.engine.overrides import Action, Override, new_id, target_problem
from dnsfailover.errors import UserError
from dnsfailover.fields import MAX_DURATION, parse_duration

if TYPE_CHECKING:
    from dnsfailover.config.schema import Config

FIELDS = (
    "action",
    "name",
    "endpoint",
    "tier",
    "reason",
    "who",
    "expires_in",
    "expires_at",
    "force",
)
ACTIONS = ", ".join(a.value for a in Action)
MAX_TEXT = 500
MAX_EXPIRY = MAX_DURATION  # a year, as for every duration: longer is a mistake, or an overflow


class BadRequest(UserError):
    """The request is malformed or names what does not exist; the message says which."""


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise BadRequest(f"{key} must not be empty")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{key} is longer than {MAX_TEXT} characters")
    return value or None


def parse_expiry(body: dict[str, Any], now: float) -> float | None:
    """`expires_in` (a duration: 30m, 90s, 3600) or `expires_at` (unix time), not both."""
    expires_in, expires_at = body.get("expires_in"), body.get("expires_at")
    if expires_in is not None and expires_at is not None:
        raise BadRequest("give expires_in or expires_at, not both")
    if expires_in is not None:
        try:
            seconds = parse_duration(expires_in)
        except (ValueError, OverflowError) as e:
            raise BadRequest(f"expires_in: {e}") from None
        if not math.isfinite(seconds):
            raise BadRequest("expires_in must be a finite duration such as 30m or 3600")
        if seconds <= 0:
            raise BadRequest("expires_in must be longer than zero")
        return now + seconds
    if expires_at is not None:
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            raise BadRequest("expires_at must be a unix time in seconds (a number)")
        try:
            at = float(expires_at)
        except OverflowError:
            at = math.inf
        if not math.isfinite(at):
            raise BadRequest("expires_at must be a finite unix time in seconds")
        if at <= now:
            raise BadRequest(f"expires_at {at:.0f} is in the past (now {now:.0f})")
        if at > now + MAX_EXPIRY:
            raise BadRequest(f"expires_at {at:.0f} is more than 366 days ahead (now {now:.0f})")
        return at
    return None


def parse_override(
    body: dict[str, Any], config: Config, now: float, remote: str | None
) -> Override:
    """A new override from a POST body.

    :raises BadRequest: with a message naming the field at fault.
    """
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; expected: {', '.join(FIELDS)}")
    raw = _text(body, "action", required=True)
    assert raw is not None
    try:
        action = Action(raw.lower().replace("-", "_"))
    except ValueError:
        raise BadRequest(f"action {raw!r} is not one of: {ACTIONS}") from None
    reason = _text(body, "reason", required=True)
    assert reason is not None
    name = _text(body, "name")
    if name is not None:
        try:
            name = resolve_name(config, name)
        except NotFound as e:
            raise BadRequest(str(e)) from None
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest("force must be true or false")
    who = _text(body, "who") or f"api@{remote or 'unknown'}"
    override = Override(
        id=new_id(),
        action=action,
        name=name,
        endpoint=_text(body, "endpoint"),
        tier=_text(body, "tier"),
        reason=reason,
        who=who,
        created_at=now,
        expires_at=parse_expiry(body, now),
        force=force,
    )
    problem = target_problem(config, override)
    if problem is not None:
        raise BadRequest(problem)
    return override


def parse_removal(
    body: dict[str, Any], query: dict[str, str], remote: str | None
) -> tuple[str, str]:
    """(who, reason) of a DELETE, from its JSON body or its query string; reason required."""
    merged: dict[str, Any] = {**query, **body}
    unknown = sorted(set(merged) - {"who", "reason"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; expected: who, reason")
    reason = _text(merged, "reason", required=True)
    assert reason is not None
    return _text(merged, "who") or f"api@{remote or 'unknown'}", reason
