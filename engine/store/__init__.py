"""The store: bindings, pools and the history (appended to, pruned by age and count), and all its SQL.

What the layer is: the only code that knows tables and statements. ``schema`` declares the
tables (Alembic, in ``migrations/``, creates and upgrades them through ``migrate``),
``database`` opens a path or URL (SQLite, or PostgreSQL for replicas on several nodes) with
dklb's engine settings and names it without its password (``redacted``), ``records`` holds what the store
hands out (``Binding``, ``Pool``, ``HistoryEntry``) and takes in (``Change``), and ``store``
is ``Store``: every read and every one-transaction write, for the controller, ``/metrics`` and
the operator commands alike. ``pruning`` applies history retention in small batches.

What it may import: the model (``engine.model``), and nothing above it: the runtime, the
admission webhook, telemetry and the CLI use the store, never the other way round.
"""

from engine.store.database import database_url, make_engine, redacted
from engine.store.records import (
    Binding,
    BindingSummary,
    Change,
    Fenced,
    HistoryEntry,
    HistoryPruned,
    Pool,
    StaleBinding,
    StoreError,
    utcnow,
)
from engine.store.schema import Base
from engine.store.store import Store

__all__ = [
    "Base",
    "Binding",
    "BindingSummary",
    "Change",
    "Fenced",
    "HistoryEntry",
    "HistoryPruned",
    "Pool",
    "StaleBinding",
    "Store",
    "StoreError",
    "database_url",
    "make_engine",
    "redacted",
    "utcnow",
]
