"""The EdgeLB port with metadata reads shared per pool for a moment.

Where it sits in the data flow: between the state handlers (and the pool sweep) and the fenced
EdgeLB client (``dklb run`` wraps ``FencedEdgeLB`` in it). Bindings of one shared pool poll
``GET /v2/pools/{name}/metadata`` each on their own (``states/awaiting_metadata.py``, and
``states/ready.py`` once woken): within ``ttl`` seconds they share one read of the POOL,
whatever the number of bindings on it, and concurrent misses on one pool make one request.
Any write to a pool through this port forgets its metadata at once, so a binding that just
wrote its objects (Provisioning -> AwaitingMetadata) reads what EdgeLB says after that write.
Only answers are shared; a failure (504 "not yet", 404) is not kept, the next poll asks again.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.edgelb import stream
from engine.edgelb.port import EdgeLB, Pool

# Long enough for the bindings of one pool polling in a burst to share a read, short enough that
# a status is never older than a poll interval would make it anyway (AwaitingMetadata polls
# from 1 s up).
DEFAULT_TTL = 2.0
# Expired reads are dropped when a new one is kept and more than this many are held.
PRUNE_ABOVE = 64


class SharedMetadata:
    def __init__(
        self, edgelb: EdgeLB, *, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic
    ):
        self._edgelb = edgelb
        self.ttl = ttl
        self.clock = clock
        self._guard = threading.Lock()
        # pool -> (read at, generation of the pool when read, metadata)
        self._kept: dict[str, tuple[float, int, dict[str, Any]]] = {}
        self._generation: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}

    # ---- reads -------------------------------------------------------------------------------

    def list_pools(self) -> list[Pool]:
        return self._edgelb.list_pools()

    def iter_pools(self) -> Iterator[Pool]:
        return stream.pools(self._edgelb)

    def get_pool(self, name: str) -> Pool:
        return self._edgelb.get_pool(name)

    def get_metadata(self, name: str) -> dict[str, Any]:
        fresh = self._fresh(name)
        if fresh is not None:
            return fresh
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            # Another reader of this pool may have fetched it while this one waited.
            fresh = self._fresh(name)
            if fresh is not None:
                return fresh
            with self._guard:
                generation = self._generation.get(name, 0)
            metadata = self._edgelb.get_metadata(name)
            with self._guard:
                # A write to the pool during the read: this answer may predate it, keep nothing.
                if self._generation.get(name, 0) == generation:
                    self._keep(name, generation, metadata)
            return copy.deepcopy(metadata)

    def forget(self, name: str) -> None:
        """Drop what is kept for ``name``: the next read asks EdgeLB."""
        with self._guard:
            self._kept.pop(name, None)
            self._generation[name] = self._generation.get(name, 0) + 1

    def _keep(self, name: str, generation: int, metadata: dict[str, Any]) -> None:
        now = self.clock()
        if len(self._kept) >= PRUNE_ABOVE:
            # Kept reads nobody asks for again must not pile up: one per pool is thousands.
            for old in [n for n, (at, _, _) in self._kept.items() if now - at > self.ttl]:
                del self._kept[old]
        self._kept[name] = (now, generation, metadata)

    def _fresh(self, name: str) -> dict[str, Any] | None:
        with self._guard:
            kept = self._kept.get(name)
            if kept is None:
                return None
            at, _, metadata = kept
            if self.clock() - at > self.ttl:
                del self._kept[name]
                return None
        return copy.deepcopy(metadata)

    # ---- writes: each forgets the pool's metadata, before and after ---------------------------

    def create_pool(self, pool: Pool) -> Pool:
        with self._writing(str(pool.get("name"))):
            return self._edgelb.create_pool(pool)

    def update_pool(self, pool: Pool) -> Pool:
        with self._writing(str(pool.get("name"))):
            return self._edgelb.update_pool(pool)

    def delete_pool(self, name: str) -> None:
        with self._writing(name):
            self._edgelb.delete_pool(name)

    @contextlib.contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        self.forget(name)
        try:
            yield
        finally:
            self.forget(name)
