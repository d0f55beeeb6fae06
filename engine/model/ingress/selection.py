"""Which Ingresses are dklb's: the first question asked of an Ingress the watcher delivers.

An Ingress arrives from the watcher with the IngressClasses it knows; ``is_ours`` decides, as
Kubernetes documents it: the deprecated ``kubernetes.io/ingress.class`` annotation, when present,
takes precedence over ``spec.ingressClassName``; an Ingress with neither is claimed only when one
of our IngressClasses is marked the default. What is not ours is never parsed nor touched; an
Ingress that stops being ours is deleted from EdgeLB by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: ``spec.controller`` of our IngressClasses (the ``--ingress-controller`` flag's default).
CONTROLLER = "kubernetes.dcos.io/dklb"
#: The deprecated class annotation and the value the Go dklb answered to.
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
LEGACY_CLASS = "edgelb"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


def is_ours(
    ingress: Mapping[str, Any],
    *,
    classes: Mapping[str, Mapping[str, Any]],
    controller: str = CONTROLLER,
) -> bool:
    """Whether dklb serves ``ingress``; ``classes`` maps IngressClass names to the objects."""
    annotations = _metadata(ingress).get("annotations") or {}
    if CLASS_ANNOTATION in annotations:
        return bool(annotations[CLASS_ANNOTATION] == LEGACY_CLASS)
    class_name = (ingress.get("spec") or {}).get("ingressClassName")
    if class_name:
        ingress_class = classes.get(class_name)
        return ingress_class is not None and _controller(ingress_class) == controller
    return any(
        _controller(c) == controller and _is_default(c) for c in classes.values() if isinstance(c, Mapping)
    )


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _controller(ingress_class: Mapping[str, Any]) -> Any:
    return (ingress_class.get("spec") or {}).get("controller")


def _is_default(ingress_class: Mapping[str, Any]) -> bool:
    # Kubernetes' admission plugin reads exactly "true" (case-insensitively in some versions; the
    # documented value is "true", and a stricter reading never claims what another controller might).
    annotations = _metadata(ingress_class).get("annotations") or {}
    return annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"
