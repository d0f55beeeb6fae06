"""Service + configuration -> EdgeLB pool objects, pool composition and status (pure).

Where it sits in the data flow: the Pending handler calls ``exposed_ports`` on the Service read from
Kubernetes (its warnings become Warning Events) and ``service_objects`` for the Service's
frontends/backends, which are recorded on the binding. The Provisioning and Deleting handlers give
every binding's recorded objects to ``compose_pool`` (through ``states.pool.desired_pool``) with
the pool GET returned; the result goes to EdgeLB PUT unless ``same_pool`` says nothing changed,
to POST via ``new_pool`` when the pool is absent, and Deleting DELETEs a pool that ``is_empty``.
Ready compares ``owned_part`` of the pool with the recorded objects. The AwaitingMetadata handler
feeds the metadata GET into ``ingress_from_metadata``; the result is patched into
``status.loadBalancer.ingress``.

Frontends and backends are named ``<cluster, "/" -> ".">:<namespace>:<service>:<servicePort>``: that
name is the only record of ownership inside a (possibly shared, possibly pre-existing) pool, so every
function that edits a pool touches only objects whose names parse to one of the given owners.
A pool dklb creates carries ``environmentVariables.DKLB_CREATED_BY = <cluster>`` (``new_pool``): the
record, inside EdgeLB, that its settings are dklb's, so a controller that lost its database still
knows which pools it may resize (``created_by_dklb``) and never touches the settings of any other pool.
Nothing here does I/O or mutates its arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.edgelb.schema import normalize_pool
from engine.model.config import PoolConfig
from engine.model.samepool import same_pool as same_pool  # re-exported: callers import it from here

Pool = dict[str, Any]
Owner = tuple[str, str]  # (namespace, service name)
Object = dict[str, Any]  # a frontend or a backend

BIND_ADDRESS = "0.0.0.0"
# Set in every pool dklb creates, to the cluster name: "dklb created this pool, its settings are dklb's".
CREATED_BY_VARIABLE = "DKLB_CREATED_BY"
# Beside it: the namespace dklb created the pool for, and the digest of the creating Service's
# sharing key (``engine.model.services.shared_pool_key``), so a lost database cannot widen access.
NAMESPACE_VARIABLE = "DKLB_NAMESPACE"
SHARED_POOL_KEY_VARIABLE = "DKLB_SHARED_POOL_KEY"
KUBE_NODE_TASK_PATTERN = "^kube-node-.*$"
BACKEND_MODES = ("mesos", "address")


@dataclass(frozen=True)
class ServicePort:
    port: int
    node_port: int
    protocol: str = "TCP"
    name: str = ""


# ------------------------------------------------------------------------------------------------
# Service -> ports, names
# ------------------------------------------------------------------------------------------------


def exposed_ports(service: dict[str, Any]) -> tuple[list[ServicePort], list[str]]:
    """The Service's TCP ports, and a warning for each port that is not exposed.

    The API server refuses a port outside 1-65535 and a (port, protocol) listed twice; a Service
    read from elsewhere may have them, and they are warned about rather than exposed: a port
    listed twice would make two objects of the same name, which EdgeLB refuses for ever.
    """
    ports: list[ServicePort] = []
    warnings: list[str] = []
    for entry in (service.get("spec") or {}).get("ports") or []:
        # Kubernetes defaults a missing protocol to TCP; the API server always fills it, but a
        # Service read from a manifest or a test may not have it.
        protocol = entry.get("protocol") or "TCP"
        if protocol != "TCP":
            warnings.append(f"port {entry.get('port')}/{protocol} is not exposed: dklb supports TCP only")
            continue
        number = entry.get("port")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            warnings.append(f"port {number!r}/{protocol} is not exposed: it is not a valid port number")
            continue
        if any(p.port == number for p in ports):
            warnings.append(f"port {number}/{protocol} is listed twice: only its first entry is exposed")
            continue
        ports.append(
            ServicePort(
                port=int(entry["port"]),
                # 0 until the API server has allocated one.
                node_port=int(entry.get("nodePort") or 0),
                protocol=protocol,
                name=entry.get("name") or "",
            )
        )
    return ports, warnings


def _cluster_part(cluster: str) -> str:
    return cluster.replace("/", ".")


def object_name(*, cluster: str, namespace: str, service: str, service_port: int) -> str:
    return f"{_cluster_part(cluster)}:{namespace}:{service}:{service_port}"


def owner_of(name: str, *, cluster: str) -> tuple[Owner, int] | None:
    """``((namespace, service), servicePort)`` for an object of this cluster, None for any other."""
    # rsplit: namespace, service and port never contain ":", so whatever is left is the cluster part.
    parts = name.rsplit(":", 3)
    if len(parts) != 4:
        return None
    cluster_part, namespace, service, port = parts
    if cluster_part != _cluster_part(cluster) or not namespace or not service:
        return None
    if not port.isascii() or not port.isdigit() or port != str(int(port)) or not 0 < int(port) <= 65535:
        return None
    return (namespace, service), int(port)


def _service_port_of(name: str) -> int | None:
    tail = name.rsplit(":", 1)[-1]
    return int(tail) if tail.isascii() and tail.isdigit() else None


# ------------------------------------------------------------------------------------------------
# Service -> frontends and backends
# ------------------------------------------------------------------------------------------------


def service_objects(
    *,
    cluster: str,
    namespace: str,
    service: str,
    ports: Sequence[ServicePort],
    bind_ports: Mapping[int, int],
    dynamic_ports: bool = False,
    backend_mode: str = "mesos",
    node_addresses: Sequence[str] = (),
) -> tuple[list[Object], list[Object]]:
    """``(frontends, backends)`` for one Service: one of each per port, in the Service's port order.

    ``bind_ports`` maps servicePort -> frontend bind port (a port missing from it binds its own number);
    ``dynamic_ports`` binds every frontend to 0, which EdgeLB resolves to a free port (cloud-provider
    pools, where clients come in through the cloud load balancer's listeners instead).
    """
    if backend_mode not in BACKEND_MODES:
        raise ValueError(f"backend_mode must be one of {', '.join(BACKEND_MODES)}, not {backend_mode!r}")
    # Sorted and deduplicated: the Node list's order must not turn into a pool change.
    addresses = sorted(set(node_addresses))
    frontends: list[Object] = []
    backends: list[Object] = []
    for port in ports:
        name = object_name(cluster=cluster, namespace=namespace, service=service, service_port=port.port)
        if backend_mode == "mesos":
            services = [
                {
                    "mesos": {"frameworkName": cluster, "taskNamePattern": KUBE_NODE_TASK_PATTERN},
                    "endpoint": {"type": "CONTAINER_IP", "port": port.node_port, "check": {"enabled": True}},
                }
            ]
        else:
            services = [
                {
                    "endpoint": {
                        "type": "ADDRESS",
                        "address": address,
                        "port": port.node_port,
                        "check": {"enabled": True},
                    }
                }
                for address in addresses
            ]
        backends.append({"name": name, "protocol": "TCP", "balance": "leastconn", "services": services})
        frontends.append(
            {
                "name": name,
                "bindAddress": BIND_ADDRESS,
                "bindPort": 0 if dynamic_ports else int(bind_ports.get(port.port, port.port)),
                "protocol": "TCP",
                "linkBackend": {"defaultBackend": name},
            }
        )
    return frontends, backends


# ------------------------------------------------------------------------------------------------
# Pools
# ------------------------------------------------------------------------------------------------


def new_pool(
    *,
    settings: PoolConfig,
    pool_group: str,
    frontends: list[Object],
    backends: list[Object],
    created_by: str | None = None,
    owner_namespace: str | None = None,
    shared_pool_key: str | None = None,
) -> Pool:
    """The pool dklb creates (POST) for the Service(s) whose objects are given.

    ``created_by`` (the cluster name) marks the pool as dklb's: see ``created_by_dklb``;
    ``owner_namespace`` and ``shared_pool_key`` say whom for: see ``pool_owner``.
    """
    pool: Pool = {
        "name": settings.name,
        "namespace": pool_group,
        "role": settings.role,
        "cpus": settings.cpus,
        "mem": settings.memory,
        "count": settings.size,
        "haproxy": {
            # 0 = dynamic: a fixed stats port (9090) would clash between pools placed on one agent.
            "stats": {"bindPort": 0},
            "frontends": copy.deepcopy(frontends),
            "backends": copy.deepcopy(backends),
        },
    }
    if settings.network:
        pool["virtualNetworks"] = [{"name": settings.network}]
    if settings.constraints is not None:
        pool["constraints"] = settings.constraints
    if settings.cloud_provider is not None:
        pool["cloudProvider"] = link_listeners(settings.cloud_provider, frontends)
    if created_by is not None:
        marks = {CREATED_BY_VARIABLE: created_by}
        if owner_namespace is not None:
            marks[NAMESPACE_VARIABLE] = owner_namespace
        if shared_pool_key is not None:
            marks[SHARED_POOL_KEY_VARIABLE] = shared_pool_key
        pool["environmentVariables"] = marks
    return pool


def pool_owner(pool: Pool, *, cluster: str) -> tuple[str, str | None] | None:
    """``(namespace, sharing-key digest)`` a dklb of ``cluster`` created ``pool`` for, from its
    marks; None when the pool carries no such mark (not created by this cluster's dklb, or
    created before pools recorded their namespace)."""
    if not created_by_dklb(pool, cluster=cluster):
        return None
    variables = pool["environmentVariables"]
    namespace = variables.get(NAMESPACE_VARIABLE)
    if not isinstance(namespace, str) or not namespace:
        return None
    key = variables.get(SHARED_POOL_KEY_VARIABLE)
    return namespace, key if isinstance(key, str) and key else None


def created_by_dklb(pool: Pool, *, cluster: str) -> bool:
    """True when ``pool`` carries the mark ``new_pool`` gives the pools dklb creates for ``cluster``.

    A pool someone else made (or dklb of another cluster) has no such mark, or another value.
    """
    variables = pool.get("environmentVariables")
    return isinstance(variables, dict) and variables.get(CREATED_BY_VARIABLE) == cluster


def pool_outline(pool: Pool) -> Pool:
    """What the orphan sweep reads of a listed pool (its name, dklb's mark, the names of its
    objects) and nothing else: a period's listing is held until that sweep, thousands of pools."""
    outline: Pool = {"name": pool.get("name")}
    variables = pool.get("environmentVariables")
    if isinstance(variables, dict) and CREATED_BY_VARIABLE in variables:
        outline["environmentVariables"] = {CREATED_BY_VARIABLE: variables[CREATED_BY_VARIABLE]}
    haproxy = pool.get("haproxy")
    if isinstance(haproxy, dict):
        # Anything unexpected is kept as listed: the sweep judges it as it would the whole pool.
        haproxy = {kind: _names(found) for kind in ("frontends", "backends") if (found := haproxy.get(kind))}
    return outline if haproxy is None else {**outline, "haproxy": haproxy}


def _names(objects: Any) -> Any:
    if not isinstance(objects, list):
        return objects
    return [{"name": o.get("name")} if isinstance(o, dict) else o for o in objects]


def made_by_a_dklb(pool: Pool, *, cluster: str) -> bool:
    """True when ``pool`` carries dklb's mark for ``cluster``, or no mark and holds objects that
    all follow the dklb naming of ``cluster``: the Go dklb put no mark on the pools it made, only
    its object names. A pool marked by a dklb of another cluster is never this one's.
    """
    variables = pool.get("environmentVariables")
    if isinstance(variables, dict) and CREATED_BY_VARIABLE in variables:
        return variables[CREATED_BY_VARIABLE] == cluster
    haproxy = pool.get("haproxy")
    if not isinstance(haproxy, dict):
        return False
    objects = [*(haproxy.get("frontends") or []), *(haproxy.get("backends") or [])]
    return bool(objects) and all(
        isinstance(obj, dict) and owner_of(str(obj.get("name", "")), cluster=cluster) is not None
        for obj in objects
    )


def link_listeners(cloud_provider: dict[str, Any], frontends: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The user's ``cloudProvider`` with its AWS listeners linked to the Service's frontends.

    The user writes the cloud load balancer(s) but cannot know the frontends' names, and their bind
    ports are dynamic; clients reach the Service at ``<lb dns>:<servicePort>``. So:
    - an ELB without listeners gets one per frontend: ``{port: servicePort, linkFrontend: <frontend>}``;
    - a listener without ``linkFrontend`` links the frontend of the servicePort equal to its ``port``,
      or the only frontend when there is just one;
    - a listener that names its frontend is kept as written.
    """
    result = copy.deepcopy(cloud_provider)
    aws = result.get("aws")
    if not isinstance(aws, dict) or not isinstance(aws.get("elbs"), list):
        return result
    by_service_port = {
        sp: frontend["name"]
        for frontend in frontends
        if (sp := _service_port_of(frontend["name"])) is not None
    }
    for elb in aws["elbs"]:
        if not isinstance(elb, dict):
            continue
        if not elb.get("listeners"):
            elb["listeners"] = [{"port": sp, "linkFrontend": name} for sp, name in by_service_port.items()]
            continue
        for listener in elb["listeners"]:
            if not isinstance(listener, dict) or listener.get("linkFrontend"):
                continue
            port = listener.get("port")
            target = by_service_port.get(port) if isinstance(port, int) else None
            if target is None and len(frontends) == 1:
                target = frontends[0]["name"]
            if target is not None:
                listener["linkFrontend"] = target
    return result


def _owned(obj: Any, *, cluster: str, owners: set[Owner]) -> bool:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return False
    parsed = owner_of(obj["name"], cluster=cluster)
    return parsed is not None and parsed[0] in owners


def _replace(
    current: list[Any], given: list[Object], *, cluster: str, owners: set[Owner]
) -> tuple[list[Any], set[str]]:
    """``current`` with the owners' objects replaced by ``given``, and the names that were removed.

    The given objects take the place of the first owned object, so that an unchanged Service's objects
    stay where they were; without one they are appended.
    """
    result: list[Any] = []
    removed: set[str] = set()
    inserted = False
    for obj in current:
        if _owned(obj, cluster=cluster, owners=owners):
            removed.add(obj["name"])
            if not inserted:
                result.extend(copy.deepcopy(given))
                inserted = True
            continue
        result.append(obj)
    if not inserted:
        result.extend(copy.deepcopy(given))
    return result, removed - {obj["name"] for obj in given}


def compose_pool(
    base: Pool,
    *,
    cluster: str,
    owners: Iterable[Owner],
    frontends: list[Object],
    backends: list[Object],
    settings: PoolConfig | None = None,
) -> Pool:
    """The desired pool: ``base`` (what EdgeLB has) with the owners' objects replaced by the given ones.

    Objects of other Services and foreign objects are kept as they are and where they are. With
    ``settings`` (dklb created this pool) the pool-level fields dklb controls are set from them.
    Cloud load-balancer listeners that linked one of the owners' frontends which is gone are dropped.
    """
    owner_set = set(owners)
    for obj in (*frontends, *backends):
        if not _owned(obj, cluster=cluster, owners=owner_set):
            # Writing an object under a name we do not own would take it from its owner.
            raise ValueError(f"object {obj.get('name')!r} is not owned by any of {sorted(owner_set)}")

    pool = copy.deepcopy(base)
    haproxy = pool.get("haproxy")
    if not isinstance(haproxy, dict):
        haproxy = pool["haproxy"] = {}
    haproxy["frontends"], gone_frontends = _replace(
        haproxy.get("frontends") or [], frontends, cluster=cluster, owners=owner_set
    )
    haproxy["backends"], _ = _replace(
        haproxy.get("backends") or [], backends, cluster=cluster, owners=owner_set
    )

    if settings is not None:
        pool["role"] = settings.role
        pool["cpus"] = settings.cpus
        pool["mem"] = settings.memory
        pool["count"] = settings.size
        if settings.network:
            # Keep labels someone put on the network: only its presence is dklb's business.
            existing = [
                vn
                for vn in pool.get("virtualNetworks") or []
                if isinstance(vn, dict) and vn.get("name") == settings.network
            ]
            pool["virtualNetworks"] = existing[:1] or [{"name": settings.network}]
        else:
            pool.pop("virtualNetworks", None)
        if settings.constraints is not None:
            pool["constraints"] = settings.constraints
        if settings.cloud_provider is not None:
            pool["cloudProvider"] = link_listeners(settings.cloud_provider, frontends)

    if gone_frontends:
        _drop_listeners(pool, gone_frontends)
    return pool


def _drop_listeners(pool: Pool, frontend_names: set[str]) -> None:
    # A listener linking a frontend that no longer exists makes EdgeLB refuse the whole pool.
    aws = (pool.get("cloudProvider") or {}).get("aws")
    if not isinstance(aws, dict):
        return
    for elb in aws.get("elbs") or []:
        if isinstance(elb, dict) and isinstance(elb.get("listeners"), list):
            elb["listeners"] = [
                listener
                for listener in elb["listeners"]
                if not (isinstance(listener, dict) and listener.get("linkFrontend") in frontend_names)
            ]


def remove_owner(base: Pool, *, cluster: str, owner: Owner) -> Pool:
    """``base`` without that Service's frontends and backends (and cloud listeners linking them)."""
    return compose_pool(base, cluster=cluster, owners=[owner], frontends=[], backends=[])


def is_empty(pool: Pool) -> bool:
    haproxy = pool.get("haproxy") or {}
    return not haproxy.get("frontends") and not haproxy.get("backends")


def owned_part(pool: Pool, *, cluster: str, owner: Owner) -> tuple[list[Object], list[Object]]:
    """That Service's ``(frontends, backends)`` in ``pool``, normalized (defaults filled, sorted by name)."""
    haproxy = normalize_pool(pool).get("haproxy") or {}
    owners = {owner}
    return (
        [f for f in haproxy.get("frontends") or [] if _owned(f, cluster=cluster, owners=owners)],
        [b for b in haproxy.get("backends") or [] if _owned(b, cluster=cluster, owners=owners)],
    )


# ------------------------------------------------------------------------------------------------
# Status
# ------------------------------------------------------------------------------------------------


def normalized_objects(objects: Mapping[str, Any]) -> tuple[list[Object], list[Object]]:
    """A binding's recorded ``{"frontends", "backends"}`` in the form ``owned_part`` returns."""
    haproxy = normalize_pool(
        {"haproxy": {"frontends": objects["frontends"], "backends": objects["backends"]}}
    )
    return haproxy["haproxy"].get("frontends") or [], haproxy["haproxy"].get("backends") or []


def ingress_from_metadata(metadata: dict[str, Any], *, frontend_names: Iterable[str]) -> list[dict[str, str]]:
    """``status.loadBalancer.ingress`` for the frontends named: sorted hostnames, then sorted private
    IPs, then sorted public IPs, each address once."""
    names = set(frontend_names)
    hostnames: set[str] = set()
    for elb in ((metadata.get("aws") or {}).get("elbs")) or []:
        dns = elb.get("dns")
        if dns and any(listener.get("linkFrontend") in names for listener in elb.get("listeners") or []):
            # DNS names are case-insensitive; one spelling keeps the status stable.
            hostnames.add(dns.lower())
    private: set[str] = set()
    public: set[str] = set()
    for frontend in metadata.get("frontends") or []:
        if frontend.get("name") not in names:
            continue
        for endpoint in frontend.get("endpoints") or []:
            private.update(ip for ip in endpoint.get("private") or [] if ip)
            public.update(ip for ip in endpoint.get("public") or [] if ip)
    return (
        [{"hostname": h} for h in sorted(hostnames)]
        + [{"ip": ip} for ip in sorted(private)]
        + [{"ip": ip} for ip in sorted(public - private)]
    )


def pool_ports(pool: Pool) -> list[int]:
    """The stats port then each frontend's bind port, like the PORTS column of ``dcos edgelb list``."""
    haproxy = pool.get("haproxy") or {}
    stats = haproxy.get("stats") or {}
    ports = [int(stats.get("bindPort", 9090))]
    ports.extend(int(frontend.get("bindPort", 0)) for frontend in haproxy.get("frontends") or [])
    return ports
