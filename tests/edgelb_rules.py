"""The real EdgeLB's refusals as one table: what a POST body gets, status, body code and message.

Shared by the tests of the pure rules (``tests/unit/test_edgelb_validation.py``: ``edgelb_local
.validation`` and the fake EdgeLB) and of the local EdgeLB over HTTP
(``tests/integration/test_edgelb_local_api.py``), so the three cannot drift apart. Each row starts
from ``valid_pool()`` (a pool as dklb makes it) and changes one thing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

Pool = dict[str, Any]
NAME = "dklb-redis"
BACKEND = "kubernetes-cluster:default:redis:6379"
FRONTEND = BACKEND
MESOS = {"frameworkName": "kubernetes-cluster", "taskNamePattern": "^kube-node-.*$"}
PARSING = 'parsing pool body from "" failed, because json: cannot unmarshal'
MUST_PORT = "must have valid port, portName, portNamePattern, or true allPorts"
NO_SELECTOR = (
    "server.marathon or server.mesos must be specified, "
    "server.marathon.serviceID cannot be empty or the empty string"
)
EMPTY = "cannot be empty or the empty string"
NAME_RE = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"


def valid_pool() -> Pool:
    """A pool EdgeLB accepts: dklb's shape (dynamic stats port, Mesos selector, CONTAINER_IP)."""
    return {
        "name": NAME,
        "haproxy": {
            "stats": {"bindPort": 0},
            "frontends": [
                {
                    "name": FRONTEND,
                    "bindAddress": "0.0.0.0",
                    "bindPort": 16379,
                    "protocol": "TCP",
                    "linkBackend": {"defaultBackend": BACKEND},
                }
            ],
            "backends": [
                {
                    "name": BACKEND,
                    "protocol": "TCP",
                    "services": [
                        {
                            "mesos": dict(MESOS),
                            "endpoint": {"type": "CONTAINER_IP", "port": 32213, "check": {"enabled": True}},
                        }
                    ],
                }
            ],
        },
    }


def _frontend(pool: Pool) -> Pool:
    return pool["haproxy"]["frontends"][0]


def _backend(pool: Pool) -> Pool:
    return pool["haproxy"]["backends"][0]


def _service(pool: Pool) -> Pool:
    return _backend(pool)["services"][0]


def _endpoint(pool: Pool) -> Pool:
    return _service(pool)["endpoint"]


def _extra_frontend(pool: Pool, **fields: Any) -> Pool:
    """Adds a second frontend (port 80) to the same backend; returns the pool."""
    pool["haproxy"]["frontends"].append({**_frontend(pool), "name": "other", "bindPort": 80, **fields})
    return pool


def _extra_backend(pool: Pool, name: str) -> None:
    pool["haproxy"]["backends"].append({**copy.deepcopy(_backend(pool)), "name": name})


def _elb(**fields: Any) -> Pool:
    return {
        "aws": {"elbs": [{"name": "lb", "listeners": [{"port": 6379, "linkFrontend": FRONTEND}], **fields}]}
    }


@dataclass(frozen=True)
class Rule:
    id: str
    change: Callable[[Pool], Any] | bytes  # a change to valid_pool(), or the raw body
    status: int
    code: int
    message: str

    def body(self) -> bytes:
        if isinstance(self.change, bytes):
            return self.change
        pool = valid_pool()
        self.change(pool)
        return json.dumps(pool).encode()


def _set(key: str, value: Any) -> Callable[[Pool], Any]:
    return lambda pool: pool.__setitem__(key, value)


def _bad(id: str, change: Callable[[Pool], Any] | bytes, message: str) -> Rule:
    """Refused with a 400: a JSON error, or one of EdgeLB's checks."""
    return Rule(id, change, 400, 400, message)


def _schema(id: str, change: Callable[[Pool], Any], code: int, message: str) -> Rule:
    """Refused by the swagger validation: 422 with go-openapi's code."""
    return Rule(id, change, 422, code, message)


def _install(id: str, change: Callable[[Pool], Any], message: str) -> Rule:
    """Accepted, but the pool framework cannot be installed: 500."""
    return Rule(id, change, 500, 500, message)


REFUSED: list[Rule] = [
    # -- the binding: JSON errors (400), swagger validation (422, go-openapi codes) ------------------
    Rule("empty body", b"", 422, 602, "pool in body is required"),
    _bad(
        "not JSON",
        b"{not json",
        'parsing pool body from "" failed, because '
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    _bad("array body", b"[]", f"{PARSING} array into Go value of type models.V2PoolAlias"),
    _bad(
        "int32 given 128.0",
        lambda p: _endpoint(p).update(port=128.0),
        f"{PARSING} number 128.0 into Go struct field V2EndpointAlias.port of type int32",
    ),
    _bad(
        "bool given a string",
        lambda p: _endpoint(p).update(allPorts="yes"),
        f"{PARSING} string into Go struct field V2EndpointAlias.allPorts of type bool",
    ),
    _bad(
        "redirectToHttps as a boolean",
        lambda p: _frontend(p).update(protocol="HTTP", redirectToHttps=True),
        f"{PARSING} bool into Go value of type models.V2FrontendRedirectToHTTPSAlias",
    ),
    _schema("apiVersion enum", _set("apiVersion", "V3"), 606, "apiVersion in body should be one of [V1 V2]"),
    _schema(
        "frontend protocol enum",
        lambda p: _frontend(p).update(protocol="UDP"),
        606,
        "protocol in body should be one of [HTTP HTTPS TCP TLS]",
    ),
    _schema(
        "backend protocol enum",
        lambda p: _backend(p).update(protocol="tcp"),
        606,
        "protocol in body should be one of [HTTP HTTPS TCP TLS]",
    ),
    _schema(
        "endpoint type enum",
        lambda p: _endpoint(p).update(type="POD_IP"),
        606,
        "type in body should be one of [AUTO_IP AGENT_IP CONTAINER_IP ADDRESS]",
    ),
    _schema(
        "cloud LB type enum",
        _set("cloudProvider", _elb(type="ALB")),
        606,
        "type in body should be one of [NLB]",
    ),
    *(
        _schema(
            f"{key} minimum",
            _set(key, minimum - 1),
            609,
            f"{key} in body should be greater than or equal to {minimum}",
        )
        for key, minimum in (
            ("poolHealthcheckGracePeriod", 1),
            ("poolHealthcheckInterval", 1),
            ("poolHealthcheckMaxFail", 1),
            ("poolHealthcheckTimeout", 2),
        )
    ),
    # -- EdgeLB's checks (400) ----------------------------------------------------------------------
    _bad("no name", _set("name", ""), "pool.name cannot be empty or the empty string"),
    _bad("name pattern", _set("name", "foo:bar"), f"pool.name: foo:bar invalid: did not match {NAME_RE}"),
    _bad(
        "namespace pattern",
        _set("namespace", "dcos/pools/"),
        "pool.namespace: dcos/pools/ invalid: did not match ^[a-z0-9](.*[a-z0-9])?$",
    ),
    _bad(
        "namespace part",
        _set("namespace", "dcos/Pools1"),
        f"pool.namespace: Pools1 invalid: did not match {NAME_RE}",
    ),
    _bad("frontend without bindPort", lambda p: _frontend(p).pop("bindPort"), "invalid bindPort: -1"),
    _bad("bindPort too big", lambda p: _frontend(p).update(bindPort=65536), "invalid bindPort: 65536"),
    _bad(
        "stats port repeats a frontend's",
        lambda p: p["haproxy"]["stats"].update(bindPort=16379),
        "duplicate bindPort: 16379",
    ),
    _bad(
        "absent stats port is 9090",
        lambda p: (p["haproxy"].pop("stats"), _frontend(p).update(bindPort=9090)),
        "duplicate bindPort: 9090",
    ),
    _bad(
        "ports compared whatever the address",
        lambda p: _extra_frontend(p, bindAddress="10.0.0.1", bindPort=16379),
        "duplicate bindPort: 16379",
    ),
    _bad("pool.ports repeat", _set("ports", [80, 80]), "duplicate bindPort: 80"),
    _bad(
        "secret without file",
        _set("secrets", [{"secret": "s"}]),
        "pool.secrets.file cannot be empty or the empty string",
    ),
    _bad(
        "secret file name",
        _set("secrets", [{"secret": "s", "file": "a/b"}]),
        "pool.secrets.file: a/b invalid: did not match ^[a-zA-Z0-9][a-zA-Z0-9_-]*$",
    ),
    _bad(
        "secret twice",
        _set("secrets", [{"secret": "s", "file": "a"}, {"secret": "s", "file": "b"}]),
        "duplicate secret name: s",
    ),
    _bad(
        "virtual network without name",
        _set("virtualNetworks", [{"labels": {"a": "b"}}]),
        "pool.virtualNetworks.name cannot be empty or the empty string",
    ),
    _bad(
        "virtual network twice",
        _set("virtualNetworks", [{"name": "dcos"}, {"name": "dcos"}]),
        "duplicate virtualNetwork name: dcos",
    ),
    _bad(
        "frontend name twice",
        lambda p: _extra_frontend(p, name=FRONTEND),
        f"duplicate frontend.name: {FRONTEND}",
    ),
    _bad("backend name twice", lambda p: _extra_backend(p, BACKEND), f"duplicate backend.name: {BACKEND}"),
    _bad(
        "bindAddress with *",
        lambda p: _frontend(p).update(bindAddress="*"),
        "frontend.bindAddress invalid character: '*'",
    ),
    _bad(
        "bindAddress with [",
        lambda p: _frontend(p).update(bindAddress="[::]"),
        "frontend.bindAddress invalid character: '['",
    ),
    _bad(
        "frontend without protocol",
        lambda p: _frontend(p).pop("protocol"),
        "frontend.protocol cannot be empty or the empty string",
    ),
    _bad(
        "HTTPS without certificates",
        lambda p: _frontend(p).update(protocol="HTTPS"),
        "frontend.protocol HTTPS must have non-empty frontend.certificates",
    ),
    _bad(
        "certificate path",
        lambda p: _frontend(p).update(protocol="TLS", certificates=["/etc/x.pem"]),
        r"frontend.certificates: /etc/x.pem invalid: did not match "
        r"(^\$AUTOCERT$|^(\$ENVFILE|\$SECRETS)/[a-zA-Z0-9_-]+$)",
    ),
    _bad(
        "redirectToHttps on TCP",
        lambda p: _frontend(p).update(redirectToHttps={}),
        "frontend.redirectToHttps cannot be set with frontend.protocol TCP",
    ),
    _bad(
        "map entry without backend",
        lambda p: _frontend(p)["linkBackend"].update(map=[{"hostEq": "a"}]),
        "frontend.linkBackend.map.backend cannot be empty or the empty string",
    ),
    _bad(
        "map entry without condition",
        lambda p: _frontend(p)["linkBackend"].update(map=[{"backend": BACKEND}]),
        "frontend.linkBackend.map.backend: at least one of the condition fields must be filled out",
    ),
    _bad(
        "backend without protocol",
        lambda p: _backend(p).pop("protocol"),
        "backend.protocol cannot be empty or the empty string",
    ),
    _bad(
        "rewrite path endings",
        lambda p: _backend(p).update(rewriteHttp={"path": {"fromPath": "/a/", "toPath": "/b"}}),
        "backend.rewriteHttp.path: fromPath '/a/' toPath '/b' ending mismatch: "
        "either both end with '/' or neither end with '/'",
    ),
    _bad(
        "backend without services",
        lambda p: _backend(p).update(services=[]),
        "backend.services: must have at least 1",
    ),
    _bad(
        "ADDRESS without address",
        lambda p: _endpoint(p).update(type="ADDRESS"),
        "server.endpoint.address cannot be empty or the empty string",
    ),
    _bad(
        "ADDRESS without port",
        lambda p: (_endpoint(p).update(type="ADDRESS", address="10.0.0.1"), _endpoint(p).pop("port")),
        "server.endpoint.type ADDRESS must have valid server.port specified",
    ),
    _bad(
        "endpoint without port",
        lambda p: _endpoint(p).pop("port"),
        f"server.endpoint.type CONTAINER_IP {MUST_PORT}",
    ),
    _bad(
        "endpoint port -1",
        lambda p: _endpoint(p).update(port=-1),
        f"server.endpoint.type CONTAINER_IP {MUST_PORT}",
    ),
    _bad(
        "endpoint port too big",
        lambda p: (_endpoint(p).pop("type"), _endpoint(p).update(port=65536)),
        f"server.endpoint.type AUTO_IP {MUST_PORT}",
    ),
    _bad(
        "Mesos selector without framework",
        lambda p: _service(p)["mesos"].pop("frameworkName"),
        f"{NO_SELECTOR}, server.mesos.FrameworkName and server.mesos.FrameworkID {EMPTY}",
    ),
    _bad(
        "Mesos selector without task",
        lambda p: _service(p)["mesos"].pop("taskNamePattern"),
        f"{NO_SELECTOR}, server.mesos.TaskName and server.mesos.TaskID {EMPTY}",
    ),
    _bad(
        "frontend names no backend",
        lambda p: _frontend(p)["linkBackend"].update(defaultBackend="nope"),
        "frontends refer to nonexistent backends: nope",
    ),
    _bad(
        "backend no frontend names",
        lambda p: _extra_backend(p, "lonely"),
        "frontends do not refer to these backends: lonely",
    ),
    _bad(
        "cloud listener without frontend",
        _set(
            "cloudProvider",
            {"aws": {"elbs": [{"name": "lb", "listeners": [{"port": 80, "linkFrontend": "x"}]}]}},
        ),
        "cloudProvider.aws.elbs.listeners.linkFrontend: no frontend x",
    ),
    # -- the pool framework install (500) -----------------------------------------------------------
    _install(
        "service name over 63",
        _set("name", "p" * 48),
        f"unable to install the framework of pool {'p' * 48}: its DC/OS service name "
        f"dcos-edgelbpools{'p' * 48} is 64 characters long, the DC/OS SDK allows 63",
    ),
    _install(
        "service name over 63 in a pool group",
        lambda p: p.update(name="p" * 46, namespace="team-a/edgelb-pools"),
        f"unable to install the framework of pool {'p' * 46}: its DC/OS service name "
        f"team-aedgelb-pools{'p' * 46} is 64 characters long, the DC/OS SDK allows 63",
    ),
    _install(
        "a package version EdgeLB does not have",
        _set("packageVersion", "v1.4.0"),
        "error executing cosmos request: VersionNotFound: Version [v1.4.0] of package [edgelb-pool]"
        " not found",
    ),
    _install(
        "another package",
        _set("packageName", "edgelb"),
        "error executing cosmos request: PackageNotFound: Package [edgelb] not found",
    ),
]


ACCEPTED: list[tuple[str, Callable[[Pool], Any]]] = [
    ("as dklb makes it", lambda p: None),
    # 0 is a valid port for EdgeLB's check (it reads back as -1: see the round-trip tests).
    ("endpoint port 0", lambda p: _endpoint(p).update(port=0)),
    ("ADDRESS port 0", lambda p: _endpoint(p).update(type="ADDRESS", address="10.0.0.1", port=0)),
    ("a named port", lambda p: (_endpoint(p).pop("port"), _endpoint(p).update(portName="redis"))),
    ("all ports", lambda p: (_endpoint(p).pop("port"), _endpoint(p).update(allPorts=True))),
    (
        "framework by pattern",
        lambda p: _service(p).update(mesos={"frameworkNamePattern": "^k", "taskName": "a"}),
    ),
    (
        "framework and task by ID",
        lambda p: _service(p).update(mesos={"frameworkID": "f-1", "taskIDPattern": "."}),
    ),
    ("a Marathon service", lambda p: _service(p).update(mesos={}, marathon={"serviceID": "/redis"})),
    ("dynamic ports repeat", lambda p: (_frontend(p).update(bindPort=0), _extra_frontend(p, bindPort=0))),
    (
        "pool.ports replaces the bind ports",
        lambda p: (_set("ports", [80, 9090])(p), _frontend(p).pop("bindPort")),
    ),
    (
        "redirect on HTTP",
        lambda p: _frontend(p).update(protocol="HTTP", redirectToHttps={"except": [{"host": "a"}]}),
    ),
    (
        "map entry with a condition",
        lambda p: _frontend(p)["linkBackend"].update(map=[{"backend": BACKEND, "pathBeg": "/"}]),
    ),
    ("TLS with an autocert", lambda p: _frontend(p).update(protocol="TLS", certificates=["$AUTOCERT"])),
    ("unknown keys", lambda p: (p.update(replicas=3), _frontend(p).update(color="red"))),
    ("the server's package", lambda p: p.update(packageName="edgelb-pool", packageVersion="v1.5.1")),
    ("an empty package version", _set("packageVersion", "")),
    ("a service name of 63", _set("name", "p" * 47)),
    ("healthcheck minimums", lambda p: p.update(poolHealthcheckInterval=1, poolHealthcheckTimeout=2)),
]


def refused_cases() -> list[Any]:
    return [pytest.param(rule, id=rule.id) for rule in REFUSED]


def accepted_cases() -> list[Any]:
    return [pytest.param(change, id=name) for name, change in ACCEPTED]
