"""``dklb plan``: what dklb would do with one Service, without a cluster, a database or EdgeLB.

Where it sits in the data flow: a dry run of the Pending and Provisioning decisions for a
Service manifest: the configuration parsed, defaulted and judged against the operator's limits
(``engine.model.checks.check_service``, as the controller judges it), the
objects and the pool body it translates to (``engine.model.translation``), or every validation
error (exit 1), each naming the field and the value, exactly as the controller would report
them in a Warning Event.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import yaml

from engine.cli import options
from engine.cli.options import UsageError
from engine.cli.output import emit
from engine.model.checks import check_service
from engine.model.report import described
from engine.model.services import ANNOTATION, LOAD_BALANCER, service_type
from engine.model.strict_yaml import FastSafeLoader
from engine.model.translation import exposed_ports, new_pool, service_objects


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Print the defaulted configuration and the EdgeLB pool a Service would get."
    parser.epilog = (
        "examples:\n  dklb plan -f examples/redis-service.yaml\n"
        "  dklb plan -f svc.yaml --kubernetes-cluster-framework-name /dev/kubernetes01 -o json"
    )
    options.add(
        parser,
        "-f",
        "--file",
        env=False,
        required=True,
        help="the Service manifest (YAML or JSON; - for stdin)",
    )
    options.cluster(parser, aliases=["--cluster-name"])
    options.pool_defaults(parser, aliases=(["--pool-group"], ["--default-pool-size"]))
    options.pool_limits(parser)
    options.output(parser, ("yaml", "json"), "yaml")
    parser.set_defaults(func=run)


def _load_service(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        # libyaml, as for the annotation: the manifest may hold anybody's annotation text.
        documents = [d for d in yaml.load_all(text, Loader=FastSafeLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        problem = described(exc)
        raise UsageError(f"{path} is not valid YAML: {problem}") from exc
    services = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Service"]
    if len(services) != 1:
        raise UsageError(f"{path} must hold exactly one object of kind Service (found {len(services)})")
    service = services[0]
    _check_shape(service, path)
    service.setdefault("metadata", {}).setdefault("namespace", "default")
    if not service["metadata"].get("name"):
        raise UsageError(f"{path}: metadata.name is required")
    return service


def _check_shape(service: dict[str, Any], path: str) -> None:
    """What the plan reads of the Service, checked rather than crashed on (a usage error)."""
    for field in ("metadata", "spec"):
        if service.get(field) is not None and not isinstance(service[field], dict):
            raise UsageError(f"{path}: {field} is not a mapping")
    annotations = (service.get("metadata") or {}).get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise UsageError(f"{path}: metadata.annotations is not a mapping")
    if not isinstance((annotations or {}).get(ANNOTATION, ""), str | None):
        raise UsageError(f"{path}: metadata.annotations[{ANNOTATION!r}] is not a string")
    ports = (service.get("spec") or {}).get("ports") or []
    if not isinstance(ports, list) or not all(isinstance(p, dict) for p in ports):
        raise UsageError(f"{path}: spec.ports is not a list of mappings")


def run(args: argparse.Namespace) -> int:
    service = _load_service(args.file)
    meta = service["metadata"]
    spec = service.get("spec") or {}
    notes: list[str] = []
    if service_type(service) != LOAD_BALANCER:
        notes.append(
            f"spec.type is {service_type(service)!r}: dklb only handles Services of type {LOAD_BALANCER!r}"
        )
    ports, port_warnings = exposed_ports(service)
    notes += port_warnings
    for i, p in enumerate(spec.get("ports") or []):
        if not p.get("nodePort"):
            notes.append(
                f"spec.ports[{i}] ({p.get('port')}/{p.get('protocol', 'TCP')}) has no nodePort yet: "
                "its backend port is shown as 0 until Kubernetes assigns one"
            )
    # The controller's own check (Pending's, the webhook's), with the operator's limits.
    check = check_service(
        service,
        previous=None,
        cluster_name=args.kubernetes_cluster_framework_name,
        default_size=args.edgelb_default_pool_size,
        pool_group=args.edgelb_pool_group,
        rng=random.Random(),
        limits=options.limits(args),
    )
    result, errors = check.result, check.errors
    if errors or result.config is None:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    config = result.config
    frontends, backends = service_objects(
        cluster=args.kubernetes_cluster_framework_name,
        namespace=meta["namespace"],
        service=meta["name"],
        ports=ports,
        bind_ports={f.service_port: f.port for f in config.frontends},
        dynamic_ports=config.cloud_provider_configuration is not None,
    )
    pool = new_pool(
        settings=config,
        pool_group=args.edgelb_pool_group,
        frontends=frontends,
        backends=backends,
        created_by=args.kubernetes_cluster_framework_name,
    )
    plan: dict[str, Any] = {"configuration": config.to_dict(), "pool": pool}
    warnings = [*result.warnings, *notes]
    if result.defaulted_name:
        warnings.append(f"name {config.name!r} was generated; the controller records it in the annotation")
    if warnings:
        plan["warnings"] = warnings
    emit(plan, args.output)
    return 0
