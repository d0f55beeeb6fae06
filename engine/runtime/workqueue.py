"""The work queue between observations and workers: keys, deduplicated, one worker per key.

Watch events, due wake-ups and ``dklb retry`` add keys here; worker threads take them and call
the reconciler. A key is never processed by two workers at once: a key added while it is being
processed is marked dirty and handed out again once the worker is done, so no event is lost and
per-object work stays sequential while different objects proceed in parallel (the semantics of
client-go's workqueue).
"""

from __future__ import annotations

import threading
from collections import deque


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._closed = False

    def add(self, key: str) -> None:
        with self._cond:
            if self._closed or key in self._queued:
                return
            if key in self._processing:
                self._dirty.add(key)
                return
            self._queue.append(key)
            self._queued.add(key)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> str | None:
        """The next key, or None when closed (or on timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue or self._closed, timeout=timeout):
                return None
            if self._closed:
                return None
            key = self._queue.popleft()
            self._queued.discard(key)
            self._processing.add(key)
            return key

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if not self._closed and key not in self._queued:
                    self._queue.append(key)
                    self._queued.add(key)
                    self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._processing

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)
