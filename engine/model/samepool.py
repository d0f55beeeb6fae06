"""``same_pool``: would EdgeLB run the same thing for two pools? Compared after normalization.

Where it sits in the data flow: Provisioning and Deleting (``states.pool``) compare the pool a
GET returned with the composition they would PUT, and write only when they differ; Ready
compares what it expects with what EdgeLB has. Re-exported by ``engine.model.translation``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from engine.edgelb.schema import normalize_pool

Pool = dict[str, Any]


def same_pool(a: Pool, b: Pool) -> bool:
    """True when EdgeLB would run the same thing for both: compared after normalizing defaults/order."""
    key_a, key_b = _text(a), _text(b)
    if key_a is not None and key_a == key_b:
        # The same JSON value: equal after any normalization, no need to run it.
        return True
    return _normalized(a, key_a) == _normalized(b, key_b)


# Normalizing a pool (two decode/encode rounds through EdgeLB's schema) cost several ms of CPU, and the
# Services joining one shared pool each compare the same GET answer with the same composition: the
# normalized forms are remembered by the pool's JSON text (canonical: sorted keys). Only
# ``same_pool`` reads them, and only compares them, so the shared dicts are never mutated. A memo,
# not a state: forgetting any entry changes no answer.
_NORMALIZED_CAPACITY = 256
_normalized_memo: OrderedDict[str, Pool] = OrderedDict()
_normalized_lock = threading.Lock()


def _text(pool: Pool) -> str | None:
    """The canonical JSON text of a pool (a JSON value: lists, never tuples), or None if it has none."""
    try:
        return json.dumps(pool, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None


def _normalized(pool: Pool, key: str | None) -> Pool:
    if key is None:
        return normalize_pool(pool)
    with _normalized_lock:
        found = _normalized_memo.get(key)
        if found is not None:
            _normalized_memo.move_to_end(key)
            return found
    result = normalize_pool(pool)
    with _normalized_lock:
        _normalized_memo[key] = result
        while len(_normalized_memo) > _NORMALIZED_CAPACITY:
            _normalized_memo.popitem(last=False)
    return result
