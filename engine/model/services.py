"""Reading a Service: its key, its annotations, and whether dklb handles it (pure).

Everything that looks at a Service reads it through here: the watch and the Service cache (its
key), the reconciler's external triggers (``states/observe.py``: does dklb still want a load
balancer for it), the admission webhook, the orphan sweeper (is an object's owner still
handled) and the Kubernetes adapter (the annotation and the finalizer it writes). A Service is
the JSON dict the API server sends; nothing here assumes more of its shape than ``dict.get``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The configuration object (``engine.model.config`` parses its value).
ANNOTATION = "kubernetes.dcos.io/dklb-config"
#: ``"true"`` (exactly that string, the Go dklb's contract) pauses a Service.
PAUSED_ANNOTATION = "kubernetes.dcos.io/dklb-paused"
#: Held on every Service dklb handles until its load balancer is cleaned up.
FINALIZER = "kubernetes.dcos.io/dklb"
LOAD_BALANCER = "LoadBalancer"


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


def service_type(service: Mapping[str, Any]) -> Any:
    return (service.get("spec") or {}).get("type")


def being_deleted(service: Mapping[str, Any]) -> bool:
    return bool(metadata(service).get("deletionTimestamp"))


def wants_load_balancer(service: Mapping[str, Any]) -> bool:
    """Type LoadBalancer and not being deleted: dklb keeps (or makes) its load balancer."""
    return service_type(service) == LOAD_BALANCER and not being_deleted(service)


def has_finalizer(service: Mapping[str, Any]) -> bool:
    return FINALIZER in (metadata(service).get("finalizers") or [])


def handled(service: Mapping[str, Any]) -> bool:
    """A Service dklb drives or still has to clean up: type LoadBalancer, or holding our finalizer."""
    return service_type(service) == LOAD_BALANCER or has_finalizer(service)


def json_pointer(*tokens: str) -> str:
    """An RFC 6901 JSON pointer: "~" is "~0" and "/" is "~1" inside a token (annotation keys hold "/")."""
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)
