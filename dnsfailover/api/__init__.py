"""The HTTP API: status, endpoints, events, explain, overrides, reload, /metrics, the page.

Owns: routes (`server.py`, `openapi.py`), JSON views (`views.py`, `explain.py`), the states
of names and roles of endpoints they show (`states.py`), request parsing (`requests.py`),
Prometheus metrics (`metrics.py`, `scrape.py`) and the status page.
May import: the layers below (alerts, server, checks, engine, health, config, provider,
ground floor).  It sees a node only through the Protocols in `ports.py` (`NodeView`,
`NodeControl`), never `runtime/`.
"""
