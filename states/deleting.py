"""Deleting: take this Service out of its pool and release the Service.

Runs under the pool's lock. Removes the frontends and backends this Service owns (the pool is
recomputed from the remaining bindings, so foreign objects and other Services' objects stay);
deletes the pool only when dklb created it (the pools table, or after a lost database this
cluster's mark on the pool: ``states.pool.created_by_dklb``), nothing is left in it and no other
binding refers to it; a pool someone else made is never deleted. Then it clears the
Service's status and removes the finalizer, last, so that a crash anywhere before leaves the
Service held and the clean-up is retried; while EdgeLB does not answer, the Warning Events say
why the Service is kept. A binding never accepted into a pool owns nothing in EdgeLB: its Service
is released at once, without asking EdgeLB. Fires ``deleted``; the binding row goes, its history
stays.
"""

from __future__ import annotations

from engine.contract import Context, Fire, Outcome
from engine.model.parse import parse_config
from engine.model.services import ANNOTATION
from states.pool import take_out


def enter(ctx: Context) -> Outcome:
    # A binding never accepted into a pool (Rejected, Paused, Pending before any write) has put
    # nothing into EdgeLB: its Service is released at once, even while EdgeLB does not answer.
    owns_objects = ctx.binding.objects is not None
    recorded = ctx.binding.pool
    name = (recorded or _pool_from_annotation(ctx)) if owns_objects else None
    if name is not None:
        # A pool only named by the annotation is not known to be this Service's: its own objects
        # leave it, the pool stays (a forged annotation must not make dklb delete a pool).
        failure = take_out(ctx, name, may_delete=recorded is not None)
        if failure is not None:
            return failure
    service = ctx.service
    if service is not None:
        if ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
            ctx.kube.set_ingress(service, [])
        ctx.kube.remove_finalizer(service)
    if not owns_objects:
        return Fire("deleted", reason="Deleted", message="Released the Service: it had nothing in EdgeLB")
    where = f' from EdgeLB pool "{name}"' if name else ""
    return Fire("deleted", reason="Deleted", message=f"Deleted the load balancer of this Service{where}")


def _pool_from_annotation(ctx: Context) -> str | None:
    """The pool a binding that never got recorded may still have objects in (lost database)."""
    if ctx.service is None:
        return None
    text = ((ctx.service.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not text:
        return None
    result = parse_config(text, service_ports=[], cluster_name=ctx.settings.cluster_name, rng=ctx.rng)
    return result.config.name if result.config else None
