"""Notifications: webhooks and AWS SNS, rate-limited, never blocking the engine."""
