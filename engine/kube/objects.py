"""Kubernetes objects as dklb keeps them in memory: compact, and encoded.

dklb holds every Service it watches twice: the watcher's copy of what it last saw
(``engine.kube.watch.Watcher.known``, for re-lists and resyncs) and the reconciler's
``ServiceCache`` (what handlers read). At thousands of Services these copies would be most of
the controller's memory (a Service as decoded from the API is some 11 KB of Python objects), so
both keep what comes from here:

* ``compact(obj)``: the same JSON object without ``metadata.managedFields`` (the API server's
  record of which client wrote which field: half of a Service's size, and nothing in dklb reads
  it), its keys and short strings interned, so that the objects decoded from thousands of
  Services share one ``"metadata"``, ``"LoadBalancer"`` or ``"TCP"`` instead of each holding
  its own;
* ``slim_service(obj)``: a Service reduced further, to what dklb reads of it (``SERVICE_FIELDS``:
  what the states, guards, fingerprint, translation, orphan sweep and the Kubernetes adapter's
  patches and Events read), interned like ``compact``. What it drops (the selector, cluster IPs,
  labels, other tools' annotations such as kubectl's last-applied-configuration, a full copy of
  the object) is what grows with the cluster's users, not with dklb's needs;
* ``encode``/``decode``: a compact object as one ``bytes`` value (``marshal``: fast, about a KB
  for a Service, and it keeps strings interned through the round trip), instead of some hundred
  small objects that would also scatter across the allocator's arenas and pin them.

Objects are plain JSON values (dict, list, str, int, float, bool, None), as decoded from the API.
"""

from __future__ import annotations

import marshal
import sys
from typing import Any

from engine.model.services import FINALIZER

Object = dict[str, Any]

# Strings up to this length are interned: enum-like values ("TCP", "LoadBalancer", "v1"), a
# namespace, an address. Longer ones (uids, annotations) are mostly unique: interning gains nothing.
SHORT = 16


def compact(obj: Object) -> Object:
    """A copy of ``obj`` without ``metadata.managedFields``, keys and short strings interned."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return _interned(obj)


#: What ``slim_service`` keeps, by section: the top-level keys, and for each section the keys of it
#: kept whole. Every reader of a cached or watched Service goes through
#: ``engine.model.services``, ``states/observe.fingerprint``, ``engine.model.translation`` (ports)
#: or ``engine.kube.adapter`` (uid, resourceVersion and the finalizers list in JSON-patch tests;
#: kind, apiVersion and resourceVersion in an Event's involvedObject); a field read anywhere
#: else must be added here.
SERVICE_FIELDS: dict[str, frozenset[str]] = {
    "metadata": frozenset(
        {
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "finalizers",
            "annotations",
        }
    ),
    "spec": frozenset({"type", "ports", "loadBalancerClass"}),
    "status": frozenset({"loadBalancer"}),
}
_TOP = frozenset({"apiVersion", "kind", *SERVICE_FIELDS})

#: Annotations kept: dklb's own (the configuration, the pause switch, the shared-pool key, any
#: later one), all named under the finalizer's prefix.
DKLB_ANNOTATIONS = FINALIZER


def _ours(annotation: Any) -> bool:
    return isinstance(annotation, str) and annotation.startswith(DKLB_ANNOTATIONS)


def slim_service(obj: Object) -> Object:
    """A copy of the Service ``obj`` with only ``SERVICE_FIELDS`` (and dklb's annotations), interned.

    ``annotations`` stays (empty if need be) when the Service has any: the finalizer patch adds
    dklb's annotation into the map when it exists and creates the map otherwise. Idempotent, so
    an object already slim may be passed again.
    """
    slim: Object = {}
    for top, value in obj.items():
        if top not in _TOP:
            continue
        fields = SERVICE_FIELDS.get(top)
        if fields is not None and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k in fields}
            annotations = value.get("annotations")
            if top == "metadata" and isinstance(annotations, dict):
                value["annotations"] = {k: v for k, v in annotations.items() if _ours(k)}
        slim[top] = value
    result: Object = _interned(slim)
    return result


def _interned(value: Any) -> Any:
    if isinstance(value, dict):
        return {sys.intern(k) if type(k) is str else k: _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    if type(value) is str and len(value) <= SHORT:
        return sys.intern(value)
    return value


def encode(obj: Object) -> bytes:
    """``obj`` (compact) as bytes; ``decode`` gives back an equal object."""
    return marshal.dumps(obj)


def decode(blob: bytes) -> Object:
    """A fresh object from ``encode``'s bytes (a new dict on every call)."""
    obj: Object = marshal.loads(blob)
    return obj
