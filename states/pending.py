"""Pending: read the Service's configuration object and decide the pool.

Entered when a LoadBalancer Service is first seen and whenever its inputs change. Parses,
defaults and validates the ``kubernetes.dcos.io/dklb-config`` annotation, checks the fields
that cannot change, then (in this order, so a crash between any two is harmless) adds the
finalizer and writes the defaulted object back into the annotation. Fires ``accept`` (guarded
by the sharing rules), ``reject`` or ``pause``. Nothing in EdgeLB is touched here.
"""

from __future__ import annotations

from engine.config import ANNOTATION, PoolConfig, check_transition, is_paused, parse_config
from engine.contract import Context, Fire, Outcome, warning
from engine.translation import exposed_ports, service_objects
from states.observe import fingerprint


def enter(ctx: Context) -> Outcome:
    service = ctx.service
    assert service is not None, "Pending runs only for an observed LoadBalancer Service"
    meta = service.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    seen = fingerprint(service, nodes=ctx.node_addresses)
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

    ports, port_warnings = exposed_ports(service)
    text = annotations.get(ANNOTATION)
    result = parse_config(
        text,
        service_ports=[p.port for p in ports],
        cluster_name=ctx.settings.cluster_name,
        default_size=ctx.settings.default_pool_size,
        rng=ctx.rng,
    )
    errors = list(result.errors)
    if not ports:
        errors.append("the Service has no TCP port to expose")
    if ctx.binding.config is not None:
        previous = PoolConfig.from_dict(ctx.binding.config)
        errors += check_transition(previous, result.config, annotation_present=bool(text))
    if errors or result.config is None:
        message = "; ".join(errors)
        return Fire(
            "reject",
            reason="InvalidConfiguration",
            message=message,
            events=(
                warning("InvalidConfiguration", message),
                *(warning("ConfigurationWarning", n) for n in port_warnings),
            ),
            updates={"fingerprint": seen},
        )

    config = result.config
    ctx.kube.add_finalizer(service)
    written = config.to_annotation()
    if text != written:
        ctx.kube.set_config_annotation(service, written)
    frontends, backends = service_objects(
        cluster=ctx.settings.cluster_name,
        namespace=meta["namespace"],
        service=meta["name"],
        ports=ports,
        bind_ports={f.service_port: f.port for f in config.frontends},
        dynamic_ports=config.cloud_provider_configuration is not None,
        backend_mode=ctx.settings.backend_mode,
        node_addresses=ctx.node_addresses,
    )
    notes = (*result.warnings, *port_warnings)
    return Fire(
        "accept",
        reason="Accepted",
        message=f"EdgeLB pool {config.name}",
        events=tuple(warning("ConfigurationWarning", n) for n in notes),
        updates={
            "config": config.to_dict(),
            "pool": config.name,
            "objects": {"frontends": frontends, "backends": backends},
            "fingerprint": fingerprint(service, annotation=written, nodes=ctx.node_addresses),
            "uid": meta.get("uid", ""),
        },
    )
