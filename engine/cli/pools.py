"""``dklb pools``: like ``dcos edgelb list``, plus the bindings on each pool.

Where it sits in the data flow: the pools table of the store (reference counts, created by dklb
or not) and the bindings referring to each pool, read-only; with EdgeLB flags, the pools EdgeLB
has now (``EdgeLB.list_pools``), otherwise the pools the recorded configurations ask for (what
dklb would create). ``pool_summary`` is also the demo's ``dcos edgelb list``.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

from engine.cli import bindings, database, options
from engine.cli.bindings import machine
from engine.cli.options import UsageError
from engine.cli.output import emit, note, table, yes_no
from engine.edgelb.errors import EdgeLBError
from engine.edgelb.schema import POOL_DEFAULTS
from engine.model.config import PoolConfig
from engine.model.translation import new_pool, pool_ports
from engine.store import Binding
from engine.store.migrate import open_read_only

#: Columns of a pool's bindings in the table; ``--wide`` lists them all.
BINDINGS_WIDTH = 50
SUMMARY_COLUMNS = ("NAME", "APIVERSION", "COUNT", "ROLE", "PORTS")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Like `dcos edgelb list`, plus what the database knows: the bindings referencing "
        "each pool, whether dklb created it, and its reference count. With EdgeLB flags, the "
        "pool columns come from EdgeLB; without, from the recorded configurations. Reads the "
        "database read-only.",
        90,
    )
    parser.epilog = (
        "examples:\n"
        "  dklb pools\n"
        "  dklb pools --edgelb-url http://127.0.0.1:8080\n"
        "  dklb pools --edgelb-host api.edgelb.marathon.l4lb.thisdcos.directory -o yaml"
    )
    options.wide(parser, help="list every binding of a pool")
    database.flags(parser)
    options.output(parser, ("table", "json", "yaml"), "table")
    options.edgelb(
        parser, title="EdgeLB (optional: list the pools EdgeLB has now)", host=None, request_timeout=10.0
    )
    parser.set_defaults(func=run)


def pool_summary(pool: dict[str, Any]) -> dict[str, Any]:
    """What ``dcos edgelb list`` shows of a pool: name, apiVersion, count, role, frontend ports."""
    try:
        ports = pool_ports(pool)
    except (TypeError, ValueError, AttributeError):
        # A pool someone else wrote by hand may not parse; listing must not die on it.
        ports = []
    return {
        "name": pool.get("name"),
        "apiVersion": pool.get("apiVersion"),
        "count": pool.get("count"),
        "role": pool.get("role"),
        "ports": ports,
    }


def summary_row(summary: dict[str, Any]) -> tuple[Any, ...]:
    """A ``pool_summary`` as a row under ``SUMMARY_COLUMNS``."""
    ports = summary["ports"]
    return (
        summary["name"],
        summary["apiVersion"],
        summary["count"],
        summary["role"],
        ", ".join(str(p) for p in ports) if ports else None,
    )


def run(args: argparse.Namespace) -> int:
    store = open_read_only(database.resolve(args).url)
    try:
        recorded = {p.name: p for p in store.pools()}
        members: dict[str, list[Binding]] = {}
        for b in store.bindings():
            if b.pool is not None:
                members.setdefault(b.pool, []).append(b)
    finally:
        store.close()

    live: dict[str, dict[str, Any]] | None = None
    with bindings.edgelb_to_read(args) as (edgelb, where):
        if edgelb is not None:
            try:
                live = {str(p.get("name")): p for p in edgelb.list_pools() if isinstance(p, dict)}
            except EdgeLBError as exc:
                raise UsageError(f"cannot list the pools of {where}: {exc}") from None

    items: list[dict[str, Any]] = []
    for name in sorted(set(recorded) | set(members) | set(live or {})):
        row = recorded.get(name)
        bound = members.get(name, [])
        pool = live.get(name) if live is not None else _recorded_pool(name, bound)
        summary = pool_summary(pool) if pool else {}
        items.append(
            {
                "name": name,
                **{column: summary.get(column) for column in ("apiVersion", "count", "role", "ports")},
                "bindings": [b.key for b in bound] if row is not None or bound else None,
                "created_by_dklb": row.created_by_dklb if row else None,
                "ref_count": row.ref_count if row else None,
                "in_database": row is not None,
                "in_edgelb": None if live is None else name in live,
                "source": "edgelb" if live is not None else "database",
            }
        )

    if args.output != "table":
        emit(items, args.output)
        return 0
    if not items:
        note("no pools" + (f" in {where} nor" if live is not None else "") + " in the database")
        return 0
    rows = [
        (
            *summary_row(item),
            ", ".join(item["bindings"]) if item["bindings"] else None,
            yes_no(item["created_by_dklb"]),
            item["ref_count"],
        )
        for item in items
    ]
    headers = (*SUMMARY_COLUMNS, "BINDINGS", "CREATED-BY-DKLB", "REFS")
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


def _recorded_pool(name: str, bindings: Sequence[Binding]) -> dict[str, Any] | None:
    """The pool the recorded configurations ask for (what dklb would create), or None if none is."""
    states = machine().states
    configured = [
        b
        for b in bindings
        if b.config is not None and (b.state not in states or states[b.state].wants_objects)
    ]
    if not configured:
        return None
    # Services sharing a pool must agree on its settings (a guard), so the first one speaks for all.
    settings = PoolConfig.from_dict(configured[0].config or {})
    frontends = [fe for b in configured for fe in (b.objects or {}).get("frontends") or []]
    backends = [be for b in configured for be in (b.objects or {}).get("backends") or []]
    # The pool group is not shown: EdgeLB's default stands in for the controller's flag.
    pool = new_pool(
        settings=settings, pool_group=POOL_DEFAULTS["namespace"], frontends=frontends, backends=backends
    )
    pool.setdefault("apiVersion", POOL_DEFAULTS["apiVersion"])
    pool["name"] = name
    return pool
