"""What the observed world means for a binding: the external triggers.

The reconciler calls ``external_trigger`` with the binding as persisted and the Service as last
seen (from a watch event, a re-list or a restart) before running any handler. A Service that
is gone, being deleted or no longer of type LoadBalancer deletes the binding; a Service whose
inputs changed since they were last accepted sends the binding back to Pending.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from engine.kube.port import FINALIZER
from engine.model.config import ANNOTATION, is_paused
from engine.store import Binding

_FROM_SERVICE: Any = object()


def wants_load_balancer(service: dict[str, Any]) -> bool:
    return (service.get("spec") or {}).get("type") == "LoadBalancer" and not (
        (service.get("metadata") or {}).get("deletionTimestamp")
    )


def has_finalizer(service: dict[str, Any]) -> bool:
    return FINALIZER in ((service.get("metadata") or {}).get("finalizers") or [])


def fingerprint(
    service: dict[str, Any], *, annotation: str | None = _FROM_SERVICE, nodes: tuple[str, ...] = ()
) -> str:
    """A digest of every Service input a binding depends on.

    ``annotation`` overrides the dklb-config text: Pending records the fingerprint of the
    Service as it will be once the defaulted configuration is written back, so the watch event
    caused by that write is recognised as nothing new. ``nodes`` are the Node addresses the
    backends point at in the "address" backend mode (empty otherwise): a new Node is a change.
    """
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    annotations = meta.get("annotations") or {}
    inputs = {
        "uid": meta.get("uid", ""),
        "config": annotations.get(ANNOTATION) if annotation is _FROM_SERVICE else annotation,
        "paused": is_paused(annotations),
        "nodes": list(nodes),
        "ports": [
            [p.get("port"), p.get("nodePort"), p.get("protocol", "TCP"), p.get("name", "")]
            for p in spec.get("ports") or []
        ],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def external_trigger(
    binding: Binding | None, service: dict[str, Any] | None, *, nodes: tuple[str, ...] = ()
) -> str | None:
    """The trigger the world fires on this binding now, or None.

    ``observed`` creates a binding: for a LoadBalancer Service, and also for a Service that
    still carries our finalizer without a binding (its clean-up must still happen).
    """
    if binding is None:
        if service is not None and (wants_load_balancer(service) or has_finalizer(service)):
            return "observed"
        return None
    if binding.state == "Deleting":
        return None
    if service is None or not wants_load_balancer(service):
        return "delete"
    uid = (service.get("metadata") or {}).get("uid", "")
    if binding.uid and uid and uid != binding.uid:
        # Same name, another object: the Service we served was deleted while we were away.
        return "delete"
    if binding.state != "Pending" and fingerprint(service, nodes=nodes) != binding.fingerprint:
        return "spec_changed"
    return None
