"""An Ingress's Service references → its EdgeLB backends, one per distinct (Service, port).

An Ingress arrives from the watcher with the Services of its namespace that it names; the
Provisioning state asks ``ingress_backends`` for the backends (named by ``naming``, in name order,
as the Go dklb sorted them) before ``rules`` composes the map that points at them. A port is
resolved through the Service's spec: a named port by ``ports[].name``, a numeric one by
``ports[].port`` (never, as the Go dklb did, by matching any unnamed port). A reference that
cannot be resolved (no such Service, no such port, no node port) still gets its backend, with no
target, so its rules answer 503, and an ``InvalidBackendService`` problem the caller turns into a
Warning Event.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engine.model.config import show
from engine.model.ingress.naming import backend_name

INVALID_BACKEND_SERVICE = "InvalidBackendService"


@dataclass(frozen=True)
class Target:
    """The Service port a backend reaches: ``node_port`` on the agents."""

    port: int
    node_port: int


@dataclass(frozen=True)
class IngressBackend:
    name: str
    service: str
    port: int | str  # as the Ingress gave it: a number or a port name
    target: Target | None  # None: unresolved, the backend has no server (HAProxy answers 503)


@dataclass(frozen=True)
class Problem:
    reason: str  # the Event's reason
    message: str


def service_refs(ingress: Mapping[str, Any]) -> Iterator[tuple[str, int | str]]:
    """Every (Service name, port number or name) the Ingress names: default backend, then rules."""
    spec = ingress.get("spec") or {}
    backends = [spec.get("defaultBackend")]
    for rule in spec.get("rules") or []:
        for path in ((rule or {}).get("http") or {}).get("paths") or []:
            backends.append((path or {}).get("backend"))
    for backend in backends:
        service = (backend or {}).get("service") or {}
        name = service.get("name")
        port = service.get("port") or {}
        ref = port.get("number") if port.get("number") is not None else port.get("name")
        if isinstance(name, str) and name and isinstance(ref, int | str) and ref != "":
            yield name, ref


def ingress_backends(
    ingress: Mapping[str, Any],
    *,
    services: Mapping[str, Mapping[str, Any]],
    cluster: str,
) -> tuple[tuple[IngressBackend, ...], tuple[Problem, ...]]:
    """The Ingress's backends, sorted by name, and one problem per reference that cannot be resolved.

    ``services`` maps the names of Services in the Ingress's namespace to the objects.
    """
    meta = ingress.get("metadata") or {}
    namespace, ingress_name = str(meta.get("namespace")), str(meta.get("name"))
    backends: dict[str, IngressBackend] = {}
    problems: list[Problem] = []
    for service, port in service_refs(ingress):
        name = backend_name(
            cluster=cluster, namespace=namespace, ingress=ingress_name, service=service, port=port
        )
        if name in backends:
            continue
        target, problem = resolve(services.get(service), service=service, port=port)
        backends[name] = IngressBackend(name, service, port, target)
        if problem is not None:
            problems.append(Problem(INVALID_BACKEND_SERVICE, problem))
    return tuple(backends[n] for n in sorted(backends)), tuple(problems)


def resolve(
    service_object: Mapping[str, Any] | None, *, service: str, port: int | str
) -> tuple[Target | None, str | None]:
    """The Service port ``port`` names, or why there is none (a message naming the Service and port)."""
    ref = f"{show(service)} port {show(port)}"
    if service_object is None:
        return None, f"{ref}: the Service {show(service)} does not exist; the rules using it answer 503"
    by_name = isinstance(port, str)
    for entry in (service_object.get("spec") or {}).get("ports") or []:
        if (entry.get("protocol") or "TCP") != "TCP":
            continue
        if (entry.get("name") == port) if by_name else (entry.get("port") == port):
            node_port = entry.get("nodePort")
            if not isinstance(node_port, int) or isinstance(node_port, bool) or not node_port:
                kind = (service_object.get("spec") or {}).get("type") or "ClusterIP"
                return None, (
                    f"{ref}: the port has no node port (the Service is of type {show(kind)}; "
                    'dklb needs "NodePort" or "LoadBalancer"); the rules using it answer 503'
                )
            return Target(int(entry["port"]), node_port), None
    what = "named" if by_name else "numbered"
    return None, f"{ref}: the Service has no TCP port {what} {show(port)}; the rules using it answer 503"
