"""An Ingress's backends, one per (Service, port), and named-port resolution (ingress.backends)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.ingress.backends import (
    INVALID_BACKEND_SERVICE,
    IngressBackend,
    Problem,
    Target,
    ingress_backends,
    resolve,
    service_refs,
)

CLUSTER = "kubernetes"


def ref(service: str, port: int | str) -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"service": {"name": service, "port": {key: port}}}


def ingress(
    default: dict[str, Any] | None = None, *rules: tuple[str | None, list[dict[str, Any]]]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "rules": [
            {
                **({"host": host} if host else {}),
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": b} for b in backends]},
            }
            for host, backends in rules
        ]
    }
    if default is not None:
        spec["defaultBackend"] = default
    return {"metadata": {"namespace": "ns", "name": "web"}, "spec": spec}


def service(*ports: dict[str, Any], kind: str = "NodePort") -> dict[str, Any]:
    return {"spec": {"type": kind, "ports": list(ports)}}


SERVICES = {
    "echo": service(
        {"name": "http", "port": 80, "nodePort": 30080},
        {"name": "admin", "port": 9000, "nodePort": 30900},
        {"name": "dns", "port": 53, "nodePort": 30053, "protocol": "UDP"},
    ),
    "unnamed": service({"port": 80, "nodePort": 31080}),
    "internal": service({"name": "http", "port": 80}, kind="ClusterIP"),
}


def name(service_name: str, port: int | str) -> str:
    return f"{CLUSTER}:ns:web:{service_name}:{port}"


def test_service_refs_lists_the_default_backend_then_the_rules() -> None:
    obj = ingress(
        ref("a", 80), ("x.com", [ref("b", "http"), ref("a", 80)]), (None, [{"resource": {"kind": "Bucket"}}])
    )
    assert list(service_refs(obj)) == [("a", 80), ("b", "http"), ("a", 80)]


def test_one_backend_per_distinct_service_and_port_sorted_by_name() -> None:
    obj = ingress(
        ref("echo", "http"),
        ("a.com", [ref("echo", 9000), ref("echo", "http")]),
        ("b.com", [ref("echo", 80), ref("echo", 9000)]),
    )
    backends, problems = ingress_backends(obj, services=SERVICES, cluster=CLUSTER)
    assert problems == ()
    assert backends == (
        IngressBackend(name("echo", 80), "echo", 80, Target(80, 30080)),
        IngressBackend(name("echo", 9000), "echo", 9000, Target(9000, 30900)),
        IngressBackend(name("echo", "http"), "echo", "http", Target(80, 30080)),
    )


@pytest.mark.parametrize(
    ("service_name", "port", "target", "problem"),
    [
        ("echo", "http", Target(80, 30080), None),
        ("echo", "admin", Target(9000, 30900), None),
        ("echo", 80, Target(80, 30080), None),
        ("unnamed", 80, Target(80, 31080), None),
        # Scenario 23: no silent match to an unnamed port.
        (
            "unnamed",
            8080,
            None,
            '"unnamed" port 8080: the Service has no TCP port numbered 8080; the rules using it answer 503',
        ),
        (
            "unnamed",
            "http",
            None,
            '"unnamed" port "http": the Service has no TCP port named "http"; the rules using it answer 503',
        ),
        (
            "echo",
            "dns",
            None,
            '"echo" port "dns": the Service has no TCP port named "dns"; the rules using it answer 503',
        ),
        (
            "echo",
            "HTTP",
            None,
            '"echo" port "HTTP": the Service has no TCP port named "HTTP"; the rules using it answer 503',
        ),
        (
            "missing",
            80,
            None,
            '"missing" port 80: the Service "missing" does not exist; the rules using it answer 503',
        ),
        (
            "internal",
            "http",
            None,
            '"internal" port "http": the port has no node port (the Service is of type "ClusterIP"; '
            'dklb needs "NodePort" or "LoadBalancer"); the rules using it answer 503',
        ),
    ],
)
def test_resolve(service_name: str, port: int | str, target: Target | None, problem: str | None) -> None:
    assert resolve(SERVICES.get(service_name), service=service_name, port=port) == (target, problem)


def test_an_unresolved_reference_keeps_its_backend_without_target_and_one_problem() -> None:
    obj = ingress(
        ref("missing", "http"), (None, [ref("unnamed", 8080), ref("unnamed", 8080), ref("echo", 80)])
    )
    backends, problems = ingress_backends(obj, services=SERVICES, cluster=CLUSTER)
    assert backends == (
        IngressBackend(name("echo", 80), "echo", 80, Target(80, 30080)),
        IngressBackend(name("missing", "http"), "missing", "http", None),
        IngressBackend(name("unnamed", 8080), "unnamed", 8080, None),
    )
    assert problems == (
        Problem(
            INVALID_BACKEND_SERVICE,
            '"missing" port "http": the Service "missing" does not exist; the rules using it answer 503',
        ),
        Problem(
            INVALID_BACKEND_SERVICE,
            '"unnamed" port 8080: the Service has no TCP port numbered 8080; the rules using it answer 503',
        ),
    )


def test_an_ingress_without_backends_has_none() -> None:
    assert ingress_backends(ingress(), services=SERVICES, cluster=CLUSTER) == ((), ())
