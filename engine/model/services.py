"""Reading a Service: its key, its annotations, and whether dklb handles it (pure).

Everything that looks at a Service reads it through here: the watch and the Service cache (its
key), the reconciler's external triggers (``states/observe.py``: does dklb still want a load
balancer for it), the admission webhook, the orphan sweeper (is an object's owner still
handled) and the Kubernetes adapter (the annotation and the finalizer it writes). A Service is
the JSON dict the API server sends; nothing here assumes more of its shape than ``dict.get``.

Which LoadBalancer Services are dklb's (``spec.loadBalancerClass``, ``dklb run
--load-balancer-class``): a controller without a class takes the Services without one, as every
controller did before the field existed; a controller with a class takes exactly the Services of
that class. Any other is another controller's: the reconciler never sees it (``foreign``), the
webhook lets it through unchecked, the orphan sweeper does not count it as an owner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

#: The configuration object (``engine.model.config`` parses its value).
ANNOTATION = "kubernetes.dcos.io/dklb-config"
#: ``"true"`` (exactly that string, the Go dklb's contract) pauses a Service.
PAUSED_ANNOTATION = "kubernetes.dcos.io/dklb-paused"
#: Held on every Service dklb handles until its load balancer is cleaned up.
FINALIZER = "kubernetes.dcos.io/dklb"
#: Services of different namespaces share a pool only when both carry the same value (like
#: MetalLB's allow-shared-ip), unless the operator runs dklb with --allow-cross-namespace-pools.
SHARED_POOL_KEY_ANNOTATION = "kubernetes.dcos.io/dklb-shared-pool-key"
LOAD_BALANCER = "LoadBalancer"


class _AnyClass:
    def __repr__(self) -> str:
        return "ANY_CLASS"


#: ``wants_load_balancer`` without the class rule: for a caller that only ever sees Services the
#: rule already admitted (the lifecycle's external trigger sees what the reconciler lets through).
ANY_CLASS: Final = _AnyClass()


def join_key(namespace: str, name: str) -> str:
    """``namespace/name``: how bindings, the cache, the work queue and the CLI name a Service."""
    return f"{namespace}/{name}"


def split_key(key: str) -> tuple[str, str]:
    """``(namespace, name)`` of a ``namespace/name`` key; ``ValueError`` for anything else."""
    namespace, sep, name = key.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"{key!r} is not a NAMESPACE/NAME key")
    return namespace, name


def metadata(service: Mapping[str, Any]) -> Mapping[str, Any]:
    return service.get("metadata") or {}


def key(service: Mapping[str, Any]) -> str:
    meta = metadata(service)
    return join_key(str(meta.get("namespace")), str(meta.get("name")))


def annotations_of(service: Mapping[str, Any]) -> Mapping[str, Any]:
    return metadata(service).get("annotations") or {}


def config_text(service: Mapping[str, Any]) -> str | None:
    """The configuration annotation's value as the user wrote it (None when absent)."""
    value = annotations_of(service).get(ANNOTATION)
    return value if isinstance(value, str) else None


def is_paused(annotations: Mapping[str, Any] | None) -> bool:
    """Only the exact string "true" pauses: the historical contract, kept for compatibility."""
    return annotations is not None and annotations.get(PAUSED_ANNOTATION) == "true"


def shared_pool_key(service: Mapping[str, Any]) -> str | None:
    """A digest of the Service's sharing key (None without one): only digests are recorded, in
    the database and in EdgeLB, so neither shows another namespace's key."""
    value = annotations_of(service).get(SHARED_POOL_KEY_ANNOTATION)
    if not isinstance(value, str) or not value.strip():
        return None
    return hashlib.sha256(value.strip().encode()).hexdigest()[:32]


def service_type(service: Mapping[str, Any]) -> Any:
    return (service.get("spec") or {}).get("type")


def being_deleted(service: Mapping[str, Any]) -> bool:
    return bool(metadata(service).get("deletionTimestamp"))


def load_balancer_class(service: Mapping[str, Any]) -> str | None:
    """``spec.loadBalancerClass``; None when unset (an empty string is unset too)."""
    value = (service.get("spec") or {}).get("loadBalancerClass")
    return value if isinstance(value, str) and value else None


def claims(service: Mapping[str, Any], lb_class: str | None) -> bool:
    """The class rule: a controller of ``lb_class`` (None: no class) takes a Service of exactly
    that class (None: a Service without one)."""
    return load_balancer_class(service) == (lb_class or None)


def wants_load_balancer(service: Mapping[str, Any], lb_class: str | _AnyClass | None = ANY_CLASS) -> bool:
    """Type LoadBalancer, not being deleted and (unless ``ANY_CLASS``) of this controller's
    class ``lb_class``: dklb keeps (or makes) its load balancer."""
    if service_type(service) != LOAD_BALANCER or being_deleted(service):
        return False
    return isinstance(lb_class, _AnyClass) or claims(service, lb_class)


def has_finalizer(service: Mapping[str, Any]) -> bool:
    return FINALIZER in (metadata(service).get("finalizers") or [])


def handled(service: Mapping[str, Any], lb_class: str | _AnyClass | None) -> bool:
    """A Service dklb drives or still has to clean up: type LoadBalancer of this controller's
    class ``lb_class`` (``ANY_CLASS``: of any class), or holding our finalizer."""
    if has_finalizer(service):
        return True
    return service_type(service) == LOAD_BALANCER and (
        isinstance(lb_class, _AnyClass) or claims(service, lb_class)
    )


def foreign(service: Mapping[str, Any], lb_class: str | None) -> bool:
    """A LoadBalancer Service of another class that holds no finalizer of ours: another
    controller's, which dklb leaves entirely alone (no binding, no finalizer, no Event).

    One that holds our finalizer is still ours: Kubernetes never changes a Service's class, so it
    got the finalizer from a dklb started with another ``--load-balancer-class``; ignoring it would
    leave its pool behind and the Service undeletable.
    """
    return service_type(service) == LOAD_BALANCER and not handled(service, lb_class)


def json_pointer(*tokens: str) -> str:
    """An RFC 6901 JSON pointer: "~" is "~0" and "/" is "~1" inside a token (annotation keys hold "/")."""
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)
