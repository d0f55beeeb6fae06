"""AwaitingMetadata: wait for the pool to report where this Service can be reached.

Polls ``GET /v2/pools/{name}/metadata`` (404/504 are "not yet", with backing-off polls) until
the frontends this binding owns have addresses, then writes them into the Service's
``status.loadBalancer.ingress`` and fires ``addresses_found``. A pool that has vanished sends
the binding back to Provisioning (``drift``).
"""

from __future__ import annotations

from engine.contract import Context, Fire, Outcome, Poll, Retry
from engine.edgelb.errors import EdgeLBError, NotFound, Unavailable
from engine.model.translation import ingress_from_metadata


def enter(ctx: Context) -> Outcome:
    binding = ctx.binding
    assert binding.pool is not None and binding.objects is not None
    name = binding.pool
    try:
        metadata = ctx.edgelb.get_metadata(name)
    except NotFound:
        return Fire("drift", reason="PoolMissing", message=f'EdgeLB pool "{name}" does not exist (anymore)')
    except Unavailable as exc:
        if exc.status == 504:
            return Poll("MetadataNotReady", f'EdgeLB pool "{name}" has not reported its metadata yet')
        return Retry("EdgeLBUnavailable", f'reading the metadata of EdgeLB pool "{name}" failed: {exc}')
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'reading the metadata of EdgeLB pool "{name}" failed: {exc}')
    ingress = ingress_from_metadata(
        metadata, frontend_names=[fe["name"] for fe in binding.objects["frontends"]]
    )
    if not ingress:
        return Poll("NoAddressesYet", f'EdgeLB pool "{name}" reports no address for this Service yet')
    if ctx.service is not None:
        ctx.kube.set_ingress(ctx.service, ingress)
    addresses = ", ".join(i.get("hostname") or i.get("ip", "") for i in ingress)
    return Fire("addresses_found", reason="AddressesFound", message=addresses, pool_served=True)
