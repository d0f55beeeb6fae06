"""The runtime around the reconciler: work queue, worker threads and APScheduler.

Observations enter through ``observe``/``forget`` (the Kubernetes adapter calls them from its
watch), become keys in the ``WorkQueue``, and worker threads call ``Reconciler.reconcile``.
The seconds it returns become an APScheduler date job that puts the key back at that time:
retries, metadata polls and resyncs are all such wake-ups. Each wake-up is also persisted in
the binding's ``next_wakeup`` column, so on start every binding is rescheduled from the
database, and a periodic scan picks up wake-ups written by another process (``dklb retry``).

Workers start only once ``mark_synced`` says the Service cache holds the whole cluster: a
binding reconciled against an empty cache would look deleted. From then on the controller
tracks the first pass over every binding and key it knew of (the start-up re-verification) and
reports, once, how long it took (``on_verified``): the figure a restart is judged by. In that
pass every binding's handler runs whatever its wake-up says (``Reconciler.verify``): what
EdgeLB and Kubernetes held before the restart is not trusted until read again.

Where only keys are needed (every binding at ``mark_synced`` and ``enqueue_all``, the due ones at
each scan) only keys are read (``Store.keys``): a whole ``Binding`` carries its decoded
configuration and EdgeLB objects, tens of MB for thousands of bindings at once.

``retry_now`` runs every binding waiting on a retry at once through the same ``verify``: what
ends an EdgeLB outage (``engine.runtime.recovery``) calls it, so backoffs grown during the outage
do not outlast it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from engine.runtime.fence import NotLeader
from engine.runtime.reconciler import Reconciler
from engine.runtime.workqueue import WorkQueue
from engine.store import utcnow

log = logging.getLogger("dklb.controller")


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        *,
        workers: int = 4,
        scan_interval: float = 2.0,
        active: Callable[[], bool] = lambda: True,
        on_reconcile: Callable[[float, bool], None] | None = None,
        on_verified: Callable[[float], None] | None = None,
    ) -> None:
        self.reconciler = reconciler
        # Told (seconds, raised) after every reconcile call: the metrics hook.
        self.on_reconcile = on_reconcile
        # False while another replica leads: workers then take no key.
        self.active = active
        self.queue = WorkQueue()
        self.workers = workers
        self.scan_interval = scan_interval
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        )
        # Told the seconds once every key known at mark_synced has been reconciled once.
        self.on_verified = on_verified
        self._unverified: set[str] | None = None
        self._verify_started = 0.0
        self._verify_total = 0
        self._verify_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._synced = threading.Event()
        self._stopping = threading.Event()

    # ---- inputs ------------------------------------------------------------------------------

    def observe(self, service: dict) -> None:
        self.queue.add(self.reconciler.cache.put(service))

    def forget(self, key: str) -> None:
        self.reconciler.cache.remove(key)
        self.queue.add(key)

    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_all(self) -> None:
        """Every binding and every observed Service: on gaining leadership, or when Nodes change."""
        if not self._synced.is_set():
            return
        for key in self.reconciler.store.keys():
            self.queue.add(key)
        for key in self.reconciler.cache.keys():
            self.queue.add(key)

    def enqueue_after(self, key: str, seconds: float) -> None:
        if seconds <= 0:
            self.queue.add(key)
            return
        self.scheduler.add_job(
            self.queue.add,
            "date",
            run_date=utcnow() + timedelta(seconds=seconds),
            args=[key],
            id=f"wake:{key}",
            replace_existing=True,
        )

    def retry_now(self) -> int:
        """Run every binding waiting on a retry now, whatever its backoff says; how many.

        For when what they failed on answers again (``engine.runtime.recovery``: the end of an
        EdgeLB outage), so that a backoff grown during the outage does not outlast it. The queue
        and the workers bound how many run at once; before ``mark_synced`` (which verifies every
        binding anyway) it does nothing.
        """
        if not self.synced:
            return 0
        keys = self.reconciler.store.retrying_keys()
        self.reconciler.verify(set(keys))
        for key in keys:
            self.queue.add(key)
        return len(keys)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.scheduler.start()
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"dklb-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def mark_synced(self) -> None:
        """The cache holds every Service: reschedule every binding from the database and go."""
        if self._synced.is_set():
            return
        self._synced.set()
        keys = set(self.reconciler.store.keys()) | set(self.reconciler.cache.keys())
        self.reconciler.verify(keys)
        with self._verify_lock:
            self._unverified, self._verify_started, self._verify_total = keys, time.monotonic(), len(keys)
        self.enqueue_all()
        self._verified(None)
        self.scheduler.add_job(self._scan, "interval", seconds=self.scan_interval, id="scan-wakeups")

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads (empty before ``start``); the liveness probe checks they are alive."""
        return list(self._threads)

    @property
    def synced(self) -> bool:
        """The Service cache has been filled (``mark_synced``) and the controller is not stopping."""
        # stop() sets _synced too, to release workers waiting for it.
        return self._synced.is_set() and not self._stopping.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        self._synced.set()
        self.queue.close()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for thread in self._threads:
            thread.join(timeout=30)

    # ---- internals ---------------------------------------------------------------------------

    def _report(self, seconds: float, failed: bool) -> None:
        if self.on_reconcile is None:
            return
        try:
            self.on_reconcile(seconds, failed)
        except Exception:
            # A metrics failure must not kill the worker thread.
            log.warning("on_reconcile hook failed", exc_info=True)

    def _verified(self, key: str | None) -> None:
        with self._verify_lock:
            if self._unverified is None:
                return
            if key is not None:
                self._unverified.discard(key)
            if self._unverified:
                return
            self._unverified = None
            seconds = time.monotonic() - self._verify_started
        log.info("start-up verification done: %d keys reconciled once in %.2fs", self._verify_total, seconds)
        if self.on_verified is not None:
            self.on_verified(seconds)

    def _scan(self) -> None:
        try:
            for key in self.reconciler.store.keys(due=utcnow()):
                self.queue.add(key)
        except Exception:
            log.warning("wake-up scan failed", exc_info=True)

    def _work(self) -> None:
        self._synced.wait()
        while not self._stopping.is_set():
            if not self.active():
                self._stopping.wait(0.2)
                continue
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            after: float | None = None
            failed = False
            started = time.monotonic()
            try:
                after = self.reconciler.reconcile(key)
            except NotLeader:
                # Leadership was lost mid-way: nothing was committed; the next leader (or this
                # replica, once it leads again) reconciles every key anew.
                after = None
            except Exception:
                log.exception("reconcile of %s failed; retrying in 5s", key)
                after = 5.0
                failed = True
            finally:
                self.queue.done(key)
            self._report(time.monotonic() - started, failed)
            if not failed:
                self._verified(key)
            if self._stopping.is_set():
                return
            if after is None:
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(f"wake:{key}")
            else:
                self.enqueue_after(key, after)
