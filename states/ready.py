"""Ready: confirm that the pool still holds what this Service needs, when something says it may not.

The handler runs when woken, not on a timer of its own: by the pool sweep
(``engine.runtime.poolsweep``: the one pool listing per resync period showed this binding's pool
missing or its objects different, or at start-up its Service had no address), by the metadata
refresh (the pool's metadata gives other addresses than the Service's status), after an EdgeLB
outage, or by the day-long backstop ``lifecycle.yaml`` declares. It reads, it never trusts the
listing: the objects this Service owns in the pool (``GET`` of the pool itself) are compared
with the recorded ones after normalization (server-filled defaults do not count as changes),
so a settled binding causes zero EdgeLB and Kubernetes writes and a stale or partial listing
fires nothing. A pool deleted or modified out of band fires ``drift`` (back to Provisioning);
new addresses in the metadata refresh the status.
"""

from __future__ import annotations

from typing import Any

from engine.contract import Context, Fire, Outcome, Retry, Stay
from engine.edgelb.errors import EdgeLBError, NotFound
from engine.model.translation import ingress_from_metadata, normalized_objects, owned_part


def enter(ctx: Context) -> Outcome:
    binding = ctx.binding
    assert binding.pool is not None and binding.objects is not None
    name = binding.pool
    try:
        actual = ctx.edgelb.get_pool(name)
    except NotFound:
        return Fire("drift", reason="PoolMissing", message=f'EdgeLB pool "{name}" was deleted out of band')
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'verifying EdgeLB pool "{name}" failed: {exc}')
    owner = (binding.namespace, binding.name)
    if owned_part(actual, cluster=ctx.settings.cluster_name, owner=owner) != normalized_objects(
        binding.objects
    ):
        return Fire("drift", reason="PoolModified", message=f'EdgeLB pool "{name}" was modified out of band')
    try:
        metadata = ctx.edgelb.get_metadata(name)
    except EdgeLBError:
        # Addresses are refreshed opportunistically; the binding stays Ready on a transient failure.
        return Stay()
    ingress = ingress_from_metadata(
        metadata, frontend_names=[fe["name"] for fe in binding.objects["frontends"]]
    )
    if ingress and ctx.service is not None and ingress != _current_ingress(ctx.service):
        ctx.kube.set_ingress(ctx.service, ingress)
    return Stay()


def _current_ingress(service: dict[str, Any]) -> list[dict[str, str]]:
    return ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
