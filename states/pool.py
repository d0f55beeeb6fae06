"""The desired content of one EdgeLB pool, derived from every binding recorded on it.

Provisioning and Deleting both ask: given what EdgeLB has now, what must the pool hold? The
answer comes from the database, not from the one binding being handled: the objects of every
binding on the pool that is not being deleted, plus every object dklb does not own. So when
ten Services join a pool at once, the first PUT already carries all ten and the others find
nothing to write — changes to one pool coalesce.
"""

from __future__ import annotations

from typing import Any

from engine.contract import Context
from engine.model.config import PoolConfig
from engine.model.translation import compose_pool


def desired_pool(ctx: Context, base: dict[str, Any], *, pool: str, apply_settings: bool) -> dict[str, Any]:
    """``base`` with the objects of every binding on ``pool`` set to what they should be now."""
    bindings = ctx.store.bindings(pool=pool)
    owners = {(b.namespace, b.name) for b in bindings}
    owners.add((ctx.binding.namespace, ctx.binding.name))
    frontends: list[dict[str, Any]] = []
    backends: list[dict[str, Any]] = []
    for b in bindings:
        if b.state == "Deleting" or not b.objects:
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


def frontend_port_clash(pool: dict[str, Any], *, owned: set[str]) -> str | None:
    """A message when one of ``owned`` frontends binds a port another frontend of the pool binds."""
    by_port: dict[int, list[str]] = {}
    for fe in (pool.get("haproxy") or {}).get("frontends") or []:
        port = fe.get("bindPort")
        if port:
            by_port.setdefault(int(port), []).append(str(fe.get("name", "")))
    for port, names in sorted(by_port.items()):
        mine = [n for n in names if n in owned]
        if mine and len(names) > 1:
            others = [n for n in names if n not in owned] or names[1:]
            return (
                f'frontend port {port} is already bound by frontend "{others[0]}" '
                f'of EdgeLB pool "{pool.get("name")}"'
            )
    return None
