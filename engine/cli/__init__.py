"""The ``dklb`` command line: one entry point, one small function per sub-command.

``plan`` is a dry run of the Pending and Provisioning decisions for one Service file (no
cluster, no database); ``migrate`` upgrades a database; ``lifecycle`` draws the declared
machine. Output is ``-o yaml`` (default for documents), ``json`` or ``table`` where a table
makes sense. Errors a user can cause exit 1 with a message naming the field and the value.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from engine.model.config import ANNOTATION, parse_config
from engine.model.translation import exposed_ports, new_pool, pool_settings, service_objects
from engine.runtime import lifecycle as lifecycle_module
from engine.store import StoreError
from engine.store import migrate as migrate_module

DEFAULT_CLUSTER = "kubernetes-cluster"
DEFAULT_POOL_GROUP = "dcos-edgelb/pools"


class UsageError(Exception):
    """A mistake in what the user asked for; printed without a traceback, exit 1."""


def _emit(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, sort_keys=False))
    else:
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())


def _load_service(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from exc
    services = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Service"]
    if len(services) != 1:
        raise UsageError(f"{path} must hold exactly one object of kind Service (found {len(services)})")
    service = services[0]
    service.setdefault("metadata", {}).setdefault("namespace", "default")
    if not service["metadata"].get("name"):
        raise UsageError(f"{path}: metadata.name is required")
    return service


def cmd_plan(args: argparse.Namespace) -> int:
    service = _load_service(args.file)
    meta = service["metadata"]
    spec = service.get("spec") or {}
    notes: list[str] = []
    if spec.get("type") != "LoadBalancer":
        notes.append(f'spec.type is {spec.get("type")!r}: dklb only handles Services of type "LoadBalancer"')
    ports, port_warnings = exposed_ports(service)
    notes += port_warnings
    for i, p in enumerate(spec.get("ports") or []):
        if not p.get("nodePort"):
            notes.append(
                f"spec.ports[{i}] ({p.get('port')}/{p.get('protocol', 'TCP')}) has no nodePort yet: "
                "its backend port is shown as 0 until Kubernetes assigns one"
            )
    result = parse_config(
        (meta.get("annotations") or {}).get(ANNOTATION),
        service_ports=[p.port for p in ports],
        cluster_name=args.cluster_name,
        default_size=args.default_pool_size,
        rng=random.Random(),
    )
    errors = list(result.errors)
    if not ports:
        errors.append("the Service has no TCP port to expose")
    if errors or result.config is None:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    config = result.config
    frontends, backends = service_objects(
        cluster=args.cluster_name,
        namespace=meta["namespace"],
        service=meta["name"],
        ports=ports,
        bind_ports={f.service_port: f.port for f in config.frontends},
        dynamic_ports=config.cloud_provider_configuration is not None,
    )
    pool = new_pool(
        settings=pool_settings(config),
        pool_group=args.pool_group,
        frontends=frontends,
        backends=backends,
        created_by=args.cluster_name,
    )
    plan: dict[str, Any] = {"configuration": config.to_dict(), "pool": pool}
    warnings = [*result.warnings, *notes]
    if result.defaulted_name:
        warnings.append(f"name {config.name!r} was generated; the controller records it in the annotation")
    if warnings:
        plan["warnings"] = warnings
    _emit(plan, args.output)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    revision = migrate_module.upgrade(args.database)
    print(f"database {args.database} is at revision {revision}")
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    machine = lifecycle_module.load()
    if args.output == "mermaid":
        print(machine.mermaid())
        return 0
    if args.output == "table":
        from engine.cli.output import table

        rows = [
            (
                t.trigger,
                ", ".join(t.sources),
                t.dest,
                ", ".join(p.rpartition(".")[2] for p in t.guard_paths) or "-",
            )
            for t in machine.transitions
        ]
        print(table(["TRIGGER", "FROM", "TO", "GUARDS"], rows))
        return 0
    data = {
        "initial": machine.initial,
        "final": machine.final,
        "states": {
            name: {
                "doc": s.doc,
                "handler": s.handler_path,
                "serialize": s.serialize,
                "retry": vars(s.retry) if s.retry else None,
                "poll": vars(s.poll) if s.poll else None,
                "resync": s.resync,
            }
            for name, s in machine.states.items()
        },
        "transitions": [
            {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest, "guards": list(t.guard_paths)}
            for t in machine.transitions
        ],
    }
    _emit(data, args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dklb",
        description="Expose Kubernetes Services of type LoadBalancer through EdgeLB pools.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = sub.add_parser(
        "plan",
        help="print the configuration and EdgeLB pool a Service would get (no cluster needed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n  dklb plan -f examples/redis-service.yaml\n"
            "  dklb plan -f svc.yaml --cluster-name /dev/kubernetes01 -o json"
        ),
    )
    plan.add_argument("-f", "--file", required=True, help="the Service manifest (YAML or JSON; - for stdin)")
    plan.add_argument(
        "--cluster-name", default=DEFAULT_CLUSTER, help="MKE cluster framework name (default %(default)s)"
    )
    plan.add_argument(
        "--pool-group", default=DEFAULT_POOL_GROUP, help="EdgeLB pool group (default %(default)s)"
    )
    plan.add_argument("--default-pool-size", type=int, default=1, help="size when the annotation sets none")
    plan.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    plan.set_defaults(func=cmd_plan)

    mig = sub.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        epilog="example:\n  dklb migrate --database /var/lib/dklb/dklb.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mig.add_argument("--database", required=True, help="SQLite path or SQLAlchemy URL")
    mig.set_defaults(func=cmd_migrate)

    from edgelb_local.command import add_parser as add_edgelb_local
    from engine.cli.ops import add_parsers as add_ops
    from engine.cli.run import add_parser as add_run
    from localcluster.demo import add_parser as add_demo

    add_run(sub)
    add_demo(sub)
    add_ops(sub)
    add_edgelb_local(sub)

    life = sub.add_parser(
        "lifecycle",
        help="print the declared binding lifecycle",
        epilog="examples:\n  dklb lifecycle              # a Mermaid state diagram\n"
        "  dklb lifecycle -o table     # one row per transition",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    life.add_argument("-o", "--output", choices=["mermaid", "table", "yaml", "json"], default="mermaid")
    life.set_defaults(func=cmd_lifecycle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (UsageError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
