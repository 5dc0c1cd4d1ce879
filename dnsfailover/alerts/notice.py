"""`Notice`: one thing worth telling a human about, as a plain value.

The service turns engine transitions, voted health changes and provider events into notices
with the `from_*` constructors; operations build interlock and override notices directly.
The JSON form (`payload`) is what webhooks receive and what SNS messages carry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from dnsfailover.engine.values import Transition
    from dnsfailover.model import HealthChange
    from dnsfailover.provider.sync import SyncEvent

Severity = Literal["info", "warning", "error", "critical"]

_TRANSITION_SEVERITY: dict[str, Severity] = {
    "failover": "warning",
    "failback": "info",
    "answer": "info",
    "all_down": "critical",
}
_SYNC_SEVERITY: dict[str, Severity] = {"applied": "info", "refused": "warning", "fenced": "warning"}
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification.

    `kind` is what destinations filter on (see `alerts.config.EventKind`); `subject` is what
    it is about (a name, a target, a zone); `message` is one human sentence; `at` is unix
    time; `data` holds machine-readable details and must be JSON-serialisable.
    """

    kind: str
    subject: str
    message: str
    at: float
    severity: Severity = "info"
    data: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def title(self) -> str:
        """A one-line summary: the SNS subject and the first thing a receiver shows."""
        return f"[{self.severity}] {self.kind} {self.subject}"

    def payload(self, node: str | None = None) -> dict[str, Any]:
        """The JSON document sent to webhooks and SNS."""
        body: dict[str, Any] = {
            "kind": self.kind,
            "subject": self.subject,
            "message": self.message,
            "at": self.at,
            "time": iso_time(self.at),
            "severity": self.severity,
            "data": dict(self.data),
        }
        if node is not None:
            body["node"] = node
        return body

    @classmethod
    def from_transition(cls, t: Transition) -> Notice:
        """A failover, failback, all-down or answer change of a managed name."""
        old = ", ".join(t.old) or "nothing"
        new = ", ".join(t.new) or "nothing"
        return cls(
            kind=t.kind,
            subject=t.name,
            message=f"{t.kind} {t.name}: {old} -> {new}: {t.reason}",
            at=t.at,
            severity=_TRANSITION_SEVERITY.get(t.kind, "warning"),
            data={"name": t.name, "old": list(t.old), "new": list(t.new), "reason": t.reason},
        )

    @classmethod
    def from_health(cls, change: HealthChange) -> Notice:
        """A target's health changed (the voted state when `region` is None)."""
        old, new = str(change.old), str(change.new)
        where = "" if change.region is None else f" in {change.region}"
        return cls(
            kind="health",
            subject=change.target,
            message=f"{change.target} {old} -> {new}{where}: {change.reason}",
            at=change.at,
            severity="warning" if new == "down" else "info",
            data={
                "target": change.target,
                "region": change.region,
                "old": old,
                "new": new,
                "reason": change.reason,
            },
        )

    @classmethod
    def from_sync_event(cls, event: SyncEvent) -> Notice:
        """A provider push that failed, was refused as unsafe, or was fenced off.

        Refused plans are `provider_error` too: either way the provider's records are not
        what the engine decided, which is what a subscriber to provider errors wants to know.
        A successful push (`applied`) gives an `info` notice of kind `provider_applied`.
        """
        kind = "provider_applied" if event.kind == "applied" else "provider_error"
        severity = _SYNC_SEVERITY.get(event.kind, "error")
        data: dict[str, Any] = {"zone": event.zone, "result": event.kind}
        if event.seconds is not None and math.isfinite(event.seconds):
            data["seconds"] = round(event.seconds, 3)
        return cls(
            kind=kind,
            subject=event.zone,
            message=f"provider {event.kind} for {event.zone}: {event.message}",
            at=event.at,
            severity=severity,
            data=data,
        )


def iso_time(at: float) -> str:
    """`2024-05-01T12:00:00.250Z`: unix time as ISO 8601 UTC, milliseconds."""
    stamp = datetime.fromtimestamp(at, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
