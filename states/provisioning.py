"""Provisioning: make the EdgeLB pool hold exactly what the bindings on it want.

Runs under the pool's lock. Reads the pool; when it is missing, creates it (unless the
creation strategy forbids it); when it exists, composes the desired pool (every binding's
objects, every foreign object kept) and PUTs it only if it differs after normalization. The
pool-level settings (cpus, memory, size...) are applied only to a pool dklb made: the pools
table says so, or the pool carries the mark dklb puts into the pools it creates, or it holds
only objects named by a dklb of this cluster (the Go dklb marked nothing)
(``engine.model.translation.made_by_a_dklb``), which is then recorded. A pool found to be
someone else's is recorded as such and never adopted; a settings edit it ignores is a Warning.
Every step is safe to repeat after a crash: a re-run reads the pool again and writes only what
is still missing. Fires ``provisioned``, or ``reject`` when the pool itself refuses this Service
(a frontend or stats port already bound) or EdgeLB refuses the body (400/422: sending it again
cannot help); EdgeLB failures are retried with backoff.
"""

from __future__ import annotations

from typing import Any

from engine.contract import Context, Fire, Outcome, Retry, warning
from engine.edgelb.errors import Conflict, EdgeLBError, Invalid, NotFound
from engine.model.config import PoolConfig
from engine.model.translation import made_by_a_dklb, new_pool, same_pool
from states.pool import desired_pool, frontend_port_clash, ignored_settings


def enter(ctx: Context) -> Outcome:
    binding = ctx.binding
    assert binding.pool is not None and binding.config is not None and binding.objects is not None
    config = PoolConfig.from_dict(binding.config)
    name = binding.pool
    try:
        actual = ctx.edgelb.get_pool(name)
    except NotFound:
        actual = None
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'reading EdgeLB pool "{name}" failed: {exc}')

    if actual is None:
        return _create(ctx, config)

    record = ctx.store.pool(name)
    recorded = bool(record and record.created_by_dklb)
    known_foreign = bool(record and record.pre_existing)
    # Not recorded, yet marked as dklb's for this cluster (the database was lost, or never saw the
    # creation commit), or holding only objects named by a dklb of this cluster (the Go dklb made
    # it, and marked nothing): the pool is dklb's, and the provisioned commit says so. A pool
    # found to be someone else's once stays theirs, even when it later holds only dklb's objects.
    adopted = not recorded and not known_foreign and made_by_a_dklb(actual, cluster=ctx.settings.cluster_name)
    owned = recorded or adopted
    marks: dict[str, Any] = {"pool_created_by_dklb": True} if adopted else {}
    if not owned and not known_foreign:
        marks["pool_pre_existing"] = True
    desired = desired_pool(ctx, actual, pool=name, apply_settings=owned)
    clash = frontend_port_clash(desired, owned={fe["name"] for fe in binding.objects["frontends"]})
    if clash:
        return Fire(
            "reject", reason="FrontendPortInUse", message=clash, events=(warning("FrontendPortInUse", clash),)
        )
    events = (
        () if owned else tuple(warning("PoolSettingsIgnored", m) for m in ignored_settings(config, actual))
    )
    if same_pool(actual, desired):
        return Fire(
            "provisioned",
            reason="PoolUpToDate",
            message=f'EdgeLB pool "{name}" already up to date',
            events=events,
            **marks,
        )
    try:
        ctx.edgelb.update_pool(desired)
    except NotFound:
        return Retry(
            "PoolVanished", f'EdgeLB pool "{name}" disappeared while updating it; it will be re-created'
        )
    except Invalid as exc:
        return _refused(f'EdgeLB refused the update of pool "{name}": {exc.message}')
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'updating EdgeLB pool "{name}" failed: {exc}')
    message = f'EdgeLB pool "{name}" updated'
    return Fire("provisioned", reason="PoolUpdated", message=message, events=events, **marks)


def _refused(message: str) -> Fire:
    # EdgeLB judged the body (400/422): sending it again cannot help; the user must change the Service.
    return Fire(
        "reject",
        reason="EdgeLBRejectedPool",
        message=message,
        events=(warning("EdgeLBRejectedPool", message),),
    )


def _create(ctx: Context, config: PoolConfig) -> Outcome:
    name = config.name
    record = ctx.store.pool(name)
    if config.creation_strategy == "Never":
        return Retry(
            "PoolNotFound",
            f'EdgeLB pool "{name}" does not exist and strategies.creation is "Never": '
            "create the pool in EdgeLB, or change the strategy",
        )
    if config.creation_strategy == "Once" and record is not None and record.served:
        return Retry(
            "PoolDeleted",
            f'EdgeLB pool "{name}" was deleted after it served and strategies.creation is "Once": '
            "it is not re-created; re-create it in EdgeLB or change the strategy",
        )
    if record is None or not record.created_by_dklb:
        return Fire(
            "claim_pool",
            reason="CreatingPool",
            message=f'EdgeLB pool "{name}" does not exist: dklb creates it and owns its settings',
            pool_created_by_dklb=True,
        )
    empty = {"name": name, "haproxy": {"frontends": [], "backends": []}}
    composed = desired_pool(ctx, empty, pool=name, apply_settings=True)
    haproxy = composed.get("haproxy") or {}
    body = new_pool(
        settings=config,
        pool_group=ctx.settings.pool_group,
        frontends=haproxy.get("frontends") or [],
        backends=haproxy.get("backends") or [],
        created_by=ctx.settings.cluster_name,
    )
    try:
        ctx.edgelb.create_pool(body)
    except Conflict:
        return Retry("PoolExists", f'EdgeLB pool "{name}" appeared while creating it; merging into it next')
    except Invalid as exc:
        return _refused(f'EdgeLB refused to create pool "{name}": {exc.message}')
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'creating EdgeLB pool "{name}" failed: {exc}')
    return Fire("provisioned", reason="PoolCreated", message=f'EdgeLB pool "{name}" created')
