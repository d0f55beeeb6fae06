"""The EdgeLB V2 pool schema facts: validation, server-filled defaults, normalization (pure).

Where it sits in the data flow: ``engine.model.translation`` builds the desired pool and compares it with
what ``GET /v2/pools/{name}`` returned through ``normalize_pool`` (a Ready binding must cause no PUT
on resync); the local EdgeLB server and the test fake run ``validate_pool`` on request bodies to answer
400, and ``fill_defaults`` on what they store, so that they return pools the way the real EdgeLB does.

Everything here works on plain JSON dicts and never mutates its argument.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

Pool = dict[str, Any]

POOL_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

PROTOCOLS = ("HTTP", "HTTPS", "TCP", "TLS")
ENDPOINT_TYPES = ("AUTO_IP", "AGENT_IP", "CONTAINER_IP", "ADDRESS")
# HAProxy `balance` algorithms; EdgeLB passes the string through, parameters included (``hdr(host)``).
BALANCE_ALGORITHMS = (
    "roundrobin",
    "static-rr",
    "leastconn",
    "first",
    "source",
    "uri",
    "url_param",
    "hdr",
    "random",
    "rdp-cookie",
)
ELB_TYPES = ("NLB",)

# Chosen by the server whatever the client sends (the package it deploys the pool with): not part of
# what a client asks for, so comparisons ignore them.
SERVER_ONLY_KEYS = ("packageName", "packageVersion")

# ---------------------------------------------------------------------------------------------------
# The defaults EdgeLB fills into every pool it returns, as written in the API contract
# (shared/edgelb-api.md). This is the single place they live: the local EdgeLB and the fake apply them
# to what they store, the controller applies them to both sides of every comparison. A default that
# is wrong here makes both sides wrong the same way, so a comparison stays correct; a default missing
# here makes a real server's pool differ from the desired one and causes a PUT on every resync.
# ---------------------------------------------------------------------------------------------------
POOL_DEFAULTS: dict[str, Any] = {
    "apiVersion": "V2",
    "namespace": "dcos-edgelb/pools",
    "role": "slave_public",
    "cpus": 0.9,
    "cpusAdminOverhead": 0.1,
    "mem": 992,
    "memAdminOverhead": 32,
    "disk": 256,
    "count": 1,
    "constraints": "hostname:UNIQUE",
    "ports": [],
    "secrets": [],
    "environmentVariables": {},
    "autoCertificate": False,
    "virtualNetworks": [],
    "poolHealthcheckGracePeriod": 180,
    "poolHealthcheckInterval": 12,
    "poolHealthcheckMaxFail": 5,
    "poolHealthcheckTimeout": 60,
}
VIRTUAL_NETWORK_DEFAULTS: dict[str, Any] = {"labels": {}}
STATS_DEFAULTS: dict[str, Any] = {"bindAddress": "0.0.0.0", "bindPort": 9090}
FRONTEND_DEFAULTS: dict[str, Any] = {
    "bindAddress": "0.0.0.0",
    "certificates": [],
    "redirectToHttps": False,
    "miscStrs": [],
}
LINK_BACKEND_DEFAULTS: dict[str, Any] = {"map": []}
BACKEND_DEFAULTS: dict[str, Any] = {"balance": "roundrobin", "miscStrs": [], "services": []}
REWRITE_HTTP_REQUEST_DEFAULTS: dict[str, Any] = {
    "forwardfor": True,
    "xForwardedPort": True,
    "xForwardedProtoHttpsIfTls": True,
    "setHostHeader": True,
    "rewritePath": True,
}
REWRITE_HTTP_RESPONSE_DEFAULTS: dict[str, Any] = {"rewriteLocation": True}
SERVICE_DEFAULTS: dict[str, Any] = {"marathon": {}, "mesos": {}}
ENDPOINT_DEFAULTS: dict[str, Any] = {"type": "AUTO_IP", "port": -1, "allPorts": False}
CHECK_DEFAULTS: dict[str, Any] = {"enabled": True}
ELB_DEFAULTS: dict[str, Any] = {
    "type": "NLB",
    "internal": False,
    "subnets": [],
    "elasticIPs": [],
    "tags": [],
    "listeners": [],
}

# Float noise (a server storing cpus as float32 returns 0.10000000149011612) must not read as a change.
FLOAT_DIGITS = 6


def _apply(target: dict[str, Any], defaults: dict[str, Any]) -> None:
    # Only absent keys: an explicit value (bindPort 0 = dynamic, count 0, "") is the client's choice.
    for key, value in defaults.items():
        if key not in target or target[key] is None:
            target[key] = copy.deepcopy(value)


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    # Malformed entries are validate_pool's business; defaults are applied to what can take them.
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def _sub(parent: dict[str, Any], key: str) -> dict[str, Any] | None:
    if parent.get(key) is None:
        parent[key] = {}
    value = parent[key]
    return value if isinstance(value, dict) else None


def default_frontend_name(frontend: dict[str, Any]) -> str:
    return f"frontend_{frontend.get('bindAddress', '0.0.0.0')}_{frontend.get('bindPort')}"


def fill_defaults(pool: Pool) -> Pool:
    """A deep copy of ``pool`` with every server-filled default applied, as EdgeLB returns it."""
    result = copy.deepcopy(pool)
    if not isinstance(result, dict):
        return result
    _apply(result, POOL_DEFAULTS)
    for network in _dicts(result.get("virtualNetworks")):
        _apply(network, VIRTUAL_NETWORK_DEFAULTS)

    haproxy = _sub(result, "haproxy")
    if haproxy is not None:
        stats = _sub(haproxy, "stats")
        if stats is not None:
            _apply(stats, STATS_DEFAULTS)
        _apply(haproxy, {"frontends": [], "backends": []})
        for frontend in _dicts(haproxy.get("frontends")):
            _apply(frontend, FRONTEND_DEFAULTS)
            if not frontend.get("name"):
                frontend["name"] = default_frontend_name(frontend)
            link = _sub(frontend, "linkBackend")
            if link is not None:
                _apply(link, LINK_BACKEND_DEFAULTS)
        for backend in _dicts(haproxy.get("backends")):
            _fill_backend(backend)

    cloud = result.get("cloudProvider")
    if isinstance(cloud, dict) and isinstance(cloud.get("aws"), dict):
        for elb in _dicts(cloud["aws"].get("elbs")):
            _apply(elb, ELB_DEFAULTS)
    return result


def _fill_backend(backend: dict[str, Any]) -> None:
    _apply(backend, BACKEND_DEFAULTS)
    rewrite = _sub(backend, "rewriteHttp")
    if rewrite is not None:
        request = _sub(rewrite, "request")
        if request is not None:
            _apply(request, REWRITE_HTTP_REQUEST_DEFAULTS)
        response = _sub(rewrite, "response")
        if response is not None:
            _apply(response, REWRITE_HTTP_RESPONSE_DEFAULTS)
    for service in _dicts(backend.get("services")):
        _apply(service, SERVICE_DEFAULTS)
        endpoint = _sub(service, "endpoint")
        if endpoint is not None:
            _apply(endpoint, ENDPOINT_DEFAULTS)
            check = _sub(endpoint, "check")
            if check is not None:
                _apply(check, CHECK_DEFAULTS)


def _by_name(items: Any) -> Any:
    if not isinstance(items, list):
        return items
    # The JSON text breaks ties so that two unnamed or same-named entries still sort deterministically.
    return sorted(
        items, key=lambda item: (str(item.get("name", "")) if isinstance(item, dict) else "", _key(item))
    )


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _clean(value: Any) -> Any:
    # JSON null and an absent key mean the same to EdgeLB; floats lose their representation noise.
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return round(value, FLOAT_DIGITS)
    return value


def normalize_pool(pool: Pool) -> Pool:
    """The canonical form of a pool: defaults filled, named lists sorted, server-only keys removed.

    ``normalize_pool(what_we_sent) == normalize_pool(what_the_server_returned)`` for an unchanged pool.
    """
    result = _clean(fill_defaults(_clean(pool)))
    if not isinstance(result, dict):
        return result
    for key in SERVER_ONLY_KEYS:
        result.pop(key, None)
    result["virtualNetworks"] = _by_name(result.get("virtualNetworks"))
    haproxy = result.get("haproxy")
    if isinstance(haproxy, dict):
        haproxy["frontends"] = _by_name(haproxy.get("frontends"))
        haproxy["backends"] = _by_name(haproxy.get("backends"))
    return result


# --------------------------------------------------------------------------------------------------
# Validation. Messages follow EdgeLB's: "pool.<path>: <value> invalid: <reason>" / "pool.<path>: required".
# --------------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def bad(self, path: str, value: Any, reason: str) -> None:
        self.errors.append(f"pool.{path}: {_show(value)} invalid: {reason}")

    def required(self, path: str) -> None:
        self.errors.append(f"pool.{path}: required")

    def typed(self, obj: dict[str, Any], key: str, path: str, kind: str, *, required: bool = False) -> bool:
        """True when ``obj[key]`` is present and of ``kind``; records an error otherwise (absent is fine
        unless ``required``)."""
        full = f"{path}.{key}" if path else key
        if key not in obj or obj[key] is None:
            if required:
                self.required(full)
            return False
        value = obj[key]
        if not _TYPES[kind](value):
            self.bad(full, value, f"must be {kind}")
            return False
        return True

    def ranged(self, obj: dict[str, Any], key: str, path: str, low: float, high: float | None = None) -> None:
        if self.typed(obj, key, path, "number" if isinstance(low, float) else "integer"):
            value = obj[key]
            if value < low or (high is not None and value > high):
                bound = f">= {low}" if high is None else f"between {low} and {high}"
                self.bad(f"{path}.{key}" if path else key, value, f"must be {bound}")

    def enum(self, obj: dict[str, Any], key: str, path: str, allowed: tuple[str, ...], **kw: bool) -> None:
        if self.typed(obj, key, path, "string", **kw) and obj[key] not in allowed:
            self.bad(f"{path}.{key}", obj[key], f"must be one of {', '.join(allowed)}")

    def items(self, obj: dict[str, Any], key: str, path: str, kind: str) -> list[tuple[str, Any]]:
        """The (path, item) pairs of the list ``obj[key]`` whose items are of ``kind``."""
        if not self.typed(obj, key, path, "array"):
            return []
        good = []
        for i, item in enumerate(obj[key]):
            item_path = f"{path}.{key}[{i}]" if path else f"{key}[{i}]"
            if _TYPES[kind](item):
                good.append((item_path, item))
            else:
                self.bad(item_path, item, f"must be {kind}")
        return good


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def validate_pool(pool: Any) -> list[str]:
    """EdgeLB-style messages for everything wrong with a pool request body; empty when it is valid.

    Absent fields that have defaults are fine: validation looks at what the client sent.
    """
    c = _Checker()
    if not isinstance(pool, dict):
        return [f"pool: {_show(pool)} invalid: must be object"]
    if c.typed(pool, "name", "", "string", required=True) and not POOL_NAME_RE.match(pool["name"]):
        c.bad("name", pool["name"], f"did not match {POOL_NAME_RE.pattern}")
    if c.typed(pool, "apiVersion", "", "string") and pool["apiVersion"] != "V2":
        c.bad("apiVersion", pool["apiVersion"], "must be one of V2")
    for key in (
        "namespace",
        "packageName",
        "packageVersion",
        "role",
        "principal",
        "secretName",
        "constraints",
    ):
        c.typed(pool, key, "", "string")
    for key in ("cpus", "cpusAdminOverhead"):
        c.ranged(pool, key, "", 0.0)
    for key in ("mem", "memAdminOverhead", "disk", "count", *_HEALTHCHECK_KEYS):
        c.ranged(pool, key, "", 0)
    c.typed(pool, "autoCertificate", "", "boolean")
    for path, port in c.items(pool, "ports", "", "integer"):
        if not 0 <= port <= 65535:
            c.bad(path, port, "must be between 0 and 65535")
    for path, secret in c.items(pool, "secrets", "", "object"):
        c.typed(secret, "secret", path, "string", required=True)
        c.typed(secret, "file", path, "string", required=True)
    if c.typed(pool, "environmentVariables", "", "object"):
        for name, value in pool["environmentVariables"].items():
            if not isinstance(value, str):
                c.bad(f"environmentVariables.{name}", value, "must be string")
    for path, network in c.items(pool, "virtualNetworks", "", "object"):
        if c.typed(network, "name", path, "string", required=True) and not network["name"]:
            c.bad(f"{path}.name", network["name"], "must not be empty")
        c.typed(network, "labels", path, "object")

    frontend_names: set[str] = set()
    if c.typed(pool, "haproxy", "", "object"):
        frontend_names = _validate_haproxy(c, pool["haproxy"])
    if c.typed(pool, "cloudProvider", "", "object"):
        _validate_cloud_provider(c, pool["cloudProvider"], frontend_names)
    return c.errors


_HEALTHCHECK_KEYS = (
    "poolHealthcheckGracePeriod",
    "poolHealthcheckInterval",
    "poolHealthcheckMaxFail",
    "poolHealthcheckTimeout",
)


def _validate_haproxy(c: _Checker, haproxy: dict[str, Any]) -> set[str]:
    bound: dict[tuple[str, int], str] = {}
    stats: dict[str, Any] = {}
    if c.typed(haproxy, "stats", "haproxy", "object"):
        stats = haproxy["stats"]
        c.typed(stats, "bindAddress", "haproxy.stats", "string")
        c.ranged(stats, "bindPort", "haproxy.stats", 0, 65535)
    # An absent stats port is the default 9090, which a frontend can clash with just as well.
    stats = {**STATS_DEFAULTS, **{k: v for k, v in stats.items() if v is not None}}
    if _is_int(stats["bindPort"]) and stats["bindPort"] > 0:
        bound[(str(stats["bindAddress"]), stats["bindPort"])] = "haproxy.stats"

    backend_names: set[str] = set()
    for path, backend in c.items(haproxy, "backends", "haproxy", "object"):
        if c.typed(backend, "name", path, "string", required=True):
            if backend["name"] in backend_names:
                c.bad(f"{path}.name", backend["name"], "duplicate backend name")
            backend_names.add(backend["name"])
        _validate_backend(c, path, backend)

    frontend_names: set[str] = set()
    for path, frontend in c.items(haproxy, "frontends", "haproxy", "object"):
        c.typed(frontend, "bindAddress", path, "string")
        c.ranged(frontend, "bindPort", path, 0, 65535)
        if "bindPort" not in frontend:
            c.required(f"{path}.bindPort")
        c.enum(frontend, "protocol", path, PROTOCOLS, required=True)
        name = frontend.get("name") or default_frontend_name(frontend)
        if c.typed(frontend, "name", path, "string") or "name" not in frontend:
            if name in frontend_names:
                c.bad(f"{path}.name", name, "duplicate frontend name")
            frontend_names.add(name)
        port = frontend.get("bindPort")
        if _is_int(port) and port > 0:
            # Port 0 is dynamic: the server picks a free one, so zeros never clash.
            address = str(frontend.get("bindAddress", "0.0.0.0"))
            clash = bound.get((address, port)) or bound.get(("0.0.0.0", port))
            if clash is None and address == "0.0.0.0":
                clash = next((owner for (_, p), owner in bound.items() if p == port), None)
            if clash is not None:
                c.bad(f"{path}.bindPort", port, f"already bound by {clash}")
            bound[(address, port)] = f"{path} ({name})"
        c.typed(frontend, "bindModifier", path, "string")
        c.typed(frontend, "redirectToHttps", path, "boolean")
        c.items(frontend, "certificates", path, "string")
        c.items(frontend, "miscStrs", path, "string")
        if c.typed(frontend, "linkBackend", path, "object"):
            link, link_path = frontend["linkBackend"], f"{path}.linkBackend"
            if (
                c.typed(link, "defaultBackend", link_path, "string")
                and link["defaultBackend"] not in backend_names
            ):
                c.bad(f"{link_path}.defaultBackend", link["defaultBackend"], "no such backend")
            for map_path, entry in c.items(link, "map", link_path, "object"):
                if c.typed(entry, "backend", map_path, "string", required=True) and (
                    entry["backend"] not in backend_names
                ):
                    c.bad(f"{map_path}.backend", entry["backend"], "no such backend")
    return frontend_names


def _validate_backend(c: _Checker, path: str, backend: dict[str, Any]) -> None:
    c.enum(backend, "protocol", path, PROTOCOLS, required=True)
    if c.typed(backend, "balance", path, "string"):
        algorithm = re.split(r"[\s(]", backend["balance"].strip(), maxsplit=1)[0]
        if algorithm not in BALANCE_ALGORITHMS:
            c.bad(f"{path}.balance", backend["balance"], f"must be one of {', '.join(BALANCE_ALGORITHMS)}")
    c.items(backend, "miscStrs", path, "string")
    c.typed(backend, "rewriteHttp", path, "object")
    c.typed(backend, "customCheck", path, "object")
    for service_path, service in c.items(backend, "services", path, "object"):
        c.typed(service, "marathon", service_path, "object")
        c.typed(service, "mesos", service_path, "object")
        if not c.typed(service, "endpoint", service_path, "object"):
            continue
        endpoint, endpoint_path = service["endpoint"], f"{service_path}.endpoint"
        c.enum(endpoint, "type", endpoint_path, ENDPOINT_TYPES)
        c.ranged(endpoint, "port", endpoint_path, -1, 65535)
        c.typed(endpoint, "portName", endpoint_path, "string")
        c.typed(endpoint, "allPorts", endpoint_path, "boolean")
        c.typed(endpoint, "miscStr", endpoint_path, "string")
        has_address = c.typed(endpoint, "address", endpoint_path, "string") and endpoint["address"] != ""
        if endpoint.get("type") == "ADDRESS" and not has_address:
            c.required(f"{endpoint_path}.address")
        if c.typed(endpoint, "check", endpoint_path, "object"):
            c.typed(endpoint["check"], "enabled", f"{endpoint_path}.check", "boolean")
            c.typed(endpoint["check"], "customStr", f"{endpoint_path}.check", "string")


def _validate_cloud_provider(c: _Checker, cloud: dict[str, Any], frontend_names: set[str]) -> None:
    if not c.typed(cloud, "aws", "cloudProvider", "object"):
        return
    for path, elb in c.items(cloud["aws"], "elbs", "cloudProvider.aws", "object"):
        c.typed(elb, "name", path, "string", required=True)
        c.enum(elb, "type", path, ELB_TYPES)
        c.typed(elb, "internal", path, "boolean")
        for key in ("subnets", "elasticIPs"):
            c.items(elb, key, path, "string")
        c.typed(elb, "tags", path, "array")
        for listener_path, listener in c.items(elb, "listeners", path, "object"):
            c.ranged(listener, "port", listener_path, 1, 65535)
            if "port" not in listener:
                c.required(f"{listener_path}.port")
            if c.typed(listener, "linkFrontend", listener_path, "string", required=True) and (
                listener["linkFrontend"] not in frontend_names
            ):
                c.bad(f"{listener_path}.linkFrontend", listener["linkFrontend"], "no such frontend")
            c.typed(listener, "protocol", listener_path, "string")
