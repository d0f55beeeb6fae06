"""History retention: delete what is past its age, and each Service's rows beyond its cap, in batches.

Where it sits in the data flow: every transition appends a history row (``Store.commit``), and
nothing else deletes one, so without this a busy or hostile cluster fills the volume (S4 of the
security review: a 256 KiB annotation edited in a loop). ``engine.runtime.retention`` runs
``HistoryPruner.prune`` on the controller's scheduler; ``dklb history`` reads the traces it
leaves in ``history_pruned`` (``Store.pruned``).

Two rules, both by the order ``dklb history`` shows (``at``, then ``id``):

* age: every row older than ``now - max_age`` goes, bindings removed long ago included;
* rows per Service: each Service keeps its newest ``max_rows_per_service`` rows. Only Services
  with rows written since the previous pass are looked at (every one at the first pass).

Each batch is at most ``batch`` rows: the ids are chosen by a read (no lock), then deleted by id in
one short write transaction, which also updates the trace. The write lock is so held for a few
milliseconds at a time, and workers' commits queue behind one batch at most, never behind a
pruning of a million rows. Between batches ``keep_going`` is asked (the controller stops, or
leadership moves): the next pass picks up where this one stopped.

Space: SQLite reuses the pages deleted rows leave (its free list), so a pruned history stops the
file from growing. A database created with ``auto_vacuum=INCREMENTAL`` (``migrations/env.py``
sets it for every new SQLite file) also gives them back to the file system, a bounded number of
pages per transaction (``PRAGMA incremental_vacuum``). Older files (``auto_vacuum=NONE``) are
converted once when opened for writing (``migrate.incremental_vacuum``). Other databases
(PostgreSQL) reclaim by their own vacuum; the statements here are plain SQLAlchemy Core.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, tuple_, update

from engine.store.schema import HISTORY, HISTORY_PRUNED
from engine.store.store import Store

DEFAULT_MAX_AGE = 30 * 86400.0
DEFAULT_MAX_ROWS_PER_SERVICE = 200
#: Rows per write transaction. The rows of one Service lie scattered over the table and its four
#: indexes: 100 of them took a median 10 ms (99th percentile 53 ms) on a loaded 2-core machine,
#: 500 a median 57 ms and up to 900 ms on a million rows (bench/history_bench.py).
BATCH = 100
#: Pages (4 KiB each) given back per write transaction by the incremental vacuum: 256 took a
#: median 5 ms, 2000 up to 750 ms.
RECLAIM_PAGES = 256
#: The trace key of the age rule (a Service's key names its row cap's trace).
EVERY_SERVICE = ("", "")
# PRAGMA auto_vacuum's value for INCREMENTAL.
_INCREMENTAL = 2


@dataclass(frozen=True)
class Retention:
    """How much history to keep (``dklb run --history-max-age / --history-max-rows-per-service``)."""

    #: Seconds; 0 keeps rows of any age.
    max_age: float = DEFAULT_MAX_AGE
    #: Rows kept per Service (namespace/name); 0: no cap.
    max_rows_per_service: int = DEFAULT_MAX_ROWS_PER_SERVICE
    batch: int = BATCH

    def __post_init__(self) -> None:
        if self.max_age < 0:
            raise ValueError(f"history max age {self.max_age!r} must not be negative")
        if self.max_rows_per_service < 0:
            raise ValueError(
                f"history max rows per Service {self.max_rows_per_service!r} must not be negative"
            )
        if self.batch < 1:
            raise ValueError(f"history pruning batch {self.batch!r} must be at least 1")

    @property
    def enabled(self) -> bool:
        return bool(self.max_age or self.max_rows_per_service)


@dataclass
class PruneReport:
    """What one pass did."""

    by_age: int = 0
    by_rows: int = 0
    batches: int = 0
    #: The longest a single deleting batch held the write transaction, in seconds.
    longest_batch: float = 0.0
    #: How long each deleting batch held it (the benchmark's percentiles).
    batch_seconds: list[float] = field(default_factory=list)
    #: The longest a single incremental vacuum step held it, in seconds.
    longest_reclaim: float = 0.0
    reclaimed_pages: int = 0
    #: False when ``keep_going`` stopped the pass before it was done.
    complete: bool = True

    @property
    def rows(self) -> int:
        return self.by_age + self.by_rows


class HistoryPruner:
    """Applies a ``Retention`` to one store, pass after pass (``prune``); not thread-safe: one
    job runs it (the scheduler's ``max_instances=1``)."""

    def __init__(
        self, store: Store, retention: Retention, *, on_batch: Callable[[str, int], None] | None = None
    ) -> None:
        self.store = store
        self.retention = retention
        # Told (rule, rows) after every deleting batch: the metrics hook.
        self.on_batch = on_batch
        # Every row above this id was written after the previous pass looked: the Services the
        # row cap must look at. 0: look at every Service (the first pass).
        self._seen_id = 0

    def prune(self, *, now: datetime, keep_going: Callable[[], bool] = lambda: True) -> PruneReport:
        report = PruneReport()
        r = self.retention
        if r.max_age:
            self._by_age(now - timedelta(seconds=r.max_age), now, report, keep_going)
        if r.max_rows_per_service and report.complete:
            self._by_rows(r.max_rows_per_service, now, report, keep_going)
        if report.complete:
            # Also after a pass that deleted nothing: the previous one may have stopped half-way.
            self._reclaim(report, keep_going)
        return report

    # ---- the rules -----------------------------------------------------------------------------

    def _by_age(
        self, cutoff: datetime, now: datetime, report: PruneReport, keep_going: Callable[[], bool]
    ) -> None:
        expired = select(HISTORY.c.id).where(HISTORY.c.at < cutoff).order_by(HISTORY.c.at)
        expired = expired.limit(self.retention.batch)
        while True:
            if not keep_going():
                report.complete = False
                return
            with self.store._read() as conn:
                ids = list(conn.execute(expired).scalars())
            if not ids:
                return
            deleted = self._delete(ids, EVERY_SERVICE, cutoff, now, report)
            report.by_age += deleted
            self._told("max-age", deleted)
            if len(ids) < self.retention.batch:
                return

    def _by_rows(self, cap: int, now: datetime, report: PruneReport, keep_going: Callable[[], bool]) -> None:
        with self.store._read() as conn:
            top = conn.execute(select(func.max(HISTORY.c.id))).scalar() or 0
        services = select(HISTORY.c.namespace, HISTORY.c.name).distinct()
        if self._seen_id:
            # The rowid range of the rows written since: no walk over the whole history.
            services = services.where(HISTORY.c.id > self._seen_id, HISTORY.c.id <= top)
        # Only those of them now over the cap, in one read: counted on the (namespace, name, at)
        # index. One query per Service written to (a thousand in a burst, all under the cap)
        # cost more CPU than the burst's own commits.
        key = tuple_(HISTORY.c.namespace, HISTORY.c.name)
        over = (
            select(HISTORY.c.namespace, HISTORY.c.name)
            .where(key.in_(services))
            .group_by(HISTORY.c.namespace, HISTORY.c.name)
            .having(func.count() > cap)
        )
        with self.store._read() as conn:
            keys = [(str(ns), str(name)) for ns, name in conn.execute(over)]
        for namespace, name in keys:
            # The oldest row kept, then the ones to delete, newest first (what ``history`` shows).
            beyond = (
                select(HISTORY.c.at, HISTORY.c.id)
                .where(HISTORY.c.namespace == namespace, HISTORY.c.name == name)
                .order_by(HISTORY.c.at.desc(), HISTORY.c.id.desc())
                .offset(cap - 1)
                .limit(self.retention.batch + 1)
            )
            while True:
                if not keep_going():
                    report.complete = False
                    return  # the Services not looked at yet stay new: _seen_id is not advanced
                with self.store._read() as conn:
                    rows = conn.execute(beyond).all()
                if len(rows) <= 1:
                    break
                deleted = self._delete([r.id for r in rows[1:]], (namespace, name), rows[0].at, now, report)
                report.by_rows += deleted
                self._told("max-rows-per-service", deleted)
                if len(rows) <= self.retention.batch:
                    break
        self._seen_id = top

    def _told(self, rule: str, rows: int) -> None:
        if self.on_batch is not None and rows:
            self.on_batch(rule, rows)

    # ---- writes --------------------------------------------------------------------------------

    def _delete(
        self, ids: list[int], trace: tuple[str, str], before: datetime, now: datetime, report: PruneReport
    ) -> int:
        """Delete ``ids`` and extend the trace of ``trace``, in one short write transaction."""
        started = time.perf_counter()
        with self.store._write() as conn:
            deleted = int(conn.execute(delete(HISTORY).where(HISTORY.c.id.in_(ids))).rowcount or 0)
            if deleted:
                _extend_trace(conn, trace, before, deleted, now)
        self._timed(report, time.perf_counter() - started)
        return deleted

    def _reclaim(self, report: PruneReport, keep_going: Callable[[], bool]) -> None:
        """Give freed pages back to the file system, if the SQLite file was made to allow it."""
        if self.store.engine.dialect.name != "sqlite":
            return
        with self.store._read() as conn:
            if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != _INCREMENTAL:
                return
        while keep_going():
            started = time.perf_counter()
            # The writers' queue, then SQLite's own write transaction around the one statement.
            with self.store._writer, self.store.engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                free = int(raw.execute("PRAGMA freelist_count").fetchone()[0])
                if free:
                    # Each step of this statement frees one page: executescript steps it to the
                    # end (execute would stop after the first), in autocommit.
                    raw.executescript(f"PRAGMA incremental_vacuum({min(free, RECLAIM_PAGES)})")
            if not free:
                return
            report.longest_reclaim = max(report.longest_reclaim, time.perf_counter() - started)
            report.reclaimed_pages += min(free, RECLAIM_PAGES)

    @staticmethod
    def _timed(report: PruneReport, seconds: float) -> None:
        report.batches += 1
        report.longest_batch = max(report.longest_batch, seconds)
        report.batch_seconds.append(seconds)


def _extend_trace(
    conn: Connection, trace: tuple[str, str], before: datetime, rows: int, now: datetime
) -> None:
    """Add ``rows`` to the trace of ``trace``, whose ``before`` only ever moves forward."""
    t = HISTORY_PRUNED
    namespace, name = trace
    where = (t.c.namespace == namespace, t.c.name == name)
    found = conn.execute(select(t.c.before).where(*where)).first()
    if found is None:
        values: dict[str, Any] = {"namespace": namespace, "name": name, "before": before, "rows": rows}
        conn.execute(insert(t).values(**values, at=now))
    else:
        latest = max(found.before, before)
        conn.execute(update(t).where(*where).values(before=latest, rows=t.c.rows + rows, at=now))
    if trace == EVERY_SERVICE:
        # A Service's trace older than the age rule's says nothing more: the table stays as small
        # as the number of Services capped within the age limit.
        conn.execute(delete(t).where(t.c.namespace != "", t.c.before <= before))
