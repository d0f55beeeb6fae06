"""``dklb inspect``: every binding in one table, or one binding in full (and EdgeLB's view of it).

Where it sits in the data flow: the controller (``dklb run``) writes every binding, pool
reference count and transition into the store; this command reads the same database from
another process, read-only (``engine.store.migrate.open_read_only``). Given EdgeLB flags it
also reads the binding's pool from EdgeLB and diffs the objects recorded for the Service
against its part of the live pool (both normalized by ``engine.model.translation``): the one
command to run when a pool is stuck.
"""

from __future__ import annotations

import argparse
import difflib
import textwrap
from datetime import datetime, timedelta
from typing import Any

import yaml

from engine.cli import bindings, database, options
from engine.cli.bindings import (
    MESSAGE_WIDTH,
    OVERDUE_AFTER,
    binding_doc,
    history_doc,
    history_table,
    machine,
    now,
    overdue,
    parse_key,
    pool_doc,
    state_named,
    unknown_binding,
)
from engine.cli.options import UsageError
from engine.cli.output import NONE, dump_yaml, emit, indent, note, relative, table, timestamp
from engine.edgelb.errors import EdgeLBError, NotFound
from engine.edgelb.port import EdgeLB
from engine.model.config import PoolConfig
from engine.model.durations import format_duration
from engine.model.services import ANNOTATION
from engine.model.translation import normalized_objects, owned_part
from engine.store import Binding, Store
from engine.store.migrate import open_read_only

#: ``--stuck`` without ``--older-than``: longer than any first-attempt backoff, short enough that
#: a pool failing since the last deploy shows up.
DEFAULT_STUCK_AFTER = 300.0

EDGELB_HINT = (
    "give --edgelb-url URL (or --edgelb-host HOST, or set DKLB_EDGELB_URL) to compare "
    "with what EdgeLB has now"
)
EDGELB_TITLE = "EdgeLB (optional: also read what EdgeLB has now)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Without NAMESPACE/NAME: one row per Service bound by dklb. With it: the recorded "
        "configuration, the binding, its wake-up, last error, recent history and (given EdgeLB flags) "
        "the difference between what is recorded and what EdgeLB has. Reads the database read-only.",
        90,
    )
    parser.epilog = (
        "examples:\n"
        "  dklb inspect                                 # every binding\n"
        "  dklb inspect --stuck                         # not Ready for more than 5m\n"
        "  dklb inspect --stuck --older-than 30m -o json\n"
        "  dklb inspect --state Provisioning --pool dklb-redis\n"
        "  dklb inspect default/redis --history 20\n"
        "  dklb inspect default/redis --edgelb-url http://127.0.0.1:8080   # + diff with EdgeLB"
    )
    parser.add_argument("key", nargs="?", metavar="NAMESPACE/NAME", help="show this binding in full")
    add = options.add
    add(
        parser,
        "--stuck",
        env=False,
        action="store_true",
        help="only bindings not Ready for longer than --older-than",
    )
    add(
        parser,
        "--older-than",
        env=False,
        type=options.duration,
        metavar="DURATION",
        help="with --stuck (implies it): state entered longer ago than this (default 5m)",
    )
    options.filters(
        parser,
        state="only bindings in this state (e.g. Provisioning)",
        pool="only bindings on this EdgeLB pool",
    )
    add(
        parser,
        "--history",
        env=False,
        type=options.count,
        default=10,
        metavar="N",
        help="history rows shown for one binding (default 10; 0 = all)",
    )
    options.wide(parser, help="do not cut long errors and messages")
    options.cluster(
        parser,
        help="names this cluster's objects in pools, when the binding recorded none (default %(default)s)",
    )
    database.flags(parser)
    options.output(parser, ("table", "json", "yaml"), "table")
    options.edgelb(parser, title=EDGELB_TITLE, host=None, request_timeout=10.0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    at = now()
    store = open_read_only(database.resolve(args).url)
    try:
        if args.key:
            if args.state or args.pool or args.stuck or args.older_than is not None:
                raise UsageError(
                    "--stuck, --older-than, --state and --pool filter the list: give no NAMESPACE/NAME"
                )
            return _inspect_one(args, store, at)
        return _inspect_list(args, store, at)
    finally:
        store.close()


def _inspect_list(args: argparse.Namespace, store: Store, at: datetime) -> int:
    states = [state_named(args.state)] if args.state else None
    bindings = store.bindings(pool=args.pool, states=states)
    stuck = args.stuck or args.older_than is not None
    older_than = DEFAULT_STUCK_AFTER if args.older_than is None else args.older_than
    if stuck:
        # Not Ready for longer than the threshold: failing, waiting for the user (Rejected,
        # Paused) or waiting for a controller that does not run. Removed bindings have no row.
        cutoff = at - timedelta(seconds=older_than)
        settled = machine().settled
        bindings = [b for b in bindings if b.state not in settled and b.state_since < cutoff]
    if args.output != "table":
        emit([binding_doc(b, at) for b in bindings], args.output)
        return 0
    if not bindings:
        if stuck:
            fine = " or ".join(sorted(machine().settled))
            note(
                f"no stuck bindings: every binding is {fine} or entered its state less than "
                f"{format_duration(older_than)} ago"
            )
        else:
            note("no bindings" + (" match" if args.state or args.pool else " in the database"))
        return 0
    rows = [
        (
            b.key,
            b.pool,
            b.state,
            relative(b.state_since, at),
            b.attempts,
            relative(b.next_wakeup, at),
            b.last_error,
        )
        for b in bindings
    ]
    headers = ("NAMESPACE/NAME", "POOL", "STATE", "SINCE", "ATTEMPTS", "NEXT WAKE-UP", "LAST ERROR")
    print(table(headers, rows, right=(4,), limits={6: None if args.wide else MESSAGE_WIDTH}))
    late = [b for b in bindings if overdue(b, at)]
    if late:
        note(
            f"note: {len(late)} wake-up(s) overdue by more than {format_duration(OVERDUE_AFTER)} "
            "(e.g. " + late[0].key + "): is a controller running and leading on this database?"
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
    removing = _removing(binding)
    if removing:
        # The binding's recorded objects are what the controller is removing: it wants none.
        desired_frontends: list[dict[str, Any]] = []
        desired_backends: list[dict[str, Any]] = []
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
                f"wanted for {binding.key} ({binding.state}: no objects)"
                if removing
                else f"recorded for {binding.key} (database)"
            ),
            tofile=f"EdgeLB pool {binding.pool} (now)",
        )
    )
    result["status"] = "differs"
    result["message"] = f"EdgeLB pool {binding.pool} differs from what is recorded for {binding.key}"
    result["diff"] = diff
    return result


def _inspect_one(args: argparse.Namespace, store: Store, at: datetime) -> int:
    key = parse_key(args.key)
    binding = store.get(key)
    if binding is None:
        raise UsageError(unknown_binding(store, key, database.resolve(args).shown))
    pool = store.pool(binding.pool) if binding.pool else None
    history = store.history(key=key, limit=args.history or None)
    with bindings.edgelb_to_read(args) as (edgelb, where):
        comparison = compare_with_edgelb(
            binding, edgelb, cluster=args.kubernetes_cluster_framework_name, where=where
        )
    code = 1 if comparison["status"] == "error" else 0
    if args.output != "table":
        emit(
            {
                "binding": binding_doc(binding, at),
                "pool": pool_doc(pool) if pool else None,
                "configuration": binding.config,
                "objects": binding.objects,
                "history": [history_doc(h) for h in history],
                "edgelb": comparison,
            },
            args.output,
        )
        if code:
            note(f"error: {comparison['message']}")
        return code

    spec = machine().states.get(binding.state)
    fields: list[tuple[str, str]] = [
        ("Service", f"{binding.key}" + (f" (uid {binding.uid})" if binding.uid else "")),
        (
            "State",
            f"{binding.state} since {timestamp(binding.state_since)} ({relative(binding.state_since, at)})",
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
    fields.append(("Next wake-up", _wakeup_text(binding, spec is not None and spec.handler is not None, at)))
    fields.append(("Created", f"{timestamp(binding.created_at)} ({relative(binding.created_at, at)})"))
    fields.append(("Updated", f"{timestamp(binding.updated_at)} ({relative(binding.updated_at, at)})"))
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
    print(indent(history_table(history, at, wide=args.wide, service=False)) if history else f"  {NONE}")

    print(f"\nEdgeLB ({binding.key}'s part of pool {binding.pool or NONE}):")
    print(indent(comparison["message"]))
    if comparison.get("diff"):
        print(indent(comparison["diff"].rstrip("\n")))
    if code:
        note(f"error: {comparison['message']}")
    return code


def _config_in_annotation_order(config: dict[str, Any]) -> dict[str, Any]:
    # The database keeps JSON with sorted keys; the operator compares this with the annotation,
    # which dklb writes in the configuration object's own order.
    try:
        return PoolConfig.from_dict(config).to_dict()
    except (KeyError, TypeError, ValueError):
        return config


def _wakeup_text(binding: Binding, has_handler: bool, at: datetime) -> str:
    if binding.next_wakeup is None:
        if not has_handler:
            return f"{NONE} (state {binding.state} waits for the user to change the Service)"
        return f"{NONE} (waits for a change of the Service or its pool)"
    text = f"{timestamp(binding.next_wakeup)} ({relative(binding.next_wakeup, at)})"
    if overdue(binding, at):
        text += ": overdue, is a controller running and leading on this database?"
    elif binding.last_error:
        text += f": retry {binding.attempts + 1}"
    return text


def _removing(binding: Binding) -> bool:
    """The binding's state removes its objects from the pool (it wants none)."""
    spec = machine().states.get(binding.state)
    return spec is not None and not spec.wants_objects
