"""The names of an Ingress's EdgeLB objects, and who owns an object, read from its name.

An Ingress's backends (``backends``) and frontends are named here when the Provisioning state
composes the pool; the pool sweep and the composer read ownership back with ``owner_of``. The
names are the Go dklb's, so pools it made are adopted without duplicates:

* backend ``<cluster>:<namespace>:<ingress>:<service>:<port number or name>``;
* frontend ``<cluster>:<namespace>:<ingress>:http`` (or ``https``).

Ownership is read by shape, not by prefix (the Go dklb's bug): a Service's objects are
``<cluster>:<namespace>:<service>:<port number>`` (``engine.model.translation.object_name``), so
a 4-part name is an Ingress frontend only when its last part is ``http`` or ``https``, and a
5-part name is an Ingress backend. Kubernetes names and port names never hold ``:``.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("http", "https")


@dataclass(frozen=True)
class FrontendName:
    namespace: str
    ingress: str
    protocol: str  # "http" or "https"


@dataclass(frozen=True)
class BackendName:
    namespace: str
    ingress: str
    service: str
    port: str  # a port number's digits, or a port name, as the Ingress gave it


def _cluster_part(cluster: str) -> str:
    # As for Services (engine.model.translation): a DC/OS cluster folder's "/" becomes ".".
    return cluster.replace("/", ".")


def frontend_name(*, cluster: str, namespace: str, ingress: str, protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    return f"{_cluster_part(cluster)}:{namespace}:{ingress}:{protocol}"


def backend_name(*, cluster: str, namespace: str, ingress: str, service: str, port: int | str) -> str:
    return f"{_cluster_part(cluster)}:{namespace}:{ingress}:{service}:{port}"


def owner_of(name: str, *, cluster: str) -> FrontendName | BackendName | None:
    """What ``name`` is among this cluster's Ingress objects, or None (a Service's, a foreign one)."""
    prefix = _cluster_part(cluster) + ":"
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix) :].split(":")
    if not all(parts):
        return None
    if len(parts) == 3 and parts[2] in PROTOCOLS:
        return FrontendName(parts[0], parts[1], parts[2])
    if len(parts) == 4:
        return BackendName(*parts)
    return None
