"""What the real EdgeLB refuses in a POST/PUT body, with its status codes and texts (pure).

Where it sits in the data flow: ``edgelb_local.server`` (and the test fake, ``tests.fakes.edgelb``)
runs a request body through these steps, in the real server's order, and answers the first refusal:

1. ``bind``: the go-openapi binding of the body, before the handler runs. Unparseable JSON and JSON
   type errors are **400** (``parsing pool body from "" failed, because ...``); an empty body and
   swagger validation failures (enums, minimums) are **422**, the body's ``code`` then being
   go-openapi's 6xx code (602 required, 606 enum, 609 minimum) and the message the first failure's.
2. (the handler: 409 for POST of an existing pool, 404 for PUT of an unknown one)
3. ``check``: ``V2CheckPool`` of the vendored server (``apiserver/models/v2_check.go``,
   ``common_check.go``), a **400** with its message: every backend has a service and is named by a
   frontend, a Mesos selector names a framework and a task, endpoint ports, bind ports that may not
   repeat (stats included, compared by number), bind addresses, link-backend map conditions,
   secrets and virtual networks. Then a PUT may not move the pool to another namespace (400).
4. ``install``: the pool framework install through Cosmos, a **500**: the DC/OS service name
   (``<namespace>/<name>`` without slashes) over 63 characters, or a package the server does not
   have (a client echoing the ``packageVersion`` it read from an older EdgeLB).

Read from the 2018 server code; deviations, each for a reason: a duplicate bind port 0 is allowed (0
is a dynamic port in the EdgeLB the Go dklb is built against, whose cloud pools put 0 on the stats
port and every frontend); a pool refused at install is not stored (the real server writes it before
installing, so it would appear in GET despite the 500); ``cloudProvider`` (1.3) listener checks are
made here as 400s, from its documentation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.edgelb.schema import (
    API_VERSIONS,
    ELB_TYPES,
    ENDPOINT_TYPES,
    PACKAGE_NAME,
    PACKAGE_VERSION,
    POOL_NAME_RE,
    PROTOCOLS,
    Pool,
    decode_pool,
    default_frontend_name,
)

# go-openapi/errors codes (schema.go): what a 422 carries as its body's code.
REQUIRED = 602
ENUM = 606
MINIMUM = 609
# The DC/OS SDK refuses longer service names.
MAX_SERVICE_NAME = 63

NAMESPACE_RE = re.compile(r"^[a-z0-9](.*[a-z0-9])?$")
SECRET_FILE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
CERTIFICATE_RE = re.compile(r"(^\$AUTOCERT$|^(\$ENVFILE|\$SECRETS)/[a-zA-Z0-9_-]+$)")
HEALTHCHECK_MINIMUMS = (
    ("poolHealthcheckGracePeriod", 1),
    ("poolHealthcheckInterval", 1),
    ("poolHealthcheckMaxFail", 1),
    ("poolHealthcheckTimeout", 2),
)
_MAP_CONDITIONS = ("hostEq", "hostReg", "pathBeg", "pathEnd", "pathReg")


@dataclass(frozen=True)
class Refusal:
    """An error answer: HTTP ``status``, and the body ``{"code": code, "message": message}``."""

    status: int
    code: int
    message: str


def _bad_request(message: str) -> Refusal:
    return Refusal(400, 400, message)


def bind(body: bytes, *, package_version: str = PACKAGE_VERSION) -> tuple[Pool, Refusal | None]:
    """The request body as the server's Go model holds it, or the refusal of the binding."""
    if not body.strip():
        return {}, Refusal(422, REQUIRED, "pool in body is required")
    try:
        value = json.loads(body)
    except ValueError as exc:
        return {}, _bad_request(f'parsing pool body from "" failed, because {exc}')
    return bind_value(value, package_version=package_version)


def bind_value(value: Any, *, package_version: str = PACKAGE_VERSION) -> tuple[Pool, Refusal | None]:
    """``bind`` for an already parsed JSON value."""
    pool, error = decode_pool(value, package_version=package_version)
    if error is not None:
        return pool, _bad_request(f'parsing pool body from "" failed, because {error}')
    refusal = next(_swagger(pool), None)
    return pool, refusal


def _enum(name: str, value: str, allowed: tuple[str, ...]) -> Iterator[Refusal]:
    # Like go-swagger: a zero value is not validated; the message names the property, not its path.
    if value and value not in allowed:
        yield Refusal(422, ENUM, f"{name} in body should be one of [{' '.join(allowed)}]")


def _swagger(pool: Pool) -> Iterator[Refusal]:
    """The swagger validation of the body, in go-swagger's order (properties sorted by name)."""
    yield from _enum("apiVersion", pool["apiVersion"], API_VERSIONS)
    for elb in ((pool["cloudProvider"] or {}).get("aws") or {}).get("elbs") or []:
        yield from _enum("type", elb["type"], ELB_TYPES)
    haproxy = pool["haproxy"]
    for backend in haproxy["backends"]:
        yield from _enum("protocol", backend["protocol"], PROTOCOLS)
        for service in backend["services"]:
            yield from _enum("type", service["endpoint"]["type"], ENDPOINT_TYPES)
    for frontend in haproxy["frontends"]:
        yield from _enum("protocol", frontend["protocol"], PROTOCOLS)
    for key, minimum in HEALTHCHECK_MINIMUMS:
        if pool[key] is not None and pool[key] < minimum:
            yield Refusal(422, MINIMUM, f"{key} in body should be greater than or equal to {minimum}")


def check(pool: Pool) -> list[Refusal]:
    """Everything ``V2CheckPool`` refuses in the bound pool, in its order (it answers the first)."""
    return [_bad_request(message) for message in _check_pool(pool)]


def _empty(what: str) -> str:
    return f"{what} cannot be empty or the empty string"


def _check_pool(pool: Pool) -> Iterator[str]:
    name, namespace = pool["name"], pool["namespace"] or ""
    if not name:
        yield _empty("pool.name")
    elif not POOL_NAME_RE.match(name):
        yield f"pool.name: {name} invalid: did not match {POOL_NAME_RE.pattern}"
    if namespace and not NAMESPACE_RE.match(namespace):
        yield f"pool.namespace: {namespace} invalid: did not match {NAMESPACE_RE.pattern}"
    elif namespace:
        for part in namespace.split("/"):
            if not POOL_NAME_RE.match(part):
                yield f"pool.namespace: {part} invalid: did not match {POOL_NAME_RE.pattern}"
    yield from _check_bind_ports(pool)
    yield from _check_secrets(pool)
    networks: set[str] = set()
    for network in pool["virtualNetworks"]:
        if not network["name"]:
            yield _empty("pool.virtualNetworks.name")
        elif network["name"] in networks:
            yield f"duplicate virtualNetwork name: {network['name']}"
        networks.add(network["name"])
    yield from _check_haproxy(pool["haproxy"])
    yield from _check_cloud_provider(pool)


def _check_bind_ports(pool: Pool) -> Iterator[str]:
    haproxy = pool["haproxy"]
    # pool.ports, when given, replaces the ports the pool allocates (and so the ones checked here).
    ports = pool["ports"] or [haproxy["stats"]["bindPort"], *(fe["bindPort"] for fe in haproxy["frontends"])]
    seen: set[int] = set()
    for port in ports:
        if port is None or not 0 <= port <= 65535:
            yield f"invalid bindPort: {-1 if port is None else port}"
        elif port in seen and port != 0:
            yield f"duplicate bindPort: {port}"
        seen.add(port)


def _check_secrets(pool: Pool) -> Iterator[str]:
    names: set[str] = set()
    files: set[str] = set()
    for secret in pool["secrets"]:
        if not secret["secret"]:
            yield _empty("pool.secrets.secret")
        elif not secret["file"]:
            yield _empty("pool.secrets.file")
        elif not SECRET_FILE_RE.match(secret["file"]):
            yield f"pool.secrets.file: {secret['file']} invalid: did not match {SECRET_FILE_RE.pattern}"
        elif secret["secret"] in names:
            yield f"duplicate secret name: {secret['secret']}"
        elif secret["file"] in files:
            yield f"duplicate secret file: {secret['file']}"
        names.add(secret["secret"])
        files.add(secret["file"])


def _check_haproxy(haproxy: Pool) -> Iterator[str]:
    frontend_names: set[str] = set()
    referenced: set[str] = set()
    for frontend in haproxy["frontends"]:
        name = frontend["name"] or default_frontend_name(frontend)
        if name in frontend_names:
            yield f"duplicate frontend.name: {name}"
        frontend_names.add(name)
        link = frontend["linkBackend"] or {"defaultBackend": "", "map": []}
        referenced.update([link["defaultBackend"], *(entry["backend"] for entry in link["map"])])
    referenced.discard("")
    backend_names: set[str] = set()
    for backend in haproxy["backends"]:
        if backend["name"] in backend_names:
            yield f"duplicate backend.name: {backend['name']}"
        backend_names.add(backend["name"])
    for frontend in haproxy["frontends"]:
        yield from _check_frontend(frontend)
    for backend in haproxy["backends"]:
        yield from _check_backend(backend)
    if missing := sorted(referenced - backend_names):
        yield f"frontends refer to nonexistent backends: {', '.join(missing)}"
    if unreferenced := sorted(backend_names - referenced):
        yield f"frontends do not refer to these backends: {', '.join(unreferenced)}"


def _check_frontend(frontend: Pool) -> Iterator[str]:
    if bad := next((c for c in frontend["bindAddress"] if c in "*[]"), None):
        yield f"frontend.bindAddress invalid character: '{bad}'"
    protocol = frontend["protocol"]
    if not protocol:
        yield _empty("frontend.protocol")
    if protocol in ("HTTPS", "TLS"):
        if not frontend["certificates"]:
            yield f"frontend.protocol {protocol} must have non-empty frontend.certificates"
        for cert in frontend["certificates"]:
            if not CERTIFICATE_RE.match(cert):
                yield f"frontend.certificates: {cert} invalid: did not match {CERTIFICATE_RE.pattern}"
    if frontend["redirectToHttps"] is not None and protocol != "HTTP":
        yield f"frontend.redirectToHttps cannot be set with frontend.protocol {protocol}"
    for entry in (frontend["linkBackend"] or {}).get("map") or []:
        if not entry["backend"]:
            yield _empty("frontend.linkBackend.map.backend")
        elif not any(entry[key] for key in _MAP_CONDITIONS):
            yield "frontend.linkBackend.map.backend: at least one of the condition fields must be filled out"


def _check_backend(backend: Pool) -> Iterator[str]:
    if not backend["name"]:
        yield _empty("backend.name")
    if not backend["protocol"]:
        yield _empty("backend.protocol")
    path = (backend["rewriteHttp"] or {}).get("path")
    if path is not None:
        from_path, to_path = path["fromPath"] or "", path["toPath"] or ""
        if from_path.endswith("/") != to_path.endswith("/"):
            yield (
                f"backend.rewriteHttp.path: fromPath '{from_path}' toPath '{to_path}' ending mismatch: "
                "either both end with '/' or neither end with '/'"
            )
    if not backend["services"]:
        yield "backend.services: must have at least 1"
    for service in backend["services"]:
        yield from _check_service(service)


def _check_service(service: Pool) -> Iterator[str]:
    endpoint = service["endpoint"]
    kind = endpoint["type"]
    if kind == "ADDRESS":
        if not endpoint["address"]:
            yield _empty("server.endpoint.address")
        elif endpoint["port"] < 0:
            yield f"server.endpoint.type {kind} must have valid server.port specified"
        return
    if not endpoint["portName"] and not endpoint["allPorts"] and not 0 <= endpoint["port"] <= 65535:
        yield f"server.endpoint.type {kind} must have valid port, portName, portNamePattern, or true allPorts"
        return
    marathon, mesos = service["marathon"] or {}, service["mesos"] or {}
    if marathon.get("serviceID") or marathon.get("serviceIDPattern"):
        return
    if not any(
        mesos.get(k) for k in ("frameworkName", "frameworkNamePattern", "frameworkID", "frameworkIDPattern")
    ):
        mesos_error = _empty("server.mesos.FrameworkName and server.mesos.FrameworkID")
    elif not any(mesos.get(k) for k in ("taskName", "taskNamePattern", "taskID", "taskIDPattern")):
        mesos_error = _empty("server.mesos.TaskName and server.mesos.TaskID")
    else:
        return
    marathon_error = _empty("server.marathon.serviceID")
    yield f"server.marathon or server.mesos must be specified, {marathon_error}, {mesos_error}"


def _check_cloud_provider(pool: Pool) -> Iterator[str]:
    frontends = {fe["name"] or default_frontend_name(fe) for fe in pool["haproxy"]["frontends"]}
    for elb in ((pool["cloudProvider"] or {}).get("aws") or {}).get("elbs") or []:
        if not elb["name"]:
            yield _empty("cloudProvider.aws.elbs.name")
        for listener in elb["listeners"]:
            if not 1 <= listener["port"] <= 65535:
                yield f"cloudProvider.aws.elbs.listeners.port: invalid port {listener['port']}"
            if not listener["linkFrontend"]:
                yield _empty("cloudProvider.aws.elbs.listeners.linkFrontend")
            elif listener["linkFrontend"] not in frontends:
                yield f"cloudProvider.aws.elbs.listeners.linkFrontend: no frontend {listener['linkFrontend']}"


def namespace_change(stored: Pool, pool: Pool) -> Refusal | None:
    """A PUT may not move an existing pool to another namespace (400)."""
    old, new = stored.get("namespace") or "", pool["namespace"] or ""
    if old == new:
        return None
    name = pool["name"]
    return _bad_request(
        f"changing namespace currently not supported: please uninstall pool {name} with namespace {old}, "
        f"wait for the pool to completely uninstall, and then re-install pool {name} "
        f"with the new namespace {new}"
    )


def service_name(pool: Pool) -> str:
    """The DC/OS service name of the pool's framework: ``<namespace>/<name>`` without its slashes."""
    namespace = pool.get("namespace") or ""
    app_id = f"{namespace}/{pool.get('name') or ''}" if namespace else str(pool.get("name") or "")
    return app_id.replace("/", "")


def install(pool: Pool, *, package_version: str = PACKAGE_VERSION) -> Refusal | None:
    """The refusal of the pool framework's install (500), None when it installs."""
    service = service_name(pool)
    if len(service) > MAX_SERVICE_NAME:
        return Refusal(
            500,
            500,
            f"unable to install the framework of pool {pool['name']}: its DC/OS service name {service} "
            f"is {len(service)} characters long, the DC/OS SDK allows {MAX_SERVICE_NAME}",
        )
    cosmos = "error executing cosmos request"
    if pool["packageName"] != PACKAGE_NAME:
        return Refusal(500, 500, f"{cosmos}: PackageNotFound: Package [{pool['packageName']}] not found")
    # An empty version is left out of the Cosmos request, which then installs the version it has.
    if pool["packageVersion"] not in ("", package_version):
        return Refusal(
            500,
            500,
            f"{cosmos}: VersionNotFound: Version [{pool['packageVersion']}] of package [{PACKAGE_NAME}] "
            "not found",
        )
    return None


def refusals(value: Any, *, package_version: str = PACKAGE_VERSION) -> list[Refusal]:
    """Every refusal of a JSON pool, binding first (which stops at one), then checks, then install."""
    pool, refusal = bind_value(value, package_version=package_version)
    if refusal is not None:
        return [refusal]
    found = check(pool)
    installed = install(pool, package_version=package_version)
    return found + ([installed] if installed is not None else [])


def validate_pool(value: Any, *, package_version: str = PACKAGE_VERSION) -> list[str]:
    """The messages of ``refusals``: empty when the real EdgeLB would accept the pool."""
    return [refusal.message for refusal in refusals(value, package_version=package_version)]
