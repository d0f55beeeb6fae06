"""Guards of the ``accept`` transition: may this Service join the pool it names?

The engine runs them under the pool's lock just before committing ``accept``, against the
bindings already recorded on that pool, so two Services racing for one pool are judged one
after the other. A guard returns None to allow, or the message of the rejection: the later
Service is rejected and the pool's settings never flip.
"""

from __future__ import annotations

from engine.contract import Context, Fire
from engine.model.config import PoolConfig
from engine.store import Binding
from states.pool import LEAVING


def _others(ctx: Context, pool: str) -> list[Binding]:
    return [
        b
        for b in ctx.store.bindings(pool=pool)
        if b.id != ctx.binding.id and b.state not in LEAVING and b.config is not None
    ]


def shares_pool_settings(ctx: Context, fire: Fire) -> str | None:
    mine = PoolConfig.from_dict(fire.updates["config"])
    wanted = mine.shared_settings()
    for other in _others(ctx, mine.name):
        theirs = PoolConfig.from_dict(other.config or {}).shared_settings()
        differing = [k for k in wanted if wanted[k] != theirs[k]]
        if differing:
            details = ", ".join(f"{k} {wanted[k]!r} (pool has {theirs[k]!r})" for k in differing)
            return (
                f'EdgeLB pool "{mine.name}" is shared with Service {other.key}, and this Service asks for '
                f"{details}: role, network, cpus, memory and size must be equal across the Services "
                "sharing a pool; the pool was not changed"
            )
    return None


def no_frontend_port_clash(ctx: Context, fire: Fire) -> str | None:
    mine = PoolConfig.from_dict(fire.updates["config"])
    ports = {f.port for f in mine.frontends if f.port}
    for other in _others(ctx, mine.name):
        theirs = {f.port for f in PoolConfig.from_dict(other.config or {}).frontends}
        clash = sorted(ports & theirs)
        if clash:
            return (
                f'frontend port {", ".join(map(str, clash))} of EdgeLB pool "{mine.name}" is already used by '
                f"Service {other.key}; choose another port in the frontends field"
            )
    return None
