"""Telemetry: what ``dklb run`` tells the outside about itself. Nothing here changes anything.

``metrics`` is the Prometheus registry and the hooks the other layers are handed;
``health`` serves ``/metrics``, ``/healthz`` and ``/readyz``; ``logs`` sets up text or JSON
lines; ``serving`` is the stdlib HTTP server those endpoints (and the admission webhook) use.

What it may import: the model and the store (the binding counts are read at scrape time).
"""
