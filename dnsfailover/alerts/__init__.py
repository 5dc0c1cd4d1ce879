"""Notifications: webhooks and AWS SNS, rate-limited, never blocking the engine."""

from dnsfailover.alerts.alerter import Alerter, DestinationStats
from dnsfailover.alerts.notice import Notice
from dnsfailover.config.alerts import NotificationsConfig

__all__ = ["Alerter", "DestinationStats", "Notice", "NotificationsConfig"]
