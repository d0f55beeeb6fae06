"""Names of an Ingress's EdgeLB objects and ownership by shape (engine.model.ingress.naming)."""

from __future__ import annotations

import pytest

from engine.model.ingress.naming import (
    BackendName,
    FrontendName,
    backend_name,
    frontend_name,
    owner_of,
)
from engine.model.translation import object_name
from engine.model.translation import owner_of as service_owner_of

CLUSTER = "dev/kubernetes01"


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("http", "dev.kubernetes01:ns:web:http"), ("https", "dev.kubernetes01:ns:web:https")],
)
def test_frontend_name(protocol: str, expected: str) -> None:
    assert frontend_name(cluster=CLUSTER, namespace="ns", ingress="web", protocol=protocol) == expected


def test_frontend_name_refuses_another_protocol() -> None:
    with pytest.raises(ValueError, match="protocol must be one of http, https, not 'tcp'"):
        frontend_name(cluster=CLUSTER, namespace="ns", ingress="web", protocol="tcp")


@pytest.mark.parametrize(
    ("port", "expected"),
    [(80, "dev.kubernetes01:ns:web:echo:80"), ("http", "dev.kubernetes01:ns:web:echo:http")],
)
def test_backend_name_writes_the_port_as_given(port: int | str, expected: str) -> None:
    assert backend_name(cluster=CLUSTER, namespace="ns", ingress="web", service="echo", port=port) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dev.kubernetes01:ns:web:http", FrontendName("ns", "web", "http")),
        ("dev.kubernetes01:ns:web:https", FrontendName("ns", "web", "https")),
        ("dev.kubernetes01:ns:web:echo:80", BackendName("ns", "web", "echo", "80")),
        ("dev.kubernetes01:ns:web:echo:http", BackendName("ns", "web", "echo", "http")),
        # A Service's frontend and backend: 4 parts ending in a port number.
        ("dev.kubernetes01:ns:redis:6379", None),
        # Any 4-part name not ending in http/https, whatever the Ingress's name.
        ("dev.kubernetes01:ns:web:tcp", None),
        ("dev.kubernetes01:ns:web:HTTP", None),
        # The Go dklb's frontend before alpha.10 (3 parts) is not recognised.
        ("dev.kubernetes01:ns:web", None),
        ("dev.kubernetes01:ns:web:echo:80:x", None),
        ("dev.kubernetes01:ns::echo:80", None),
        ("dev.kubernetes01:ns:web:", None),
        # Another cluster's, or a foreign object.
        ("other:ns:web:http", None),
        ("dev.kubernetes01-2:ns:web:http", None),
        ("my-backend", None),
        ("", None),
    ],
)
def test_owner_of_reads_the_shape(name: str, expected: FrontendName | BackendName | None) -> None:
    assert owner_of(name, cluster=CLUSTER) == expected


@pytest.mark.parametrize("port", [1, 80, 443, 6379, 65535])
@pytest.mark.parametrize("service", ["http", "https", "web", "redis"])
def test_a_service_object_never_parses_as_an_ingress_one(service: str, port: int) -> None:
    name = object_name(cluster=CLUSTER, namespace="ns", service=service, service_port=port)
    assert owner_of(name, cluster=CLUSTER) is None
    assert service_owner_of(name, cluster=CLUSTER) == (("ns", service), port)


@pytest.mark.parametrize(
    "name",
    [
        frontend_name(cluster=CLUSTER, namespace="ns", ingress="web", protocol="http"),
        frontend_name(cluster=CLUSTER, namespace="ns", ingress="web", protocol="https"),
        backend_name(cluster=CLUSTER, namespace="ns", ingress="web", service="echo", port=80),
        backend_name(cluster=CLUSTER, namespace="ns", ingress="web", service="echo", port="http"),
    ],
)
def test_an_ingress_object_never_parses_as_a_service_one(name: str) -> None:
    assert service_owner_of(name, cluster=CLUSTER) is None
    assert owner_of(name, cluster=CLUSTER) is not None
