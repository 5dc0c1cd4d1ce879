"""Notifications: webhooks and AWS SNS, rate-limited and retried, never blocking the engine.

Owns: the alerter (queues, rate limits, delivery), notices and their senders.
May import: the layers below it (engine, health, config, provider, ground floor); not the
runtime, the API, the server or the checks.  The node hands it notices.
"""

from dnsfailover.alerts.alerter import Alerter, DestinationStats
from dnsfailover.alerts.notice import Notice
from dnsfailover.config.alerts import NotificationsConfig

__all__ = ["Alerter", "DestinationStats", "Notice", "NotificationsConfig"]
