"""The operator commands: ``dklb inspect``, ``history``, ``pools`` and ``retry``.

Where it sits in the data flow: the controller (``dklb run``) writes every binding, pool
reference count and transition into the store (``engine.store``); these commands read the same
database from another process, READ-ONLY (SQLite ``mode=ro``: they cannot write beside a live
controller, not even by accident), after ``engine.migrate.check`` has refused a database that
is missing or newer than this dklb. Optionally they also ask EdgeLB (``engine.edgelb.client``)
what it has now: ``inspect NAMESPACE/NAME`` diffs the objects recorded for one Service against
its part of the live pool (both normalized by ``engine.translation``), ``pools`` lists EdgeLB's
pools next to what the database knows. ``retry`` is the one writer: it sets the binding's
``next_wakeup`` to now, and the running controller's periodic scan of due wake-ups
(``engine.controller``) runs the binding's handler within seconds — no signal, no API, just the
database both processes already share. Text goes through ``engine.tables``.

Every failure an operator can cause or meet (missing or too-new database, unknown Service,
unreachable EdgeLB) is printed as ``error: ...`` with exit status 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.exc import SQLAlchemyError

from engine.cli import options as flags
from engine.cli.output import NONE, arrow, dump_json, dump_yaml, indent, one_line, relative, table, timestamp
from engine.edgelb.errors import EdgeLBError, NotFound
from engine.edgelb.port import EdgeLB
from engine.edgelb.schema import POOL_DEFAULTS
from engine.model.config import ANNOTATION, PAUSED_ANNOTATION, PoolConfig
from engine.model.durations import format_duration, parse_duration
from engine.model.translation import new_pool, normalized_objects, owned_part, pool_ports, pool_settings
from engine.runtime import lifecycle as lifecycle_module
from engine.store import (
    Binding,
    HistoryEntry,
    HistoryRow,
    Pool,
    Store,
    StoreError,
    database_url,
    migrate,
    split_key,
    utcnow,
)

#: ``inspect --stuck`` without ``--older-than``: longer than any first-attempt backoff, short
#: enough that a pool failing since the last deploy shows up.
DEFAULT_STUCK_AFTER = 300.0
#: Columns of a message or error in a table; ``--wide`` shows them whole.
MESSAGE_WIDTH = 60
BINDINGS_WIDTH = 50
#: The controller scans for due wake-ups every 2 s; a wake-up overdue by this much means no
#: controller is acting on this database (stopped, or not leading).
OVERDUE_AFTER = 60.0
#: States in which nothing is wrong: excluded from ``--stuck``.
SETTLED_OK = "Ready"
OUTPUTS = ("table", "json", "yaml")
KNOWN_SHOWN = 5


class OpsError(Exception):
    """A problem the operator can fix; printed as ``error: ...``, exit status 1."""


# ---- shared plumbing -------------------------------------------------------------------------


def default_database() -> str:
    """``$DKLB_DATABASE``, else where ``dklb run`` puts it (``/var/lib/dklb/dklb.db`` in its
    container, ``dklb.db`` elsewhere): ``kubectl exec`` into the controller then needs no flag."""
    return os.environ.get("DKLB_DATABASE") or flags.default_database()


def open_read_only(target: str) -> Store:
    """The store behind ``target`` opened read-only, after refusing a missing or foreign schema."""
    migrate.check(target)
    return Store(database_url(target), read_only=True)


def _env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else flags.boolean(raw)


def _instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; without a zone it is UTC (the database's zone)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (e.g. 2026-11-28T12:00:00Z)") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _since(text: str) -> float | datetime:
    """``--since``: a duration back from now (``1h``) or an absolute time."""
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        return _instant(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30s, 2m, 1h30m) nor a time (2026-11-28T12:00:00Z)"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _now(args: argparse.Namespace) -> datetime:
    # --now is hidden: tests drive the engine with a fake clock and must see its times as "now".
    return args.now if getattr(args, "now", None) is not None else utcnow()


def _key(text: str) -> str:
    try:
        namespace, name = split_key(text)
    except ValueError:
        raise OpsError(f"{text!r} is not NAMESPACE/NAME (e.g. default/redis)") from None
    return f"{namespace}/{name}"


@functools.cache
def _lifecycle() -> lifecycle_module.Lifecycle:
    return lifecycle_module.load()


def _state(text: str, *, removed: bool = False) -> str:
    """The state named ``text``, spelled as stored (``ready`` -> ``Ready``), or a clear error."""
    machine = _lifecycle()
    names = [*machine.states, *([machine.final] if removed else [])]
    for name in names:
        if name.lower() == text.strip().lower():
            return name
    raise OpsError(f"unknown state {text!r} (states: {', '.join(names)})")


def _unknown(store: Store, key: str, database: str) -> str:
    """``no binding for KEY`` with the keys the operator most likely meant."""
    keys = [b.key for b in store.bindings()]
    message = f"no binding for {key}"
    gone = query_history(store, key=key, limit=1)
    if gone and gone[0].to_state == _lifecycle().final:
        message += f" (removed {timestamp(gone[0].at)}: see `dklb history {key}`)"
    if not keys:
        return f"{message} (the database {database} has no bindings)"
    name = key.rpartition("/")[2]
    # Same name in another namespace first (the usual slip), then look-alikes, then any.
    picks = [k for k in keys if k.rpartition("/")[2] == name]
    picks += [k for k in difflib.get_close_matches(key, keys, n=KNOWN_SHOWN, cutoff=0.6) if k not in picks]
    picks += [k for k in keys if k not in picks]
    shown = picks[:KNOWN_SHOWN]
    more = f", and {len(keys) - len(shown)} more" if len(keys) > len(shown) else ""
    return f"{message} (known: {', '.join(shown)}{more})"


def _emit(data: Any, output: str) -> None:
    print(dump_json(data) if output == "json" else dump_yaml(data))


def _note(text: str) -> None:
    # Notes go to stderr: `dklb inspect | awk ...` sees only the table.
    print(text, file=sys.stderr)


# ---- EdgeLB --------------------------------------------------------------------------------------


def _add_edgelb_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "EdgeLB (optional: also read what EdgeLB has now; the same DKLB_* variables as `dklb run`)"
    )
    env = os.environ.get
    group.add_argument(
        "--edgelb-url",
        metavar="URL",
        default=env("DKLB_EDGELB_URL"),
        help="EdgeLB base URL [env DKLB_EDGELB_URL]",
    )
    group.add_argument(
        "--edgelb-host",
        metavar="HOST",
        default=env("DKLB_EDGELB_HOST"),
        help="EdgeLB host[:port], e.g. api.edgelb.marathon.l4lb.thisdcos.directory [env DKLB_EDGELB_HOST]",
    )
    group.add_argument(
        "--edgelb-scheme",
        metavar="SCHEME",
        default=env("DKLB_EDGELB_SCHEME", "http"),
        help="http or https (with --edgelb-host)",
    )
    group.add_argument(
        "--edgelb-path",
        metavar="PATH",
        default=env("DKLB_EDGELB_PATH", ""),
        help="path prefix, e.g. /service/edgelb",
    )
    group.add_argument(
        "--edgelb-bearer-token-file",
        metavar="FILE",
        default=env("DKLB_EDGELB_BEARER_TOKEN_FILE"),
        help="file holding the bearer token [env DKLB_EDGELB_BEARER_TOKEN_FILE; or DKLB_EDGELB_TOKEN]",
    )
    group.add_argument(
        "--edgelb-service-account-secret-file",
        metavar="FILE",
        default=env("DKLB_EDGELB_SERVICE_ACCOUNT_SECRET_FILE"),
        help="DC/OS service-account secret (JSON)",
    )
    group.add_argument(
        "--edgelb-ca-bundle",
        metavar="FILE",
        default=env("DKLB_EDGELB_CA_BUNDLE"),
        help="CA bundle for EdgeLB's certificate",
    )
    group.add_argument(
        "--edgelb-insecure-skip-tls-verify",
        metavar="BOOL",
        nargs="?",
        const=True,
        type=flags.boolean,
        default=_env_bool("DKLB_EDGELB_INSECURE_SKIP_TLS_VERIFY"),
        help="do not verify EdgeLB's certificate",
    )
    group.add_argument(
        "--edgelb-request-timeout",
        metavar="DURATION",
        type=flags.duration,
        default=10.0,
        help="how long to wait for EdgeLB's answer (default 10s)",
    )


def _edgelb(args: argparse.Namespace) -> tuple[EdgeLB | None, str, Callable[[], None]]:
    """The EdgeLB to read (None when no flag names one), how to name it, and how to close it."""
    injected = getattr(args, "edgelb_instance", None)
    if injected is not None:
        return injected, "EdgeLB", lambda: None
    if not args.edgelb_url and not args.edgelb_host:
        return None, "", lambda: None
    from engine.edgelb.client import client_from_options

    try:
        client = client_from_options(
            url=args.edgelb_url,
            host=args.edgelb_host,
            scheme=args.edgelb_scheme,
            path=args.edgelb_path,
            token_file=args.edgelb_bearer_token_file,
            service_account_secret_file=args.edgelb_service_account_secret_file,
            ca_bundle=args.edgelb_ca_bundle,
            insecure_skip_tls_verify=bool(args.edgelb_insecure_skip_tls_verify),
            read_timeout=args.edgelb_request_timeout,
        )
    except ValueError as exc:
        raise OpsError(f"EdgeLB options: {exc}") from None
    return client, f"EdgeLB at {client.base_url}", client.close


EDGELB_HINT = (
    "give --edgelb-url URL (or --edgelb-host HOST, or set DKLB_EDGELB_URL) to compare "
    "with what EdgeLB has now"
)


# ---- documents -----------------------------------------------------------------------------------


def _binding_doc(b: Binding, now: datetime) -> dict[str, Any]:
    return {
        "key": b.key,
        "namespace": b.namespace,
        "name": b.name,
        "uid": b.uid,
        "pool": b.pool,
        "state": b.state,
        "state_since": b.state_since,
        "state_seconds": round((now - b.state_since).total_seconds(), 3),
        "attempts": b.attempts,
        "next_wakeup": b.next_wakeup,
        "last_error": b.last_error,
        "fingerprint": b.fingerprint,
        "created_at": b.created_at,
        "updated_at": b.updated_at,
    }


def _history_doc(h: HistoryEntry) -> dict[str, Any]:
    return {
        "id": h.id,
        "at": h.at,
        "key": h.key,
        "namespace": h.namespace,
        "name": h.name,
        "pool": h.pool,
        "from_state": h.from_state,
        "to_state": h.to_state,
        "trigger": h.trigger,
        "reason": h.reason,
        "attempt": h.attempt,
        "message": h.message,
        "duration_seconds": h.duration,
    }


def _pool_doc(p: Pool) -> dict[str, Any]:
    return dataclasses.asdict(p)


def _transition(h: HistoryEntry) -> str:
    return f"{h.from_state or '(new)'} {arrow()} {h.to_state}"


def _history_table(
    entries: Sequence[HistoryEntry], now: datetime, *, wide: bool, service: bool = True
) -> str:
    """The history as a table; ``service`` False drops the SERVICE column (one binding's view)."""
    columns: list[tuple[str, Callable[[HistoryEntry], object]]] = [
        ("TIME", lambda h: timestamp(h.at)),
        ("AGE", lambda h: relative(h.at, now)),
        *([("SERVICE", lambda h: h.key)] if service else []),
        ("POOL", lambda h: h.pool),
        (f"FROM {arrow()} TO", _transition),
        ("TRIGGER", lambda h: h.trigger),
        ("REASON", lambda h: h.reason),
        ("ATTEMPT", lambda h: h.attempt),
        ("MESSAGE", lambda h: h.message),
    ]
    headers = [name for name, _ in columns]
    rows = [[cell(h) for _, cell in columns] for h in entries]
    last = len(columns) - 1
    return table(headers, rows, right=(last - 1,), limits={last: None if wide else MESSAGE_WIDTH})


# ---- inspect -------------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    now = _now(args)
    store = open_read_only(args.database)
    try:
        if args.key:
            if args.state or args.pool or args.stuck or args.older_than is not None:
                raise OpsError(
                    "--stuck, --older-than, --state and --pool filter the list: give no NAMESPACE/NAME"
                )
            return _inspect_one(args, store, now)
        return _inspect_list(args, store, now)
    finally:
        store.close()


def _inspect_list(args: argparse.Namespace, store: Store, now: datetime) -> int:
    states = [_state(args.state)] if args.state else None
    bindings = store.bindings(pool=args.pool, states=states)
    stuck = args.stuck or args.older_than is not None
    older_than = DEFAULT_STUCK_AFTER if args.older_than is None else args.older_than
    if stuck:
        # Not Ready for longer than the threshold: failing, waiting for the user (Rejected,
        # Paused) or waiting for a controller that does not run. Removed bindings have no row.
        cutoff = now - timedelta(seconds=older_than)
        bindings = [b for b in bindings if b.state != SETTLED_OK and b.state_since < cutoff]
    if args.output != "table":
        _emit([_binding_doc(b, now) for b in bindings], args.output)
        return 0
    if not bindings:
        if stuck:
            _note(
                f"no stuck bindings: every binding is Ready or entered its state less than "
                f"{format_duration(older_than)} ago"
            )
        else:
            _note("no bindings" + (" match" if args.state or args.pool else " in the database"))
        return 0
    rows = [
        (
            b.key,
            b.pool,
            b.state,
            relative(b.state_since, now),
            b.attempts,
            relative(b.next_wakeup, now),
            b.last_error,
        )
        for b in bindings
    ]
    headers = ("NAMESPACE/NAME", "POOL", "STATE", "SINCE", "ATTEMPTS", "NEXT WAKE-UP", "LAST ERROR")
    print(table(headers, rows, right=(4,), limits={6: None if args.wide else MESSAGE_WIDTH}))
    overdue = [
        b
        for b in bindings
        if b.next_wakeup is not None and (now - b.next_wakeup).total_seconds() > OVERDUE_AFTER
    ]
    if overdue:
        _note(
            f"note: {len(overdue)} wake-up(s) overdue by more than {format_duration(OVERDUE_AFTER)} "
            "(e.g. " + overdue[0].key + "): is a controller running and leading on this database?"
        )
    return 0


def _cluster_of(objects: dict[str, Any] | None) -> str | None:
    """The cluster part of the recorded object names (``<cluster>:<ns>:<svc>:<port>``)."""
    for obj in (objects or {}).get("frontends") or []:
        name = obj.get("name") if isinstance(obj, dict) else None
        if isinstance(name, str) and name.count(":") >= 3:
            return name.rsplit(":", 3)[0]
    return None


def compare_with_edgelb(
    binding: Binding, edgelb: EdgeLB | None, *, cluster: str, where: str = "EdgeLB"
) -> dict[str, Any]:
    """This Service's recorded objects against its part of the live pool, as a status and a diff.

    Status: ``not-checked`` (no EdgeLB given), ``nothing-recorded``, ``pool-missing``,
    ``in-sync``, ``differs`` or ``error``. Both sides are normalized the way the controller
    compares them (defaults filled, sorted by name), so only real differences show.
    """
    if edgelb is None:
        return {"status": "not-checked", "message": EDGELB_HINT}
    if binding.pool is None or not binding.objects:
        return {
            "status": "nothing-recorded",
            "message": f"no pool objects are recorded for {binding.key} (state {binding.state}): "
            "nothing to compare",
        }
    try:
        live = edgelb.get_pool(binding.pool)
    except NotFound:
        return {
            "status": "pool-missing",
            "pool": binding.pool,
            "message": f"EdgeLB pool {binding.pool} does not exist",
        }
    except EdgeLBError as exc:
        return {
            "status": "error",
            "pool": binding.pool,
            "message": f"cannot read EdgeLB pool {binding.pool} from {where}: {exc}",
        }
    cluster = _cluster_of(binding.objects) or cluster
    if binding.state == "Deleting":
        # A Deleting binding's objects are what the controller is removing: it wants none.
        desired_frontends, desired_backends = [], []
    else:
        desired_frontends, desired_backends = normalized_objects(binding.objects)
    actual_frontends, actual_backends = owned_part(
        live, cluster=cluster, owner=(binding.namespace, binding.name)
    )
    desired = {"frontends": desired_frontends, "backends": desired_backends}
    actual = {"frontends": actual_frontends, "backends": actual_backends}
    result: dict[str, Any] = {"pool": binding.pool, "desired": desired, "actual": actual}
    if desired == actual:
        result["status"] = "in-sync"
        result["message"] = (
            f"in sync: EdgeLB pool {binding.pool} holds exactly the {len(desired_frontends)} frontend(s) "
            f"and {len(desired_backends)} backend(s) recorded for {binding.key}"
        )
        return result
    before = yaml.safe_dump(desired, sort_keys=True, default_flow_style=False).splitlines(keepends=True)
    after = yaml.safe_dump(actual, sort_keys=True, default_flow_style=False).splitlines(keepends=True)
    diff = "".join(
        difflib.unified_diff(
            before,
            after,
            fromfile=(
                f"wanted for {binding.key} (Deleting: no objects)"
                if binding.state == "Deleting"
                else f"recorded for {binding.key} (database)"
            ),
            tofile=f"EdgeLB pool {binding.pool} (now)",
        )
    )
    result["status"] = "differs"
    result["message"] = f"EdgeLB pool {binding.pool} differs from what is recorded for {binding.key}"
    result["diff"] = diff
    return result


def _inspect_one(args: argparse.Namespace, store: Store, now: datetime) -> int:
    key = _key(args.key)
    binding = store.get(key)
    if binding is None:
        raise OpsError(_unknown(store, key, args.database))
    pool = store.pool(binding.pool) if binding.pool else None
    history = query_history(store, key=key, limit=args.history or None)
    edgelb, where, close = _edgelb(args)
    try:
        comparison = compare_with_edgelb(
            binding, edgelb, cluster=args.kubernetes_cluster_framework_name, where=where
        )
    finally:
        close()
    code = 1 if comparison["status"] == "error" else 0
    if args.output != "table":
        _emit(
            {
                "binding": _binding_doc(binding, now),
                "pool": _pool_doc(pool) if pool else None,
                "configuration": binding.config,
                "objects": binding.objects,
                "history": [_history_doc(h) for h in history],
                "edgelb": comparison,
            },
            args.output,
        )
        if code:
            _note(f"error: {comparison['message']}")
        return code

    spec = _lifecycle().states.get(binding.state)
    fields: list[tuple[str, str]] = [
        ("Service", f"{binding.key}" + (f" (uid {binding.uid})" if binding.uid else "")),
        (
            "State",
            f"{binding.state} since {timestamp(binding.state_since)} ({relative(binding.state_since, now)})",
        ),
    ]
    if pool is not None:
        fields.append(
            (
                "Pool",
                f"{pool.name} (bindings referencing it: {pool.ref_count}, created by dklb: "
                f"{'yes' if pool.created_by_dklb else 'no'}, has served: {'yes' if pool.served else 'no'})",
            )
        )
    else:
        fields.append(("Pool", binding.pool or f"{NONE} (not decided: the configuration was never accepted)"))
    fields.append(("Attempts", str(binding.attempts)))
    fields.append(("Next wake-up", _wakeup_text(binding, spec is not None and spec.handler is not None, now)))
    fields.append(("Created", f"{timestamp(binding.created_at)} ({relative(binding.created_at, now)})"))
    fields.append(("Updated", f"{timestamp(binding.updated_at)} ({relative(binding.updated_at, now)})"))
    label_width = max(len(label) for label, _ in fields) + 2
    for label, value in fields:
        print(f"{label + ':':<{label_width}}{value}")

    print("\nLast error:")
    print(indent(binding.last_error) if binding.last_error else f"  {NONE}")

    print("\nConfiguration (recorded):")
    if binding.config is not None:
        print(indent(dump_yaml(_config_in_annotation_order(binding.config))))
    else:
        print(f"  {NONE} (none accepted yet: see the {ANNOTATION} annotation and the last error)")

    total = "" if len(history) < (args.history or 0) or not args.history else f"last {args.history}, "
    print(f"\nHistory ({total}newest first; all of it: dklb history {key}):")
    print(indent(_history_table(history, now, wide=args.wide, service=False)) if history else f"  {NONE}")

    print(f"\nEdgeLB ({binding.key}'s part of pool {binding.pool or NONE}):")
    print(indent(comparison["message"]))
    if comparison.get("diff"):
        print(indent(comparison["diff"].rstrip("\n")))
    if code:
        _note(f"error: {comparison['message']}")
    return code


def _config_in_annotation_order(config: dict[str, Any]) -> dict[str, Any]:
    # The database keeps JSON with sorted keys; the operator compares this with the annotation,
    # which dklb writes in the configuration object's own order.
    try:
        return PoolConfig.from_dict(config).to_dict()
    except (KeyError, TypeError, ValueError):
        return config


def _wakeup_text(binding: Binding, has_handler: bool, now: datetime) -> str:
    if binding.next_wakeup is None:
        if not has_handler:
            return f"{NONE} (state {binding.state} waits for the user to change the Service)"
        return f"{NONE} (waits for a change of the Service or its pool)"
    text = f"{timestamp(binding.next_wakeup)} ({relative(binding.next_wakeup, now)})"
    late = (now - binding.next_wakeup).total_seconds()
    if late > OVERDUE_AFTER:
        text += ": overdue, is a controller running and leading on this database?"
    elif binding.last_error:
        text += f": retry {binding.attempts + 1}"
    return text


# ---- history -------------------------------------------------------------------------------------


def history_select(
    *,
    key: str | None = None,
    pool: str | None = None,
    since: datetime | None = None,
    state: str | None = None,
    limit: int | None = 50,
) -> Select[tuple[HistoryRow]]:
    """The history query, newest first, shaped so that ONE index answers it without a sort.

    Each filter has an index ending in ``at``: (namespace, name, at), (pool, at), (to_state, at),
    (at). Read backwards, the index gives the rows already in ``at DESC, id DESC`` order (the
    rowid ends every SQLite index), so ``LIMIT`` stops after N rows even in a million. With two
    filters SQLite has no statistics to choose by, and picks (to_state, at) for a Service and a
    state: it then walks every Service's rows in that state (50 ms on a million rows, more for
    a rare state). So only the most selective filter — a Service, else a pool, else a state —
    is left usable as an index; the others are compared as ``column || ''``, an expression no
    index matches (portable SQL: other databases just filter the same rows).
    """
    lead = "key" if key is not None else "pool" if pool is not None else "state"

    def column(col: Any, usable: bool) -> ColumnElement[Any]:
        return col if usable else col + ""

    query = select(HistoryRow).order_by(HistoryRow.at.desc(), HistoryRow.id.desc())
    if key is not None:
        namespace, name = split_key(key)
        query = query.where(HistoryRow.namespace == namespace, HistoryRow.name == name)
    if pool is not None:
        query = query.where(column(HistoryRow.pool, lead == "pool") == pool)
    if state is not None:
        query = query.where(column(HistoryRow.to_state, lead == "state") == state)
    if since is not None:
        query = query.where(HistoryRow.at >= since)
    if limit is not None:
        query = query.limit(limit)
    return query


def query_history(store: Store, **filters: Any) -> list[HistoryEntry]:
    """``history_select(**filters)`` run on ``store``: what ``dklb history`` shows."""
    names = [f.name for f in dataclasses.fields(HistoryEntry)]
    with store.session() as s:
        return [
            HistoryEntry(**{n: getattr(r, n) for n in names}) for r in s.scalars(history_select(**filters))
        ]


def cmd_history(args: argparse.Namespace) -> int:
    now = _now(args)
    key = _key(args.key) if args.key else None
    state = _state(args.state, removed=True) if args.state else None
    since = None
    if args.since is not None:
        since = args.since if isinstance(args.since, datetime) else now - timedelta(seconds=args.since)
    store = open_read_only(args.database)
    try:
        entries = query_history(
            store, key=key, pool=args.pool, since=since, state=state, limit=args.limit or None
        )
    finally:
        store.close()
    if args.reverse:
        # The newest N, told in the order they happened (like `tail`).
        entries.reverse()
    if args.output != "table":
        _emit([_history_doc(h) for h in entries], args.output)
        return 0
    if not entries:
        _note("no history matches")
        return 0
    print(_history_table(entries, now, wide=args.wide))
    if args.limit and len(entries) == args.limit:
        _note(f"(the {args.limit} newest shown: --limit N for more, --limit 0 for all)")
    return 0


# ---- pools ---------------------------------------------------------------------------------------


def _recorded_pool(name: str, bindings: Sequence[Binding]) -> dict[str, Any] | None:
    """The pool the recorded configurations ask for (what dklb would create), or None if none is."""
    configured = [b for b in bindings if b.config is not None and b.state != "Deleting"]
    if not configured:
        return None
    # Services sharing a pool must agree on its settings (a guard), so the first one speaks for all.
    settings = pool_settings(PoolConfig.from_dict(configured[0].config or {}))
    frontends = [fe for b in configured for fe in (b.objects or {}).get("frontends") or []]
    backends = [be for b in configured for be in (b.objects or {}).get("backends") or []]
    # The pool group is not shown: EdgeLB's default stands in for the controller's flag.
    pool = new_pool(
        settings=settings, pool_group=POOL_DEFAULTS["namespace"], frontends=frontends, backends=backends
    )
    pool.setdefault("apiVersion", POOL_DEFAULTS["apiVersion"])
    pool["name"] = name
    return pool


def _ports(pool: dict[str, Any]) -> list[int]:
    try:
        return pool_ports(pool)
    except (TypeError, ValueError, AttributeError):
        # A pool someone else wrote by hand may not parse; listing must not die on it.
        return []


def cmd_pools(args: argparse.Namespace) -> int:
    store = open_read_only(args.database)
    try:
        recorded = {p.name: p for p in store.pools()}
        members: dict[str, list[Binding]] = {}
        for b in store.bindings():
            if b.pool is not None:
                members.setdefault(b.pool, []).append(b)
    finally:
        store.close()

    edgelb, where, close = _edgelb(args)
    live: dict[str, dict[str, Any]] | None = None
    if edgelb is not None:
        try:
            live = {str(p.get("name")): p for p in edgelb.list_pools() if isinstance(p, dict)}
        except EdgeLBError as exc:
            raise OpsError(f"cannot list the pools of {where}: {exc}") from None
        finally:
            close()

    items: list[dict[str, Any]] = []
    names = sorted(set(recorded) | set(members) | set(live or {}))
    for name in names:
        row = recorded.get(name)
        bound = members.get(name, [])
        pool = live.get(name) if live is not None else _recorded_pool(name, bound)
        items.append(
            {
                "name": name,
                "apiVersion": pool.get("apiVersion") if pool else None,
                "count": pool.get("count") if pool else None,
                "role": pool.get("role") if pool else None,
                "ports": _ports(pool) if pool else None,
                "bindings": [b.key for b in bound] if row is not None or bound else None,
                "created_by_dklb": row.created_by_dklb if row else None,
                "ref_count": row.ref_count if row else None,
                "in_database": row is not None,
                "in_edgelb": None if live is None else name in live,
                "source": "edgelb" if live is not None else "database",
            }
        )

    if args.output != "table":
        _emit(items, args.output)
        return 0
    if not items:
        _note("no pools" + (f" in {where} nor" if live is not None else "") + " in the database")
        return 0

    def yes_no(value: bool | None) -> str:
        return NONE if value is None else ("yes" if value else "no")

    rows = [
        (
            item["name"],
            item["apiVersion"],
            item["count"],
            item["role"],
            ",".join(str(p) for p in item["ports"]) if item["ports"] else None,
            ", ".join(item["bindings"]) if item["bindings"] else None,
            yes_no(item["created_by_dklb"]),
            item["ref_count"],
        )
        for item in items
    ]
    headers = ("NAME", "APIVERSION", "COUNT", "ROLE", "PORTS", "BINDINGS", "CREATED-BY-DKLB", "REFS")
    print(table(headers, rows, right=(2, 7), limits={5: None if args.wide else BINDINGS_WIDTH}))
    if live is None:
        print(
            "(APIVERSION, COUNT, ROLE and PORTS: what the recorded configurations ask for, not read "
            "from EdgeLB; a PORTS 0 is dynamic. Give --edgelb-url to list EdgeLB's pools.)"
        )
    else:
        missing = [item["name"] for item in items if not item["in_edgelb"]]
        if missing:
            print(f"(in the database but not in {where}: {', '.join(missing)})")
    return 0


# ---- retry ---------------------------------------------------------------------------------------


def cmd_retry(args: argparse.Namespace) -> int:
    now = _now(args)
    key = _key(args.key)
    # check() first: it refuses a missing or too-new database instead of creating or migrating it.
    migrate.check(args.database)
    store = Store(database_url(args.database))
    try:
        binding = store.get(key)
        if binding is None:
            raise OpsError(_unknown(store, key, args.database))
        spec = _lifecycle().states.get(binding.state)
        if spec is None or spec.handler is None:
            raise OpsError(_no_handler(binding))
        previous = binding.next_wakeup
        if not store.set_wakeup(key, now):
            raise OpsError(f"{key} was removed while waking it")
        after = store.get(key) or binding
    finally:
        store.close()

    if args.output != "table":
        _emit(
            {
                "key": key,
                "woken": True,
                "state": after.state,
                "attempts": after.attempts,
                "previous_wakeup": previous,
                "next_wakeup": after.next_wakeup,
                "last_error": after.last_error,
            },
            args.output,
        )
        return 0
    was = f"was {relative(previous, now)}, {timestamp(previous)}" if previous else "had none"
    print(f"woke {key}: next wake-up set to now, {timestamp(after.next_wakeup)} ({was})")
    print("a running controller picks it up within seconds (it scans the database for due wake-ups)")
    print(
        f"state: {after.state} since {timestamp(after.state_since)} ({relative(after.state_since, now)}), "
        f"attempts {after.attempts}"
    )
    print(f"last error: {after.last_error or NONE}")
    print(f"follow it with: dklb inspect {key}")
    return 0


def _no_handler(b: Binding) -> str:
    error = f" (last error: {one_line(b.last_error)})" if b.last_error else ""
    if b.state == "Paused":
        return (
            f"{b.key} is Paused: nothing to retry. Remove the {PAUSED_ANNOTATION} annotation (or set it to "
            f'anything but "true") and dklb resumes at once'
        )
    return (
        f"{b.key} is {b.state}: a retry cannot help, the Service must be fixed{error}. Fix its {ANNOTATION} "
        "annotation (or its ports) and apply it: dklb re-reads it at once"
    )


# ---- parsers -------------------------------------------------------------------------------------


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``func`` with every expected failure turned into ``error: ...`` and exit status 1."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (OpsError, StoreError, EdgeLBError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            print(f"error: cannot read the database {args.database}: {reason}", file=sys.stderr)
        except BrokenPipeError:
            # `dklb history | head`: the reader left; stop quietly, and keep Python's flush at exit
            # from raising again.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return 0
        return 1

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="PATH|URL",
        default=default_database(),
        help="SQLite path or SQLAlchemy URL of the controller's database "
        "(default %(default)s) [env DKLB_DATABASE]",
    )
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table", help="(default %(default)s)")
    # Hidden: the time taken as "now" (tests run the engine on a fake clock).
    parser.add_argument("--now", type=_instant, default=None, help=argparse.SUPPRESS)


def add_parsers(subparsers: Any) -> None:
    """Add ``inspect``, ``history``, ``pools`` and ``retry`` to ``dklb``'s sub-commands."""
    raw = argparse.RawDescriptionHelpFormatter

    inspect = subparsers.add_parser(
        "inspect",
        help="list bindings (state, age, wake-up, last error), or show one in full",
        description=textwrap.fill(
            "Without NAMESPACE/NAME: one row per Service bound by dklb. With it: the recorded "
            "configuration, the binding, its wake-up, last error, recent history and (given EdgeLB flags) "
            "the difference between what is recorded and what EdgeLB has. Reads the database read-only.",
            90,
        ),
        formatter_class=raw,
        epilog=(
            "examples:\n"
            "  dklb inspect                                 # every binding\n"
            "  dklb inspect --stuck                         # not Ready for more than 5m\n"
            "  dklb inspect --stuck --older-than 30m -o json\n"
            "  dklb inspect --state Provisioning --pool dklb-redis\n"
            "  dklb inspect default/redis --history 20\n"
            "  dklb inspect default/redis --edgelb-url http://127.0.0.1:8080   # + diff with EdgeLB"
        ),
    )
    inspect.add_argument("key", nargs="?", metavar="NAMESPACE/NAME", help="show this binding in full")
    inspect.add_argument(
        "--stuck", action="store_true", help="only bindings not Ready for longer than --older-than"
    )
    inspect.add_argument(
        "--older-than",
        type=flags.duration,
        default=None,
        metavar="DURATION",
        help="with --stuck (implies it): state entered longer ago than this (default 5m)",
    )
    inspect.add_argument("--state", help="only bindings in this state (e.g. Provisioning)")
    inspect.add_argument("--pool", help="only bindings on this EdgeLB pool")
    inspect.add_argument(
        "--history",
        type=_positive_int,
        default=10,
        metavar="N",
        help="history rows shown for one binding (default 10; 0 = all)",
    )
    inspect.add_argument("--wide", action="store_true", help="do not cut long errors and messages")
    inspect.add_argument(
        "--kubernetes-cluster-framework-name",
        metavar="NAME",
        default=os.environ.get("DKLB_KUBERNETES_CLUSTER_FRAMEWORK_NAME", "kubernetes-cluster"),
        help="names this cluster's objects in pools, when the binding recorded none (default %(default)s)",
    )
    _common(inspect)
    _add_edgelb_flags(inspect)
    inspect.set_defaults(func=_guarded(cmd_inspect))

    history = subparsers.add_parser(
        "history",
        help="query the transition history (newest first)",
        description=textwrap.fill(
            "Every transition of every binding, as recorded by the controller (append-only; kept "
            "after a Service is deleted). Newest first; filters combine. Reads the database read-only.",
            90,
        ),
        formatter_class=raw,
        epilog=(
            "examples:\n"
            "  dklb history default/redis                   # the last 50 transitions of one Service\n"
            "  dklb history --pool dklb-redis --since 1h\n"
            "  dklb history --state Rejected --since 2026-11-28T00:00:00Z -o json\n"
            "  dklb history default/redis --limit 0 --reverse   # all of it, oldest first"
        ),
    )
    history.add_argument("key", nargs="?", metavar="NAMESPACE/NAME", help="only this Service")
    history.add_argument("--pool", help="only transitions of bindings on this pool")
    history.add_argument(
        "--since",
        type=_since,
        default=None,
        metavar="DURATION|TIME",
        help="only newer entries (1h, or a UTC time)",
    )
    history.add_argument("--state", help="only transitions INTO this state (Removed included)")
    history.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="newest N entries (default 50; 0 = all)"
    )
    history.add_argument("--reverse", action="store_true", help="print the selected entries oldest first")
    history.add_argument("--wide", action="store_true", help="do not cut long messages")
    _common(history)
    history.set_defaults(func=_guarded(cmd_history))

    pools = subparsers.add_parser(
        "pools",
        help="list EdgeLB pools with the bindings that use them",
        description=textwrap.fill(
            "Like `dcos edgelb list`, plus what the database knows: the bindings referencing "
            "each pool, whether dklb created it, and its reference count. With EdgeLB flags, the "
            "pool columns come from EdgeLB; without, from the recorded configurations. Reads the "
            "database read-only.",
            90,
        ),
        formatter_class=raw,
        epilog=(
            "examples:\n"
            "  dklb pools\n"
            "  dklb pools --edgelb-url http://127.0.0.1:8080\n"
            "  dklb pools --edgelb-host api.edgelb.marathon.l4lb.thisdcos.directory -o yaml"
        ),
    )
    pools.add_argument("--wide", action="store_true", help="list every binding of a pool")
    _common(pools)
    _add_edgelb_flags(pools)
    pools.set_defaults(func=_guarded(cmd_pools))

    retry = subparsers.add_parser(
        "retry",
        help="wake a binding now (a running controller acts on it within seconds)",
        description=textwrap.fill(
            "Sets the binding's next wake-up to now in the database; the running controller's "
            "scan of due wake-ups runs its handler within seconds, instead of waiting out the backoff. A "
            "Rejected or Paused binding has nothing to retry: the Service itself must change.",
            90,
        ),
        formatter_class=raw,
        epilog=(
            "examples:\n  dklb retry default/redis\n"
            "  dklb retry default/redis --database /var/lib/dklb/dklb.db"
        ),
    )
    retry.add_argument("key", metavar="NAMESPACE/NAME")
    _common(retry)
    retry.set_defaults(func=_guarded(cmd_retry))


def build_parser() -> argparse.ArgumentParser:
    """A ``dklb`` parser holding only these commands (tests; ``engine.cli`` adds them to its own)."""
    parser = argparse.ArgumentParser(prog="dklb")
    add_parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main_for_tests(argv: Sequence[str], *, edgelb: EdgeLB | None = None) -> int:
    """Run one of these commands; ``edgelb`` replaces the client the EdgeLB flags would build."""
    args = build_parser().parse_args(list(argv))
    if edgelb is not None:
        args.edgelb_instance = edgelb
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main_for_tests(sys.argv[1:]))
