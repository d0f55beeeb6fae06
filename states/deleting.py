"""Deleting: take this Service out of its pool and release the Service.

Runs under the pool's lock. Removes the frontends and backends this Service owns (the pool is
recomputed from the remaining bindings, so foreign objects and other Services' objects stay);
deletes the pool when nothing is left in it and no other binding refers to it; then clears the
Service's status and removes the finalizer, last, so that a crash anywhere before leaves the
Service held and the clean-up is retried. Fires ``deleted``; the binding row goes, its history
stays.
"""

from __future__ import annotations

from engine.contract import Context, Fire, Outcome, Retry
from engine.edgelb.errors import EdgeLBError, NotFound
from engine.model.parse import parse_config
from engine.model.services import ANNOTATION
from engine.model.translation import is_empty, same_pool
from states.pool import desired_pool


def enter(ctx: Context) -> Outcome:
    name = ctx.binding.pool or _pool_from_annotation(ctx)
    if name is not None:
        failure = _remove_from_pool(ctx, name)
        if failure is not None:
            return failure
    service = ctx.service
    if service is not None:
        if ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
            ctx.kube.set_ingress(service, [])
        ctx.kube.remove_finalizer(service)
    where = f' from EdgeLB pool "{name}"' if name else ""
    return Fire("deleted", reason="Deleted", message=f"Deleted the load balancer of this Service{where}")


def _remove_from_pool(ctx: Context, name: str) -> Outcome | None:
    try:
        actual = ctx.edgelb.get_pool(name)
    except NotFound:
        return None
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'reading EdgeLB pool "{name}" failed: {exc}')
    desired = desired_pool(ctx, actual, pool=name, apply_settings=False)
    others = [b for b in ctx.store.bindings(pool=name) if b.id != ctx.binding.id]
    try:
        if is_empty(desired) and not others:
            ctx.edgelb.delete_pool(name)
        elif not same_pool(actual, desired):
            ctx.edgelb.update_pool(desired)
    except NotFound:
        return None
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'removing this Service from EdgeLB pool "{name}" failed: {exc}')
    return None


def _pool_from_annotation(ctx: Context) -> str | None:
    """The pool a binding that never got recorded may still have objects in (lost database)."""
    if ctx.service is None:
        return None
    text = ((ctx.service.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not text:
        return None
    result = parse_config(text, service_ports=[], cluster_name=ctx.settings.cluster_name, rng=ctx.rng)
    return result.config.name if result.config else None
