"""The `notifications:` section of the config."""

from __future__ import annotations

from dnsfailover.fields import Model


class NotificationsConfig(Model):
    """Where transitions, failovers, interlock trips and provider errors are sent."""
