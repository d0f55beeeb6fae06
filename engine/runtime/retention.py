"""The history retention job: prunes the store's history in the background, on the controller's scheduler.

Where it sits in the data flow: beside the reconciler, like the orphan sweep. ``dklb run``
(``engine.app``) builds a ``RetentionJob`` from ``--history-max-age`` and
``--history-max-rows-per-service`` and schedules it on ``Controller.scheduler`` in an executor
of its own, so a long first pass over a big history never delays a wake-up. Each pass runs
``engine.store.pruning.HistoryPruner`` (bounded batches, each a short write transaction) while
``may_run()`` holds (this replica leads and the controller is not stopping): between two
batches it gives way, and the next pass resumes. A failure is logged and retried at the next
pass: history retention is never a reason to stop the controller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import BaseScheduler

from engine.store import Store, utcnow
from engine.store.pruning import HistoryPruner, PruneReport, Retention

log = logging.getLogger("dklb.retention")

JOB_ID = "prune-history"
EXECUTOR = "retention"


class RetentionJob:
    def __init__(
        self,
        store: Store,
        retention: Retention,
        *,
        may_run: Callable[[], bool] = lambda: True,
        on_pruned: Callable[[str, int], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.pruner = HistoryPruner(store, retention, on_batch=on_pruned)
        self.may_run = may_run
        self.clock = clock
        # The last pass's report (None before the first): what tests and the benchmark read.
        self.last: PruneReport | None = None
        self.passes = 0

    def run(self) -> PruneReport | None:
        """One pass; None when this replica may not prune now, or when it failed."""
        if not self.may_run():
            return None
        try:
            report = self.pruner.prune(now=self.clock(), keep_going=self.may_run)
        except Exception:
            log.warning("history pruning failed; retrying at the next pass", exc_info=True)
            return None
        self.last = report
        self.passes += 1
        if report.rows:
            log.info(
                "history pruned: %d rows past --history-max-age, %d beyond --history-max-rows-per-service, "
                "in %d batches (longest %.1f ms), %d pages given back%s",
                report.by_age,
                report.by_rows,
                report.batches,
                report.longest_batch * 1000,
                report.reclaimed_pages,
                "" if report.complete else "; interrupted, resumes at the next pass",
            )
        return report

    def schedule(self, scheduler: BaseScheduler, *, period: float, first_in: float | None = None) -> None:
        """Run every ``period`` seconds, in an executor of its own; first ``first_in`` seconds from
        now (default: one period)."""
        scheduler.add_executor(ThreadPoolExecutor(1), alias=EXECUTOR)
        # APScheduler reads next_run_time=None as "paused": the key is given only with a time.
        first: dict[str, Any] = {}
        if first_in is not None:
            first["next_run_time"] = utcnow() + timedelta(seconds=first_in)
        scheduler.add_job(
            self.run,
            "interval",
            seconds=max(period, 1.0),
            id=JOB_ID,
            executor=EXECUTOR,
            replace_existing=True,
            **first,
        )
