"""Pending: read the Service's configuration object and decide the pool.

Entered when a LoadBalancer Service is first seen and whenever its inputs change. Parses, defaults
and validates the ``kubernetes.dcos.io/dklb-config`` annotation, checks the fields that cannot
change, then adds the finalizer and writes the defaulted object back into the annotation in one
write (repeating it after a crash changes nothing). Fires ``accept`` (guarded by the tenancy and
sharing rules, ``states.guards``), ``reject``, ``pause``, or ``move`` when the binding is on
another pool than the configuration names (a cloud load balancer was added). A Service EdgeLB
could not reach yet (a port without nodePort; no Ready Node in the address backend mode) is a
Warning and a wait in Rejected until the Service or the Nodes change, never a pool EdgeLB refuses.
Nothing in EdgeLB is touched here.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.contract import Context, Fire, Outcome, warning
from engine.model.checks import check_service
from engine.model.config import PoolConfig
from engine.model.services import is_paused, shared_pool_key
from engine.model.translation import ServicePort, service_objects
from states.observe import fingerprint


def enter(ctx: Context) -> Outcome:
    service = ctx.service
    assert service is not None, "Pending runs only for an observed LoadBalancer Service"
    meta = service.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    seen = fingerprint(service, nodes=ctx.node_addresses, policy=ctx.settings.policy_digest)
    if is_paused(annotations):
        return Fire(
            "pause",
            reason="Paused",
            message='the Service is paused: annotation kubernetes.dcos.io/dklb-paused is "true" '
            "(only that exact value pauses); the EdgeLB pool is left as it is",
            events=(
                warning(
                    "Paused",
                    'kubernetes.dcos.io/dklb-paused is "true" (only that exact value pauses): '
                    "EdgeLB is not updated until it is removed or changed",
                ),
            ),
            updates={"fingerprint": seen},
        )

    check = check_service(
        service,
        previous=PoolConfig.from_dict(ctx.binding.config) if ctx.binding.config is not None else None,
        cluster_name=ctx.settings.cluster_name,
        default_size=ctx.settings.default_pool_size,
        pool_group=ctx.settings.pool_group,
        rng=ctx.rng,
        limits=ctx.settings.limits,
    )
    config = check.config
    if config is None:
        return Fire(
            "reject",
            reason="InvalidConfiguration",
            message=check.message,
            events=(
                warning("InvalidConfiguration", check.message),
                *(warning("ConfigurationWarning", n) for n in check.port_warnings),
            ),
            updates={"fingerprint": seen},
        )

    unready = _unready_backends(ctx, check.ports)
    if unready is not None:
        # A pool with port 0 or a backend with no service is refused by EdgeLB. Waiting in
        # Rejected: the fingerprint covers the ports and the Nodes, so either changing sends the
        # binding back here at once.
        return Fire(
            "reject",
            reason="BackendsNotReady",
            message=unready,
            events=(warning("BackendsNotReady", unready),),
            updates={"fingerprint": seen},
        )

    # One write: the finalizer, and the defaulted object unless the annotation already says it.
    written = config.to_annotation()
    annotation = written if check.text != written else None
    service = ctx.kube.add_finalizer(service, annotation=annotation) or service
    accepted = fingerprint(
        service, annotation=written, nodes=ctx.node_addresses, policy=ctx.settings.policy_digest
    )
    if ctx.binding.pool is not None and ctx.binding.objects is not None and ctx.binding.pool != config.name:
        return Fire(
            "move",
            reason="PoolChanged",
            message=f'the Service now names EdgeLB pool "{config.name}"',
            updates={"fingerprint": accepted},
        )
    frontends, backends = service_objects(
        cluster=ctx.settings.cluster_name,
        namespace=meta["namespace"],
        service=meta["name"],
        ports=check.ports,
        bind_ports={f.service_port: f.port for f in config.frontends},
        dynamic_ports=config.cloud_provider_configuration is not None,
        backend_mode=ctx.settings.backend_mode,
        node_addresses=ctx.node_addresses,
    )
    return Fire(
        "accept",
        reason="Accepted",
        message=f"EdgeLB pool {config.name}",
        events=tuple(warning("ConfigurationWarning", n) for n in check.warnings),
        updates={
            "config": config.to_dict(),
            "pool": config.name,
            "objects": {"frontends": frontends, "backends": backends},
            "fingerprint": accepted,
            "uid": meta.get("uid", ""),
            "shared_pool_key": shared_pool_key(service),
        },
    )


def _unready_backends(ctx: Context, ports: Sequence[ServicePort]) -> str | None:
    """Why this Service's backends cannot point anywhere yet, or None when they can."""
    missing = [str(p.port) for p in ports if not p.node_port]
    if missing:
        return (
            f"port {', '.join(missing)} has no nodePort (spec.allocateLoadBalancerNodePorts is false, "
            "or none is allocated yet): EdgeLB reaches the Service through its node ports; "
            "waiting for one"
        )
    if ctx.settings.backend_mode == "address" and not ctx.node_addresses:
        return "no Node is Ready: the backends (--backend-mode address) have no address to point at; waiting"
    return None
