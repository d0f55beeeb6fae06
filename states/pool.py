"""The desired content of one EdgeLB pool, derived from every binding recorded on it.

Provisioning and Deleting both ask: given what EdgeLB has now, what must the pool hold? The
answer comes from the database, not from the one binding being handled: the objects of every
binding on the pool that is not being deleted, plus every object dklb does not own. So when
ten Services join a pool at once, the first PUT already carries all ten and the others find
nothing to write — changes to one pool coalesce.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.contract import Context, Retry
from engine.edgelb.errors import EdgeLBError, NotFound
from engine.model.config import PoolConfig
from engine.model.tenancy import LEAVING
from engine.model.translation import compose_pool, is_empty, owner_of, same_pool
from engine.model.translation import created_by_dklb as marked_by_dklb
from engine.store import Binding


def desired_pool(
    ctx: Context,
    base: dict[str, Any],
    *,
    pool: str,
    apply_settings: bool,
    bindings: Sequence[Binding] | None = None,
) -> dict[str, Any]:
    """``base`` with the objects of every binding on ``pool`` set to what they should be now
    (``bindings``: the bindings on ``pool`` as the caller just read them, else read here)."""
    if bindings is None:
        bindings = ctx.store.bindings(pool=pool)
    owners = {(b.namespace, b.name) for b in bindings}
    owners.add((ctx.binding.namespace, ctx.binding.name))
    frontends: list[dict[str, Any]] = []
    backends: list[dict[str, Any]] = []
    for b in bindings:
        if b.state in LEAVING or not b.objects:
            continue
        frontends += b.objects["frontends"]
        backends += b.objects["backends"]
    settings = None
    if apply_settings and ctx.binding.config is not None:
        settings = PoolConfig.from_dict(ctx.binding.config)
    return compose_pool(
        base,
        cluster=ctx.settings.cluster_name,
        owners=sorted(owners),
        frontends=frontends,
        backends=backends,
        settings=settings,
    )


def take_out(ctx: Context, name: str, *, may_delete: bool) -> Retry | None:
    """Remove this binding's objects from pool ``name`` (it must be in a ``LEAVING`` state).

    The pool is deleted only when ``may_delete``, dklb created it (``created_by_dklb``) and
    nothing is left: no object of anyone else (foreign or another Service's) and no other binding
    referring to it. None when done (also when the pool is gone), a Retry otherwise."""
    kept = "the Service is kept (finalizer) until its load balancer objects are removed"
    try:
        actual = ctx.edgelb.get_pool(name)
    except NotFound:
        return None
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'reading EdgeLB pool "{name}" failed: {exc}; {kept}')
    desired = desired_pool(ctx, actual, pool=name, apply_settings=False)
    others = [b for b in ctx.store.bindings(pool=name) if b.id != ctx.binding.id]
    try:
        if is_empty(desired) and not others and may_delete and created_by_dklb(ctx, name, actual):
            ctx.edgelb.delete_pool(name)
        elif not same_pool(actual, desired):
            ctx.edgelb.update_pool(desired)
    except NotFound:
        return None
    except EdgeLBError as exc:
        return Retry(
            "EdgeLBUnavailable", f'removing this Service from EdgeLB pool "{name}" failed: {exc}; {kept}'
        )
    return None


def created_by_dklb(ctx: Context, name: str, actual: dict[str, Any]) -> bool:
    """dklb created pool ``name`` (so it may delete it): the pools table says so (a pool found
    made by someone else stays theirs), or, without a record (a lost database), the pool carries
    this cluster's mark. A pool without either is never deleted, whatever it holds."""
    record = ctx.store.pool(name)
    if record is not None and (record.created_by_dklb or record.pre_existing):
        return record.created_by_dklb
    return marked_by_dklb(actual, cluster=ctx.settings.cluster_name)


def frontend_port_clash(pool: dict[str, Any], *, owned: set[str], namespace: str, cluster: str) -> str | None:
    """A message when one of ``owned`` frontends binds a port another frontend, or the pool's
    HAProxy stats, binds (EdgeLB refuses a pool with a port bound twice, whatever the address).
    A frontend of another ``namespace`` (or of no dklb of ``cluster``) is not named: the message
    goes to this Service's namespace."""
    haproxy = pool.get("haproxy") or {}
    by_port: dict[int, list[str]] = {}
    stats_port = (haproxy.get("stats") or {}).get("bindPort")
    if isinstance(stats_port, int) and stats_port > 0:
        by_port[stats_port] = [STATS]
    for fe in haproxy.get("frontends") or []:
        port = fe.get("bindPort")
        if port:
            by_port.setdefault(int(port), []).append(str(fe.get("name", "")))
    for port, names in sorted(by_port.items()):
        mine = [n for n in names if n in owned]
        if mine and len(names) > 1:
            other = ([n for n in names if n not in owned] or names[1:])[0]
            holder = "the HAProxy stats" if other == STATS else _frontend(other, namespace, cluster)
            return f'frontend port {port} is already bound by {holder} of EdgeLB pool "{pool.get("name")}"'
    return None


def _frontend(name: str, namespace: str, cluster: str) -> str:
    owner = owner_of(name, cluster=cluster)
    if owner is not None:
        return f'frontend "{name}"' if owner[0][0] == namespace else "a frontend of another namespace"
    parts = name.split(":")
    if len(parts) >= 4 and parts[-1].isdigit():
        # Named by the dklb of another cluster sharing this EdgeLB: it names a namespace too.
        return "a frontend of another cluster's dklb"
    return f'frontend "{name}"'  # the operators' own


# Stands for the stats listener among frontend names (no frontend can be named so: no ":").
STATS = "<stats>"

# The pool fields a Service's configuration sets, and how EdgeLB names them.
_SETTINGS = (("cpus", "cpus"), ("memory", "mem"), ("size", "count"))


def ignored_settings(config: PoolConfig, pool: dict[str, Any]) -> list[str]:
    """What this Service asks of a pool dklb does not own that the pool does not have: not applied."""
    wanted = config.shared_settings()
    differing = [
        f"{field} {_number(wanted[field])} (the pool has {_number(pool.get(key))})"
        for field, key in _SETTINGS
        if pool.get(key) is not None and not _same_number(pool.get(key), wanted[field])
    ]
    if not differing:
        return []
    return [
        f'EdgeLB pool "{pool.get("name")}" was not made by dklb: its settings are not changed, '
        f"so this Service's {', '.join(differing)} is not applied"
    ]


def _same_number(a: Any, b: Any) -> bool:
    # A server storing cpus as float32 returns 0.10000000149011612 for 0.1.
    try:
        return round(float(a), 6) == round(float(b), 6)
    except (TypeError, ValueError):
        return a == b


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else repr(value)
