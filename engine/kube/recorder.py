"""Events recorded in the background: the reconciler's transitions never wait for them.

``KubeAdapter.event`` (called by the reconciler after a commit) hands each Event to a
``BackgroundRecorder``; one thread posts them to the API server in the order given, as
client-go's event broadcaster does. An Event is a courtesy to the user, so the queue is bounded:
when the API server falls behind by ``capacity`` Events, new ones are dropped (counted, and
logged once per burst) rather than growing memory or slowing the workers. ``flush`` waits for
what is queued (shutdown, tests); ``stop`` flushes, then ends the thread. ``capped_message``
bounds what one Event may say (the reconciler and the adapter both apply it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("dklb.kube")

# Events waiting to be posted; a burst of 1,000 new Services queues 2,000.
CAPACITY = 10_000
#: The longest Event message posted, in UTF-8 bytes: the events.k8s.io/v1 API refuses a longer
#: note (core/v1 checks nothing, but one annotation must not buy megabytes in etcd and in every
#: ``kubectl describe``). Log lines that carry such a message are cut the same way.
MAX_EVENT_MESSAGE_BYTES = 1024

_STOP = object()


def capped_message(message: str, limit: int = MAX_EVENT_MESSAGE_BYTES) -> str:
    """``message`` if it fits in ``limit`` UTF-8 bytes, else its start and how many bytes were cut."""
    data = message.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return message
    marker = f"... ({len(data):,} bytes, cut)"
    # Cut on a character boundary: a split UTF-8 sequence is dropped, not sent broken.
    return data[: max(limit - len(marker), 0)].decode("utf-8", "ignore") + marker


class BackgroundRecorder:
    def __init__(self, post: Callable[[Any], None], *, capacity: int = CAPACITY) -> None:
        self._post = post
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._burst = 0  # dropped since the last Event that fitted
        self.dropped = 0  # dropped in all

    def record(self, item: Any) -> None:
        """Queue ``item`` for ``post``; never blocks."""
        with self._lock:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="event-recorder", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                self._burst += 1
                first = self._burst == 1
            if first:
                log.warning("the API server falls behind on Events: dropping new ones until it catches up")
            return
        with self._lock:
            burst, self._burst = self._burst, 0
        if burst:
            log.warning("%d Events were dropped while the API server fell behind", burst)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued Event is posted; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._queue.all_tasks_done.wait(remaining):
                    return not self._queue.unfinished_tasks
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued (up to ``timeout``), then end the thread; later Events are ignored."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is None:
            return
        self.flush(timeout)
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            return  # the daemon thread dies with the process
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._post(item)
            except Exception:
                # ``post`` logs its own failures; this is a bug in it, and must not end the thread.
                log.exception("posting an Event failed")
            finally:
                self._queue.task_done()
