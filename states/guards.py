"""Guards of the ``accept`` transition: may this Service join the pool it names?

The engine runs them under the pool's lock just before committing ``accept``, against the
bindings already recorded on that pool, so two Services racing for one pool are judged one
after the other. A guard returns None to allow, or the message of the rejection: the later
Service is rejected and the pool's settings never flip. ``may_use_pool`` runs first (the
tenancy rule, ``states.tenancy``, against the database's record of the pool, or the pool's marks
in EdgeLB when the database does not know it; Provisioning applies it again against the pool as
EdgeLB has it), so the other guards only ever compare
with Services this one may share with; still, their messages never name a Service of another
namespace, nor its settings.
"""

from __future__ import annotations

import logging
import threading

from engine.contract import Context, Fire
from engine.edgelb.errors import EdgeLBError, NotFound
from engine.model.config import PoolConfig
from engine.model.translation import pool_owner
from engine.store import Binding
from states.pool import LEAVING
from states.provisioning import note_absent
from states.tenancy import Tenant, refusal

log = logging.getLogger("dklb.tenancy")

_SHARED = "role, network, cpus, memory, size, constraints and cloudProviderConfiguration"


# The guards of one transition run one after the other, under the pool's lock, on the same
# ``Fire``: they judge one reading of the pool's bindings (each read decodes every binding's
# configuration and objects), taken by the first guard. Per thread: workers judge in parallel.
_reading = threading.local()


def _others(ctx: Context, fire: Fire, pool: str) -> list[Binding]:
    last = getattr(_reading, "last", None)
    if last is not None and last[0] is fire and last[1] is ctx and last[2] == pool:
        others: list[Binding] = last[3]
        return others
    others = [
        b
        for b in ctx.store.bindings(pool=pool)
        if b.id != ctx.binding.id and b.state not in LEAVING and b.config is not None
    ]
    _reading.last = (fire, ctx, pool, others)
    return others


def may_use_pool(ctx: Context, fire: Fire) -> str | None:
    mine = PoolConfig.from_dict(fire.updates["config"])
    others = _others(ctx, fire, mine.name)
    record = ctx.store.pool(mine.name)
    owner = Tenant(record.namespace, record.shared_pool_key) if record and record.namespace else None
    if not others and (record is None or not (record.created_by_dklb or record.pre_existing)):
        # The database does not know who made the pool (a new pool, or a lost database): its
        # marks say, before this Service is recorded on it and judged against by the pool's owner.
        # Once a Service is on the pool, it was judged so, and the others are judged against it.
        owner = _marked_owner(ctx, mine.name)
    cloud = mine.cloud_provider_configuration is not None or any(
        (o.config or {}).get("cloudProviderConfiguration") is not None for o in others
    )
    refused = refusal(
        mine.name,
        Tenant(ctx.binding.namespace, fire.updates.get("shared_pool_key")),
        others=[Tenant(o.namespace, o.shared_pool_key) for o in others],
        owner=owner,
        pre_existing=bool(record and record.pre_existing),
        cloud=cloud,
        settings=ctx.settings,
    )
    if refused is None:
        return None
    message, details = refused
    log.warning("Service %s may not use EdgeLB pool %s: %s", ctx.binding.key, mine.name, details)
    return message


def _marked_owner(ctx: Context, name: str) -> Tenant | None:
    try:
        mark = pool_owner(ctx.edgelb.get_pool(name), cluster=ctx.settings.cluster_name)
    except NotFound:
        # A new pool: this binding's Provisioning, moments later, creates it without reading again.
        note_absent(name, ctx.binding)
        return None
    except EdgeLBError:
        # Not answering: Provisioning reads the pool and judges again.
        return None
    return Tenant(*mark) if mark is not None else None


def shares_pool_settings(ctx: Context, fire: Fire) -> str | None:
    mine = PoolConfig.from_dict(fire.updates["config"])
    wanted = mine.shared_settings()
    for other in _others(ctx, fire, mine.name):
        theirs = PoolConfig.from_dict(other.config or {}).shared_settings()
        differing = [k for k in wanted if wanted[k] != theirs[k]]
        if not differing:
            continue
        if other.namespace != ctx.binding.namespace:
            log.warning(
                "Service %s differs from %s on EdgeLB pool %s in %s",
                ctx.binding.key,
                other.key,
                mine.name,
                ", ".join(differing),
            )
            asked = ", ".join(f"{k} {wanted[k]!r}" for k in differing)
            return (
                f'EdgeLB pool "{mine.name}" is shared with another namespace, and the pool does not have '
                f"what this Service asks for: {asked}: {_SHARED} must be equal across the Services "
                "sharing a pool; the pool was not changed"
            )
        details = ", ".join(f"{k} {wanted[k]!r} (pool has {theirs[k]!r})" for k in differing)
        return (
            f'EdgeLB pool "{mine.name}" is shared with Service {other.key}, and this Service asks for '
            f"{details}: {_SHARED} must be equal across the Services sharing a pool; the pool was not changed"
        )
    return None


def no_frontend_port_clash(ctx: Context, fire: Fire) -> str | None:
    mine = PoolConfig.from_dict(fire.updates["config"])
    ports = {f.port for f in mine.frontends if f.port}
    for other in _others(ctx, fire, mine.name):
        theirs = {f.port for f in PoolConfig.from_dict(other.config or {}).frontends}
        clash = sorted(ports & theirs)
        if clash:
            holder = (
                f"Service {other.key}" if other.namespace == ctx.binding.namespace else "another namespace"
            )
            return (
                f'frontend port {", ".join(map(str, clash))} of EdgeLB pool "{mine.name}" is already used by '
                f"{holder}; choose another port in the frontends field"
            )
    return None
