"""Notifications: webhooks and AWS SNS, rate-limited, never blocking the engine."""

from dnsfailover.alerts.alerter import Alerter, DestinationStats
from dnsfailover.alerts.config import NotificationsConfig
from dnsfailover.alerts.notice import Notice

__all__ = ["Alerter", "DestinationStats", "Notice", "NotificationsConfig"]
