"""The HTTP API: status, endpoints, events, explain, overrides, /metrics and the status page."""
