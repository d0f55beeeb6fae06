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
pass one store query and the Service cache judge every key (``_to_reconcile``): a key is
reconciled when its Service fires an external trigger (deleted, replaced, edited while dklb was
down), when its binding is in a state with work to do (its handler then runs whatever its
wake-up says, ``Reconciler.verify``) or its wake-up is due. The settled rest costs no per-key
read and no wake-up job: it is compared with ONE pool listing (the first ``PoolSweep.sweep``),
and only those whose pool differs, or whose Service shows no address, run their handler; their
wake-ups are in the database, where the periodic scan finds them. What EdgeLB and Kubernetes
held before the restart is not trusted until read again; reading it is one request, not one
per binding.

While leading, the pool sweep runs every ``sweep_interval`` (``--resync-period``) and the
metadata refresh every ``metadata_interval`` seconds (each pool is read when due, see
``engine.runtime.poolsweep``), both on a thread of their own; the keys they name are woken
(``wake``). A settled binding has nothing else scheduled.

Where only keys are needed (the due ones at each scan) only keys are read (``Store.keys``), and
the start-up pass reads bindings without their configuration and objects
(``Store.brief_bindings``): a whole ``Binding`` carries its decoded configuration and EdgeLB
objects, tens of MB for thousands of bindings at once.

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
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from engine.edgelb.errors import EdgeLBError
from engine.runtime.fence import NotLeader
from engine.runtime.poolsweep import PoolSweep
from engine.runtime.reconciler import Reconciler
from engine.runtime.workqueue import WorkQueue
from engine.store import Fenced, utcnow

log = logging.getLogger("dklb.controller")

# Stands in the start-up verification's set of keys for the first pool sweep: verification is not
# done before that sweep has compared every settled binding (and woken those that differ).
_STARTUP_SWEEP = "\0startup-sweep"
# Seconds beyond which a wake-up is left to the scan of the database rather than scheduled as an
# APScheduler job: one job per settled binding cost CPU in every burst and ~0.85 KB per Service
# for as long as it stays settled. Every such wake-up is a committed ``next_wakeup`` (only a
# failed reconcile's 5 s retry is not, far below this).
SCHEDULED_HORIZON = 3600.0


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
        sweep: PoolSweep | None = None,
        sweep_interval: float = 300.0,
        metadata_interval: float = 10.0,
        on_sweep: Callable[[bool, int], None] | None = None,
        after_sweep: Callable[[list[Any] | None], object] | None = None,
    ) -> None:
        self.reconciler = reconciler
        # Compares every settled binding with one pool listing per ``sweep_interval`` and reads
        # due pools' metadata every ``metadata_interval``; None: settled bindings are verified
        # one by one at start (their handlers) and otherwise only at their own wake-ups.
        self.sweep = sweep
        self.sweep_interval = sweep_interval
        self.metadata_interval = metadata_interval
        self._startup_sweep_pending = sweep is not None
        # Told (listed, bindings woken) after every pool sweep: the metrics hook.
        self.on_sweep = on_sweep
        # Given the pools each periodic sweep listed (None: it listed none), on the sweep's
        # thread once its bindings are woken: the orphan sweep, which then lists nothing itself.
        self.after_sweep = after_sweep
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
        if sweep is not None:
            # Its own thread: a sweep waiting on EdgeLB must not delay the wake-up jobs.
            self.scheduler.add_executor(ThreadPoolExecutor(1), alias="sweep")
        self._threads: list[threading.Thread] = []
        self._synced = threading.Event()
        self._stopping = threading.Event()

    # ---- inputs ------------------------------------------------------------------------------

    def observe(self, service: dict) -> None:
        # A version the cache already holds brings nothing to reconcile: the watch's periodic
        # redelivery of every Service, or the event of a write whose reconcile saw its result.
        key = self.reconciler.cache.put_new(service)
        # Before ``mark_synced`` the Service only fills the cache: the start-up pass judges every
        # cached key then (the put comes before that check, so no key slips between the two).
        if key is not None and self._synced.is_set():
            self.queue.add(key)

    def forget(self, key: str) -> None:
        self.reconciler.cache.remove(key)
        self.queue.add(key)

    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_all(self) -> None:
        """Every binding and every observed Service that needs a reconcile (``_to_reconcile``):
        on gaining leadership, or when Nodes change."""
        if not self._synced.is_set():
            return
        for key in self._to_reconcile():
            self.queue.add(key)
        self._sweep_on_takeover()

    def _to_reconcile(self) -> list[str]:
        """The keys of every binding and observed Service, less those a reconcile would leave as
        they are, judged in one store query: with the pool sweep, a binding in a settled state
        (or one with no handler) on which the Service cache fires no trigger and whose wake-up
        is not due (``Reconciler.quiet``). The sweep verifies those against EdgeLB and the
        wake-up scan picks up their wake-ups from the database, so at 5,000 Ready bindings a
        restart reconciles only what changed while dklb was down, not every key. Without the
        sweep every key is returned: a settled binding's handler is its only verification."""
        reconciler = self.reconciler
        if self.sweep is None:
            return list(dict.fromkeys([*reconciler.store.keys(), *reconciler.cache.keys()]))
        # The states whose bindings only their triggers, their wake-up or the sweep move on.
        still = set(self.sweep.states) | {
            name for name, spec in reconciler.lifecycle.states.items() if spec.handler is None
        }
        nodes = reconciler.node_addresses()
        keys: list[str] = []
        known: set[str] = set()
        for binding in reconciler.store.brief_bindings():
            key = binding.key
            known.add(key)
            if binding.state not in still or not reconciler.quiet(key, binding, nodes=nodes):
                keys.append(key)
        keys.extend(
            key
            for key in reconciler.cache.keys()
            if key not in known and not reconciler.quiet(key, None, nodes=nodes)
        )
        return keys

    def _sweep_on_takeover(self) -> None:
        if self.sweep is not None and not self._startup_sweep_pending and self.scheduler.running:
            # Leadership regained: a settled binding has nothing scheduled, and what changed in
            # EdgeLB while another replica led is seen by a listing now, not a period later.
            self.scheduler.add_job(
                self._takeover_sweep,
                "date",
                run_date=utcnow(),
                id="sweep-now",
                executor="sweep",
                replace_existing=True,
            )

    def wake(self, keys: list[str] | set[str]) -> None:
        """Run the handler of each of ``keys`` now, whatever its wake-up says (the pool sweep's
        verdict); during the start-up verification, it waits for them too."""
        if not keys:
            return
        woken = set(keys)
        with self._verify_lock:
            if self._unverified is not None:
                self._unverified |= woken
        self.reconciler.verify(woken)
        for key in woken:
            self.queue.add(key)

    def enqueue_after(self, key: str, seconds: float) -> None:
        """Put ``key`` back in ``seconds``. A wake-up further than ``SCHEDULED_HORIZON`` (a
        settled binding's day-long backstop) gets no APScheduler job: it is the binding's
        ``next_wakeup`` in the database, which ``_scan`` puts back once due."""
        if seconds <= 0:
            self.queue.add(key)
            return
        if seconds > SCHEDULED_HORIZON:
            # A sooner job left from before (a poll) would only wake it for nothing.
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(f"wake:{key}")
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
        swept: set[str] = set()
        if self.sweep is not None:
            # Settled bindings are compared with one pool listing (the first sweep) instead of
            # each handler reading its pool; every key is still reconciled once, so what the
            # Service cache says (changed, deleted, replaced while dklb was down) fires as always.
            swept = set(self.reconciler.store.keys_in(self.sweep.states))
        self.reconciler.verify(keys - swept)
        # Only these are reconciled; the settled rest is the first sweep's (``_to_reconcile``).
        queued = self._to_reconcile()
        unverified = set(queued) | ({_STARTUP_SWEEP} if self.sweep is not None else set())
        with self._verify_lock:
            self._unverified, self._verify_started, self._verify_total = (
                unverified,
                time.monotonic(),
                len(queued),
            )
        for key in queued:
            self.queue.add(key)
        self._verified(None)
        self.scheduler.add_job(self._scan, "interval", seconds=self.scan_interval, id="scan-wakeups")
        if self.sweep is not None:
            self.scheduler.add_job(
                self._sweep, "date", run_date=utcnow(), id="sweep-startup", executor="sweep"
            )
            self.scheduler.add_job(
                self._sweep,
                "interval",
                seconds=self.sweep_interval,
                id="sweep-pools",
                executor="sweep",
            )
            self.scheduler.add_job(
                self._refresh_metadata,
                "interval",
                seconds=self.metadata_interval,
                id="sweep-metadata",
                executor="sweep",
            )

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

    @staticmethod
    def _tell(hook: Callable[..., None] | None, *args: object) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            # A metrics failure must not kill the worker or sweep thread.
            log.warning("metrics hook %s failed", getattr(hook, "__name__", hook), exc_info=True)

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

    def _takeover_sweep(self) -> None:
        # Not followed by the orphan sweep: that one keeps a whole period between its runs.
        self._sweep(periodic=False)

    def _sweep(self, *, periodic: bool = True) -> None:
        """One pool sweep (the first one is the start-up verification's), leader only.
        ``periodic``: the one of every period (not the start-up or takeover one), which the
        orphan sweep (``after_sweep``) follows, so that it keeps its own period."""
        sweep = self.sweep
        if sweep is None or not self.synced or not self.active():
            if periodic:
                # The orphan sweep may not run now either: told, it forgets its candidates (a
                # replica that stops leading must see every orphan twice again after a takeover).
                self._after_sweep(None)
            return
        startup = self._startup_sweep_pending
        try:
            woken = sweep.sweep(startup=startup)
        except EdgeLBError as exc:
            sweep.failures += 1
            self._tell(self.on_sweep, False, 0)
            if periodic and not startup:
                # The orphan sweep tries its own listing (and says why it failed, if it does).
                self._after_sweep(None)
            if not startup:
                # Nothing is judged on a listing that failed: the next period lists again.
                log.warning(
                    "pool sweep: listing the EdgeLB pools failed (%s); next attempt in %.0fs",
                    exc,
                    self.sweep_interval,
                )
                return
            log.warning(
                "start-up pool sweep: listing the EdgeLB pools failed (%s); verifying each binding", exc
            )
            woken = self.reconciler.store.keys_in(sweep.states)
        except Exception:
            log.exception("pool sweep failed")
            return
        else:
            self._tell(self.on_sweep, True, len(woken))
        self.wake(woken)
        if startup:
            self._startup_sweep_pending = False
            self._verified(_STARTUP_SWEEP)
        listing = sweep.take_listing()
        if periodic and not startup:
            self._after_sweep(listing)

    def _after_sweep(self, listing: list[Any] | None) -> None:
        if self.after_sweep is None:
            return
        try:
            self.after_sweep(listing)
        except Exception:
            log.exception("what follows the pool sweep failed")

    def _refresh_metadata(self) -> None:
        sweep = self.sweep
        if sweep is None or self._startup_sweep_pending or not self.synced or not self.active():
            return
        try:
            self.wake(sweep.refresh_metadata())
        except Exception:
            log.exception("metadata refresh failed")

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
            except (NotLeader, Fenced) as exc:
                # Leadership was lost mid-way (the Lease, or the database's term when another
                # replica claimed first): nothing was committed; the next leader (or this replica,
                # once it leads again) reconciles every key anew.
                log.info("reconcile of %s dropped: %s", key, exc)
                after = None
            except Exception:
                log.exception("reconcile of %s failed; retrying in 5s", key)
                after = 5.0
                failed = True
            finally:
                self.queue.done(key)
            self._tell(self.on_reconcile, time.monotonic() - started, failed)
            if not failed:
                self._verified(key)
            if self._stopping.is_set():
                return
            if after is None:
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(f"wake:{key}")
            else:
                self.enqueue_after(key, after)
