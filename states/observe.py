"""What the observed world means for a binding: the external triggers.

``lifecycle.yaml`` declares ``external_trigger`` as the lifecycle's ``external`` function: the
reconciler calls it with the binding as persisted and the Service as last seen (from a watch
event, a re-list or a restart) before running any handler. A LoadBalancer Service without a
binding is ``observed``; a Service that is gone, being deleted or no longer of type
LoadBalancer deletes the binding; a Service whose inputs changed since they were last accepted
sends the binding back to Pending. Each trigger comes with the reason and message history and
the Events record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from engine.contract import Fire
from engine.model.services import (
    ANNOTATION,
    LOAD_BALANCER,
    SHARED_POOL_KEY_ANNOTATION,
    being_deleted,
    has_finalizer,
    is_paused,
    service_type,
    wants_load_balancer,
)
from engine.store import Binding

_FROM_SERVICE: Any = object()

# The objects a binding is created with when its Service already carries dklb's finalizer: it
# comes from an earlier life (a lost database) and may have objects in a pool it has no record
# of, so its deletion must look in EdgeLB. Any other new binding owns nothing (``objects`` None)
# until Pending accepts it into a pool: its deletion releases the Service without asking EdgeLB.
OBJECTS_UNKNOWN: dict[str, list[Any]] = {"frontends": [], "backends": []}


def fingerprint(
    service: dict[str, Any],
    *,
    annotation: str | None = _FROM_SERVICE,
    nodes: tuple[str, ...] = (),
    policy: str | None = None,
) -> str:
    """A digest of every Service input a binding depends on.

    ``annotation`` overrides the dklb-config text: Pending records the fingerprint of the
    Service as it will be once the defaulted configuration is written back, so the watch event
    caused by that write is recognised as nothing new. ``nodes`` are the Node addresses the
    backends point at in the "address" backend mode (empty otherwise): a new Node is a change.
    ``policy`` is ``Settings.policy_digest``: a change of the operator's rules is one too.
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
    key = annotations.get(SHARED_POOL_KEY_ANNOTATION)
    if key is not None:
        # Only when present: the fingerprints of Services without a key stay what they were, so
        # upgrading dklb sends no settled binding back to Pending.
        inputs["shared_pool_key"] = key
    if policy is not None:
        inputs["policy"] = policy  # likewise: absent while the operator keeps the defaults
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def external_trigger(
    binding: Binding | None,
    service: dict[str, Any] | None,
    *,
    nodes: tuple[str, ...] = (),
    policy: str | None = None,
) -> Fire | None:
    """The trigger the world fires on this binding now, or None.

    ``observed`` creates a binding: for a LoadBalancer Service, and also for a Service that
    still carries our finalizer without a binding: a LoadBalancer one (being deleted) may have
    objects in a pool (a lost database), any other type owns nothing and is only released.
    """
    if binding is None:
        if service is None:
            return None
        if has_finalizer(service) and service_type(service) != LOAD_BALANCER:
            # Not a LoadBalancer and no binding: nothing dklb made can be its, whatever its
            # finalizer or annotation say (anyone may write them). A binding that owns nothing
            # releases the finalizer at once, with no EdgeLB request at all.
            return Fire(
                "observed",
                reason="ServiceObserved",
                message=f"Service of type {service_type(service)} observed carrying dklb's finalizer: "
                "it has no load balancer, the finalizer is released and EdgeLB is not touched",
            )
        if has_finalizer(service):
            return Fire(
                "observed",
                reason="ServiceObserved",
                message="Service observed, already carrying dklb's finalizer",
                updates={"objects": OBJECTS_UNKNOWN},
            )
        if wants_load_balancer(service):
            return Fire("observed", reason="ServiceObserved", message="LoadBalancer Service observed")
        return None
    if binding.state == "Deleting":
        return None
    if service is None or not wants_load_balancer(service):
        return Fire("delete", reason="ServiceGone", message=_why_gone(service))
    uid = (service.get("metadata") or {}).get("uid", "")
    if binding.uid and uid and uid != binding.uid:
        # Same name, another object: the Service we served was deleted while we were away.
        return Fire("delete", reason="ServiceGone", message=_why_gone(service))
    if binding.state != "Pending" and fingerprint(service, nodes=nodes, policy=policy) != binding.fingerprint:
        return Fire(
            "spec_changed",
            reason="SpecChanged",
            message="the Service's configuration, ports or pause annotation changed, or the operator's rules",
        )
    return None


def _why_gone(service: dict[str, Any] | None) -> str:
    if service is None:
        return "the Service was deleted"
    if being_deleted(service):
        return "the Service is being deleted"
    if service_type(service) != LOAD_BALANCER:
        return f"the Service's type is now {service_type(service)}"
    return "the Service was replaced by a new object of the same name"
