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
* ``encode``/``decode``: a compact object as one ``bytes`` value (``marshal``: fast, about a KB
  for a Service, and it keeps strings interned through the round trip), instead of some hundred
  small objects that would also scatter across the allocator's arenas and pin them.

Objects are plain JSON values (dict, list, str, int, float, bool, None), as decoded from the API.
"""

from __future__ import annotations

import marshal
import sys
from typing import Any

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
