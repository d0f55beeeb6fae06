"""AwaitingMetadata: wait for the pool to report where this Service can be reached.

Polls ``GET /v2/pools/{name}/metadata`` until the frontends this binding owns have addresses,
then writes them into the Service's ``status.loadBalancer.ingress`` and fires
``addresses_found``. 504 and 404 are "not yet", with backing-off polls: EdgeLB answers 404 for
an existing pool when it has no metadata route (the Go dklb read both as "not available"), so a
404 sends the binding back to Provisioning (``drift``) only when the pool itself is gone. After
a while without addresses, a Warning says so (once per ``WARN_EVERY`` polls).
"""

from __future__ import annotations

from engine.contract import Context, Fire, Outcome, Poll, Retry, warning
from engine.edgelb.errors import EdgeLBError, NotFound, Unavailable
from engine.model.translation import ingress_from_metadata

# With the declared poll backoff (1 s x1.5, capped at 30 s) the 10th poll comes after ~2 minutes,
# then one every ~5 minutes: long enough for a pool's instances to start, not a flood of Events.
WARN_EVERY = 10


def enter(ctx: Context) -> Outcome:
    binding = ctx.binding
    assert binding.pool is not None and binding.objects is not None
    name = binding.pool
    try:
        metadata = ctx.edgelb.get_metadata(name)
    except NotFound:
        return _metadata_not_found(ctx, name)
    except Unavailable as exc:
        if exc.status == 504:
            return _not_yet(
                ctx, "MetadataNotReady", f'EdgeLB pool "{name}" has not reported its metadata yet'
            )
        return Retry("EdgeLBUnavailable", f'reading the metadata of EdgeLB pool "{name}" failed: {exc}')
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'reading the metadata of EdgeLB pool "{name}" failed: {exc}')
    ingress = ingress_from_metadata(
        metadata, frontend_names=[fe["name"] for fe in binding.objects["frontends"]]
    )
    if not ingress:
        return _not_yet(
            ctx, "NoAddressesYet", f'EdgeLB pool "{name}" reports no address for this Service yet'
        )
    if ctx.service is not None:
        ctx.kube.set_ingress(ctx.service, ingress)
    addresses = ", ".join(i.get("hostname") or i.get("ip", "") for i in ingress)
    return Fire("addresses_found", reason="AddressesFound", message=addresses, pool_served=True)


def _metadata_not_found(ctx: Context, name: str) -> Outcome:
    try:
        ctx.edgelb.get_pool(name)
    except NotFound:
        return Fire("drift", reason="PoolMissing", message=f'EdgeLB pool "{name}" does not exist (anymore)')
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'reading EdgeLB pool "{name}" failed: {exc}')
    return _not_yet(
        ctx, "MetadataNotFound", f'EdgeLB pool "{name}" exists but its metadata is not found (404) yet'
    )


def _not_yet(ctx: Context, reason: str, message: str) -> Poll:
    polls = ctx.binding.attempts + 1
    if polls % WARN_EVERY:
        return Poll(reason, message)
    since = int((ctx.now - ctx.binding.state_since).total_seconds())
    warned = (
        f"{message}: still no address for this Service after {since} s; "
        "the pool's load balancers may not be running"
    )
    return Poll(reason, message, events=(warning(reason, warned),))
