"""``Store``: typed access to the database, and all of dklb's SQL.

The reconciler reads a ``Binding`` here, runs the handler of its state, and hands the outcome
back as a ``Change``; ``Store.commit`` applies it in ONE transaction: the binding's row, the
reference counts of the pools it leaves or joins, and a history row. A crash therefore leaves
either the old state or the new one, never a half-counted pool. Every other reader asks here
too: the controller's wake-up scans (``keys``), the orphan sweep (``summaries``), ``/metrics``
and ``/readyz`` (``counts``, ``ping``) and the operator commands (``history`` and the rest, on a
read-only store). The schema is owned by Alembic: open a store through ``engine.store.migrate``.
What runs on every reconcile step (``commit``, ``create``, ``get``, ``pool``, a pool's
``bindings``) is prepared once and run on kept DBAPI connections (``engine.store.prepared``,
``engine.store.transitions``); the rest goes through SQLAlchemy Core.

Replicas (PostgreSQL): the same code, on SQLAlchemy's pool instead of kept connections; writes
of one process run side by side, ordered by row locks (``transitions``). A replica that starts
leading claims a new term (``claim_leadership``); from then on each of its write transactions
first checks the term is still its own, so a deposed leader's late commit is refused by the
database (``Fenced``). ``reachability`` says whether the database answers (lost on a connection
error, regained by ``ping``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import (
    URL,
    ColumnElement,
    Connection,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql

from engine.model.services import join_key, split_key
from engine.store import leadership, transitions
from engine.store.database import (
    IDLE_IN_TRANSACTION_MS,
    SINGLE_STATEMENT,
    make_engine,
    redacted,
    sqlite_path,
)
from engine.store.prepared import Connections
from engine.store.reachability import Reachability
from engine.store.records import (
    Binding,
    BindingSummary,
    Change,
    HistoryEntry,
    HistoryPruned,
    Pool,
    StoreError,
    cap_message,
    utcnow,
)
from engine.store.schema import BINDINGS, HISTORY, HISTORY_PRUNED, LEADERSHIP, NORMAL_FORMS, POOLS
from engine.store.transitions import Statements


class Store:
    """Typed access to the database; every write method is one transaction."""

    def __init__(self, url: str | URL, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self.engine = make_engine(url, read_only=read_only)
        self.dialect = self.engine.dialect.name
        # Reads on an engine of their own whose transactions take no write lock, so readers never
        # queue behind a worker's commit (only for a file: another engine on :memory: is another
        # database; PostgreSQL's readers never wait for writers anyway).
        separate = not read_only and sqlite_path(url) is not None
        self._reader = make_engine(url, deferred=True) if separate else self.engine
        # SQLite writers queue here rather than in SQLite's busy handler, which sleeps 1, 2, 5,
        # 10... ms between attempts and so leaves the lock idle; other processes still meet the
        # handler. PostgreSQL's writers run side by side: its row locks order them
        # (``engine.store.transitions``), within this process as across replicas.
        self._writer: AbstractContextManager[Any] = (
            nullcontext() if self.dialect == "postgresql" else threading.Lock()
        )
        # Write transactions committed by this process: what /metrics and the benchmark count.
        self.write_transactions = 0
        self._writes_lock = threading.Lock()
        self._statements = Statements(self.engine.dialect)
        self._connections = Connections(
            self.engine, self._reader, keep=separate or self.dialect == "postgresql"
        )
        # Lost on a connection error of any statement, regained by ``ping``: the runtime's fence.
        self.reachability = Reachability(self.engine, redacted(url))
        # The leadership term this store claimed (``claim_leadership``); None: it never claimed
        # and its writes are not fenced (the CLI, tests, leader election off).
        self.term: int | None = None

    def close(self) -> None:
        with self._writer:
            self._connections.close()
        self.engine.dispose()
        self._reader.dispose()

    # Reads and writes go through SQLAlchemy Core on plain connections: the ORM's unit of work
    # cost more CPU than everything else a reconcile does.

    @contextmanager
    def _read(self, *, stream: bool = False) -> Iterator[Connection]:
        """A connection for ONE statement (each read below is one). ``stream``: rows come as
        they are used (SQLite steps its statement anyway; psycopg would fetch them all at once
        unless a server-side cursor is asked for)."""
        with self._reader.connect() as conn:
            options: dict[str, Any] = {SINGLE_STATEMENT: True}
            if stream and self.dialect == "postgresql":
                options.update(stream_results=True, max_row_buffer=500)
            yield conn.execution_options(**options)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer, self.engine.begin() as conn:
            if self.term is not None:
                with closing(conn.connection.cursor()) as cursor:
                    transitions.check_term(self._statements, cursor, self.term)
            yield conn
        with self._writes_lock:
            self.write_transactions += 1

    @contextmanager
    def _raw_write(self) -> Iterator[Any]:
        """A DBAPI cursor inside ONE write transaction, for ``Prepared`` statements."""
        with self.reachability.guard(), self._writer, self._connections.write() as cursor:
            if self.term is not None:
                transitions.check_term(self._statements, cursor, self.term)
            yield cursor
        with self._writes_lock:
            self.write_transactions += 1

    # ---- leadership ----------------------------------------------------------------------------

    def claim_leadership(self, holder: str, *, now: datetime | None = None) -> int:
        """Start a new leadership term held by ``holder`` (one transaction: term + 1); returns it.

        Called each time this replica starts leading. From then on every write transaction of
        this store checks the term first (``transitions.check_term``): when another replica claims after this
        one, this store's writes are refused (``Fenced``) by the database itself."""
        with self._writer, self.engine.begin() as conn:
            # The last wait: longer than the server takes to end a cut-off session by itself.
            term = leadership.claim(conn, holder, now or utcnow(), wait_ms=2 * IDLE_IN_TRANSACTION_MS + 1000)
        if term is None:
            raise StoreError("the database has no leadership row: run `dklb migrate` (revision 0006)")
        self.term = int(term)
        return self.term

    def leadership(self) -> tuple[str, int]:
        """``(holder, term)`` of the latest claim (``("", 0)``: nobody ever claimed)."""
        with self._read() as conn:
            row = conn.execute(select(LEADERSHIP.c.holder, LEADERSHIP.c.term)).first()
        return ("", 0) if row is None else (str(row.holder), int(row.term))

    # ---- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Binding | None:
        """The binding of ``key``: the read at the start of every reconcile, so a prepared one."""
        namespace, name = split_key(key)
        with self.reachability.guard(), self._connections.read() as cursor:
            row = self._statements.binding_by_key.first(cursor, {"_namespace": namespace, "_name": name})
        return None if row is None else Binding(**row)

    def bindings(self, *, pool: str | None = None, states: Sequence[str] | None = None) -> list[Binding]:
        if pool is not None and states is None:
            # The guards' question on every transition into a pool: a prepared read.
            prepared = self._statements.bindings_in_pool
            with self.reachability.guard(), self._connections.read() as cursor:
                rows = prepared.run(cursor, {"_pool": pool}).fetchall()
            return [Binding(**prepared.decode(row)) for row in rows]
        query = select(BINDINGS).order_by(BINDINGS.c.namespace, BINDINGS.c.name)
        if pool is not None:
            query = query.where(BINDINGS.c.pool == pool)
        if states is not None:
            query = query.where(BINDINGS.c.state.in_(list(states)))
        with self._read() as conn:
            return [Binding(**r._mapping) for r in conn.execute(query)]

    def pool(self, name: str) -> Pool | None:
        """The pool's row: read by the guards and Provisioning on every step into a pool."""
        with self.reachability.guard(), self._connections.read() as cursor:
            row = self._statements.pool_by_name.first(cursor, {"_name": name})
        return None if row is None else Pool(**row)

    def pools(self) -> list[Pool]:
        with self._read() as conn:
            return [Pool(**r._mapping) for r in conn.execute(select(POOLS).order_by(POOLS.c.name))]

    def keys(self, *, due: datetime | None = None) -> list[str]:
        """The keys of the bindings, in ``bindings()``'s order; with ``due``, of those whose
        wake-up is at or before it, earliest first (``due()``'s order). Two columns only: a whole
        ``Binding`` carries its decoded configuration and EdgeLB objects."""
        query = select(BINDINGS.c.namespace, BINDINGS.c.name)
        if due is None:
            query = query.order_by(BINDINGS.c.namespace, BINDINGS.c.name)
        else:
            query = query.where(BINDINGS.c.next_wakeup.is_not(None), BINDINGS.c.next_wakeup <= due)
            query = query.order_by(BINDINGS.c.next_wakeup)
        with self._read() as conn:
            return [join_key(namespace, name) for namespace, name in conn.execute(query)]

    def retrying_keys(self) -> list[str]:
        """The keys of the bindings waiting to retry a failure (an error recorded, a wake-up set),
        earliest wake-up first: what ``Controller.retry_now`` runs at once after an EdgeLB outage."""
        query = (
            select(BINDINGS.c.namespace, BINDINGS.c.name)
            .where(BINDINGS.c.last_error.is_not(None), BINDINGS.c.next_wakeup.is_not(None))
            .order_by(BINDINGS.c.next_wakeup)
        )
        with self._read() as conn:
            return [join_key(namespace, name) for namespace, name in conn.execute(query)]

    def due(self, now: datetime) -> list[Binding]:
        query = (
            select(BINDINGS)
            .where(BINDINGS.c.next_wakeup.is_not(None), BINDINGS.c.next_wakeup <= now)
            .order_by(BINDINGS.c.next_wakeup)
        )
        with self._read() as conn:
            return [Binding(**r._mapping) for r in conn.execute(query)]

    def history(
        self,
        *,
        key: str | None = None,
        pool: str | None = None,
        since: datetime | None = None,
        state: str | None = None,
        limit: int | None = 50,
    ) -> list[HistoryEntry]:
        """Newest first, shaped so that ONE index answers the query without a sort.

        Each filter has an index ending in ``at``: (namespace, name, at), (pool, at), (to_state,
        at), (at). Read backwards, the index gives the rows already in ``at DESC, id DESC`` order
        (the rowid ends every SQLite index), so ``LIMIT`` stops after N rows even in a million.
        With two filters SQLite has no statistics to choose by, and picks (to_state, at) for a
        Service and a state: it then walks every Service's rows in that state (50 ms on a million
        rows, more for a rare state). So only the most selective filter (a Service, else a pool,
        else a state) is left usable as an index; the others are compared as ``column || ''``,
        an expression no index matches (portable SQL: other databases just filter the same rows).
        PostgreSQL (a million rows, EXPLAIN ANALYZE): the same indexes read backwards, an
        incremental sort for the ``id`` tie-break of one ``at``, under 0.3 ms; the worst case,
        a pool and a state that never meet, reads the pool's rows (3,334: 9 ms).
        """
        lead = "key" if key is not None else "pool" if pool is not None else "state"

        def column(col: Any, usable: bool) -> ColumnElement[Any]:
            return col if usable else col + ""

        query = select(HISTORY).order_by(HISTORY.c.at.desc(), HISTORY.c.id.desc())
        if key is not None:
            namespace, name = split_key(key)
            query = query.where(HISTORY.c.namespace == namespace, HISTORY.c.name == name)
        if pool is not None:
            query = query.where(column(HISTORY.c.pool, lead == "pool") == pool)
        if state is not None:
            query = query.where(column(HISTORY.c.to_state, lead == "state") == state)
        if since is not None:
            query = query.where(HISTORY.c.at >= since)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [HistoryEntry(**r._mapping) for r in conn.execute(query)]

    def pruned(self, key: str | None = None) -> list[HistoryPruned]:
        """What retention deleted (``engine.store.pruning``), for ``dklb history``'s footer: the
        age rule's trace, then the row cap's (of ``key``, or of every Service taken together)."""
        t = HISTORY_PRUNED
        capped = select(func.max(t.c.before), func.sum(t.c.rows), func.max(t.c.at), func.count())
        capped = capped.where(t.c.namespace != "")
        if key is not None:
            namespace, name = split_key(key)
            capped = capped.where(t.c.namespace == namespace, t.c.name == name)
        found: list[HistoryPruned] = []
        with self._reader.connect() as conn, conn.begin():
            age = conn.execute(select(t).where(t.c.namespace == "", t.c.name == "")).first()
            before, rows, at, services = conn.execute(capped).one()
        if age is not None:
            found.append(HistoryPruned("max-age", age.before, int(age.rows), age.at))
        if services:
            found.append(HistoryPruned("max-rows-per-service", before, int(rows), at, int(services)))
        return found

    def summaries(self) -> Iterator[BindingSummary]:
        """Every binding's key, pool and configuration (in ``bindings()``'s order), one row at a
        time: the orphan sweep's read, which must not hold thousands of whole bindings at once."""
        query = select(BINDINGS.c.namespace, BINDINGS.c.name, BINDINGS.c.pool, BINDINGS.c.config)
        with self._read(stream=True) as conn:
            for namespace, name, pool, config in conn.execute(
                query.order_by(BINDINGS.c.namespace, BINDINGS.c.name)
            ):
                yield BindingSummary(namespace=namespace, name=name, pool=pool, config=config)

    def counts(self) -> tuple[dict[str, int], int]:
        """Bindings by state and the number of pools, read in one transaction (``/metrics``)."""
        with self._reader.connect() as conn, conn.begin():
            rows = conn.execute(select(BINDINGS.c.state, func.count()).group_by(BINDINGS.c.state))
            by_state = {str(state): int(n) for state, n in rows}
            pools = int(conn.execute(select(func.count()).select_from(POOLS)).scalar_one())
        return by_state, pools

    def ping(self) -> None:
        """Raise unless the database answers a trivial query (``/readyz``); once it does, the
        database is reachable again (``reachability``).

        It names a table, so SQLite has to read the file's schema: ``SELECT 1`` alone would
        succeed without touching the file at all.
        """
        with self._read() as conn:
            conn.execute(text("SELECT 1 FROM pools LIMIT 1")).all()
        if not self.reachability.reachable:
            # The kept connections predate the outage (a restarted server broke them all): the
            # work that resumes now must not fail on them one by one, each failure closing the
            # gate again until the next ping.
            self._connections.close()
        self.reachability.regained()

    def live_reference_counts(self) -> dict[str, int]:
        """Bindings per pool counted from the bindings table: the truth ``ref_count`` must equal."""
        with self._read() as conn:
            rows = conn.execute(
                select(BINDINGS.c.pool, func.count())
                .where(BINDINGS.c.pool.is_not(None))
                .group_by(BINDINGS.c.pool)
            )
            return {str(p): int(n) for p, n in rows}

    # ---- writes ------------------------------------------------------------------------------

    def create(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        state: str,
        trigger: str,
        reason: str = "",
        message: str = "",
        objects: Any = None,
        now: datetime | None = None,
    ) -> Binding:
        """A new binding and its first history row (from nothing to ``state``)."""
        now = now or utcnow()
        values: dict[str, Any] = {
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "state": state,
            "pool": None,
            "config": None,
            "objects": objects,
            "fingerprint": None,
            "attempts": 0,
            "next_wakeup": now,
            "last_error": None,
            "state_since": now,
            "created_at": now,
            "updated_at": now,
            "shared_pool_key": None,
        }
        sql = self._statements
        with self._raw_write() as cursor:
            inserted = sql.insert_binding.first(cursor, values)
            assert inserted is not None
            binding_id = inserted["id"]
            sql.insert_history.run(
                cursor,
                {
                    "binding_id": binding_id,
                    "namespace": namespace,
                    "name": name,
                    "pool": None,
                    "from_state": None,
                    "to_state": state,
                    "trigger": trigger,
                    "reason": reason,
                    "message": cap_message(message),
                    "attempt": 0,
                    "at": now,
                    "duration": None,
                },
            )
        return Binding(id=binding_id, **values)

    def commit(self, change: Change, *, now: datetime | None = None) -> Binding | None:
        """Apply one transition atomically (``engine.store.transitions.apply``); returns the binding
        after it (None once removed).

        Raises ``StaleBinding`` when the binding is no longer in ``change.expected_state``: the
        caller's view is out of date and nothing is written.
        """
        now = now or utcnow()
        with self._raw_write() as cursor:
            row = transitions.apply(self._statements, cursor, change, now)
        return None if row is None else Binding(**row)

    def set_wakeup(self, key: str, at: datetime) -> bool:
        """Wake a binding at ``at`` (``dklb retry``); a running controller's scan picks it up."""
        namespace, name = split_key(key)
        with self._write() as conn:
            result = conn.execute(
                update(BINDINGS)
                .where(BINDINGS.c.namespace == namespace, BINDINGS.c.name == name)
                .values(next_wakeup=at)
            )
            return bool(result.rowcount)

    # ---- reads for the pool sweep (engine.runtime.poolsweep) ---------------------------------

    def expectations(
        self, states: Sequence[str], *, pools: Sequence[str] | None = None
    ) -> Iterator[tuple[str, str, str]]:
        """``(key, pool, objects as JSON text)`` of every binding in ``states`` that has a pool and objects
        (only of ``pools`` when given), one row at a time: what each settled binding expects its
        pool to hold, compared with one pool listing per resync period. Three columns: no whole
        ``Binding`` (configuration, history fields) is built for thousands of rows."""
        # The objects as the JSON text stored: the sweep digests the text and parses it only when
        # that content was never seen (engine.runtime.poolsweep.Digests).
        objects = type_coerce(BINDINGS.c.objects, Text)
        query = select(BINDINGS.c.namespace, BINDINGS.c.name, BINDINGS.c.pool, objects).where(
            BINDINGS.c.state.in_(list(states)),
            BINDINGS.c.pool.is_not(None),
            BINDINGS.c.objects.is_not(None),
        )
        if pools is not None:
            query = query.where(BINDINGS.c.pool.in_(list(pools)))
        with self._read(stream=True) as conn:
            for namespace, name, pool, objects in conn.execute(query):
                yield join_key(namespace, name), pool, objects

    def keys_in(self, states: Sequence[str]) -> list[str]:
        """The keys of the bindings in ``states`` (two columns, like ``keys``): at start-up, the
        settled bindings the pool sweep verifies, whose handlers need not run one by one."""
        query = select(BINDINGS.c.namespace, BINDINGS.c.name).where(BINDINGS.c.state.in_(list(states)))
        with self._read() as conn:
            return [join_key(namespace, name) for namespace, name in conn.execute(query)]

    def normal_forms(self) -> dict[bytes, bytes]:
        """The pool sweep's kept normal forms (content digest -> normalized digest): read once at
        start, so the first sweep after a restart normalizes only what it never saw."""
        with self._read() as conn:
            return {bytes(content): bytes(normal) for content, normal in conn.execute(select(NORMAL_FORMS))}

    def keep_normal_forms(self, found: Mapping[bytes, bytes], *, replace: bool = False) -> None:
        """Add ``found`` to the kept normal forms (one transaction); with ``replace``, they become
        the only ones (the sweep drops the forms no binding or pool has any more)."""
        rows = [{"content": content, "normal": normal} for content, normal in found.items()]
        with self._write() as conn:
            if replace:
                conn.execute(delete(NORMAL_FORMS))
            if rows:
                # A row is a pure function of its key: one already there (another replica's sweep
                # kept it meanwhile) is the same row.
                conn.execute(_insert_or_keep(self.dialect), rows)

    # ---- reads for the start-up pass (engine.runtime.controller) -----------------------------

    def brief_bindings(self) -> list[Binding]:
        """Every binding WITHOUT its configuration and objects (both None), in one query: what
        the start-up pass judges which keys need a reconcile on (state, uid, fingerprint,
        wake-up; ``Reconciler.quiet``). Decoding every binding's JSON, one query per key, was
        most of a restart's cost. Never hand one of these to a handler or a commit."""
        with self._read() as conn:
            return [Binding(**r._mapping, config=None, objects=None) for r in conn.execute(_BRIEF_BINDINGS)]


def _insert_or_keep(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(NORMAL_FORMS).on_conflict_do_nothing(index_elements=["content"])
    return insert(NORMAL_FORMS).prefix_with("OR REPLACE", dialect="sqlite")


_BRIEF_BINDINGS = select(
    *(column for column in BINDINGS.c if column.name not in ("config", "objects"))
).order_by(BINDINGS.c.namespace, BINDINGS.c.name)
