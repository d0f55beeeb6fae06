"""The Kubernetes port: the writes state handlers make on a Service, whatever implements them.

Implemented by the API-server adapter (``dklb run``) and by a fake in tests. Every method is
idempotent and treats a Service that no longer exists as done, so a handler re-run after a
crash repeats them harmlessly. ``service`` is the Service as a JSON dict (as last observed).
Writes return the Service as stored after the write (None when it is gone), which the
reconciler puts into its cache at once: the watch event of our own write may come later, and a
stale cache would look like a change made by the user.
"""

from __future__ import annotations

from typing import Any, Protocol

Service = dict[str, Any]


class Kube(Protocol):
    def add_finalizer(self, service: Service, *, annotation: str | None = None) -> Service | None:
        """Add dklb's finalizer and, in the same write, put ``annotation`` (the defaulted
        configuration object) into the dklb-config annotation, unless the user has changed that
        annotation since ``service`` was read: their newer edit wins."""
        ...

    def remove_finalizer(self, service: Service) -> Service | None: ...

    def set_ingress(self, service: Service, ingress: list[dict[str, str]]) -> Service | None:
        """Replace ``status.loadBalancer.ingress`` (an empty list clears it)."""
        ...

    def event(self, service: Service, *, type: str, reason: str, message: str) -> None: ...
