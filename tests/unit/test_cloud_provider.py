"""``cloudProviderConfiguration``: EdgeLB's cloudProvider shape; listeners link this Service's frontends.

Checked by the parser (``engine.model.cloud``), hence by the controller's Pending handler (a
Rejected binding, never a retry loop against EdgeLB) and by the admission webhook (a refusal).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import yaml

from edgelb_local.validation import validate_pool
from engine.admission.review import review
from engine.model.checks import check_service
from engine.model.parse import parse_config
from engine.model.services import ANNOTATION
from engine.model.settings import Settings
from engine.model.translation import ServicePort, new_pool, service_objects

CLUSTER = "kubernetes-cluster"
WEB_80 = "kubernetes-cluster:default:web:80"
WEB_443 = "kubernetes-cluster:default:web:443"
P = "cloudProviderConfiguration"
ELB = {"name": "web-lb", "type": "NLB", "internal": False, "subnets": ["subnet-1"]}


def cloud(*elbs: dict[str, Any]) -> dict[str, Any]:
    return {"aws": {"elbs": list(elbs)}}


def errors_of(
    value: Any, ports: tuple[int, ...] = (80, 443), owner: tuple[str, str] | None = ("default", "web")
) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value)
    result = parse_config(
        yaml.safe_dump({"name": "cloud--web", P: text}),
        service_ports=ports,
        cluster_name=CLUSTER,
        rng=random.Random(0),
        owner=owner,
    )
    assert (result.config is None) == bool(result.errors)
    return list(result.errors)


FULL_ELB = {
    "name": "web-lb",
    "type": "NLB",
    "internal": True,
    "subnets": ["subnet-1", "subnet-2"],
    "elasticIPs": ["1.1.1.1", "eipalloc-12345678"],
    "tags": [{"key": "team", "value": "web"}, {"key": "bare"}],
    "listeners": [
        {"port": 80, "linkFrontend": WEB_80},
        {
            "port": 443,
            "protocol": "TLS",
            "tls": {"policy": "ELBSecurityPolicy-2016-08", "certificates": ["arn:aws:acm:x"]},
            "linkFrontend": WEB_443,
        },
    ],
    "accessLogS3Location": "logs/web",
    "deletionProtection": False,
    "arn": "arn:aws:elasticloadbalancing:x",
}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({}, id="an empty object (the Go dklb accepted it)"),
        pytest.param({"aws": {}}, id="aws without load balancers"),
        pytest.param(cloud(ELB), id="no listeners: one per frontend is made"),
        pytest.param(cloud(FULL_ELB), id="every documented field"),
        pytest.param(
            cloud({**ELB, "listeners": [{"port": 443}]}), id="a listener on a Service port links it"
        ),
        pytest.param(
            cloud({**ELB, "listeners": [{"port": 443, "linkFrontend": ""}]}), id="an empty link is none"
        ),
        pytest.param(
            cloud({**ELB, "listeners": [{"port": 8443, "linkFrontend": WEB_443}]}),
            id="a listener on another port naming a frontend",
        ),
        pytest.param(
            cloud({**ELB, "internal": None, "tags": None, "listeners": [{"port": 80, "protocol": None}]}),
            id="null fields are absent, as to EdgeLB",
        ),
        pytest.param(cloud(ELB, {**ELB, "name": "second"}), id="two load balancers"),
    ],
)
def test_valid_cloud_provider_configurations(value: dict[str, Any]) -> None:
    assert errors_of(value) == []


def test_a_single_frontend_takes_a_listener_on_any_port() -> None:
    assert errors_of(cloud({**ELB, "listeners": [{"port": 6380}]}), ports=(6379,)) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            {"aws": {"elb": [ELB]}},
            [f'{P}.aws: unknown field "elb" (did you mean "elbs"?)'],
            id="the elb typo: EdgeLB would drop it and make no load balancer",
        ),
        pytest.param({"gcp": {}}, [f'{P}: unknown field "gcp"'], id="an unknown provider"),
        pytest.param(
            cloud({**ELB, "elasticIps": []}),
            [f'{P}.aws.elbs[0]: unknown field "elasticIps" (did you mean "elasticIPs"?)'],
            id="a case slip in a field name",
        ),
        pytest.param(
            cloud({**ELB, "listeners": [{"port": 80, "linkfrontend": WEB_80}]}),
            [f'{P}.aws.elbs[0].listeners[0]: unknown field "linkfrontend" (did you mean "linkFrontend"?)'],
            id="an unknown listener field",
        ),
        pytest.param(
            cloud(
                {**ELB, "listeners": [{"port": 80, "linkFrontend": "kubernetes-cluster:default:web:8080"}]}
            ),
            [
                f'{P}.aws.elbs[0].listeners[0].linkFrontend: "kubernetes-cluster:default:web:8080" is not a '
                f'frontend of this Service (its frontends: "{WEB_80}", "{WEB_443}")'
            ],
            id="a listener naming an unknown frontend",
        ),
        pytest.param(
            cloud({**ELB, "listeners": [{"port": 80, "linkFrontend": "kubernetes-cluster:default:api:80"}]}),
            [
                f'{P}.aws.elbs[0].listeners[0].linkFrontend: "kubernetes-cluster:default:api:80" is not a '
                f'frontend of this Service (its frontends: "{WEB_80}", "{WEB_443}")'
            ],
            id="a listener naming another Service's frontend",
        ),
        pytest.param(
            cloud({**ELB, "listeners": [{"port": 8080}]}),
            [
                f"{P}.aws.elbs[0].listeners[0]: the listener on port 8080 has no linkFrontend, and the "
                "Service has no TCP port 8080 to link it to: give linkFrontend (the Service's frontends: "
                f'"{WEB_80}", "{WEB_443}")'
            ],
            id="an unlinked listener that cannot be linked",
        ),
        pytest.param(
            cloud({**ELB, "listeners": [{"linkFrontend": WEB_80}]}),
            [f"{P}.aws.elbs[0].listeners[0].port: the field is required"],
            id="a listener needs its port",
        ),
        pytest.param(
            cloud(
                {
                    **ELB,
                    "listeners": [
                        {"port": 0, "linkFrontend": WEB_80},
                        {"port": "80", "linkFrontend": WEB_80},
                    ],
                }
            ),
            [
                f"{P}.aws.elbs[0].listeners[0].port: 0 is not a valid port number",
                f'{P}.aws.elbs[0].listeners[1].port: "80" is not an integer',
            ],
            id="listener ports are 1-65535 integers",
        ),
        pytest.param(
            cloud({**ELB, "listeners": [{"port": 80, "protocol": "UDP"}]}),
            [f'{P}.aws.elbs[0].listeners[0].protocol: "UDP" is not one of TCP, TLS'],
            id="a listener protocol EdgeLB does not know",
        ),
        pytest.param(
            cloud({"type": "NLB"}),
            [f"{P}.aws.elbs[0].name: the field is required"],
            id="a load balancer needs its name",
        ),
        pytest.param(
            cloud({**ELB, "type": "ALB"}), [f'{P}.aws.elbs[0].type: "ALB" is not one of NLB'], id="NLB only"
        ),
        pytest.param(
            cloud({**ELB, "internal": "false"}),
            [f'{P}.aws.elbs[0].internal: "false" is not a boolean'],
            id="internal is a boolean",
        ),
        pytest.param(
            cloud({**ELB, "subnets": "subnet-1", "elasticIPs": [1]}),
            [
                f'{P}.aws.elbs[0].subnets: "subnet-1" is not a list',
                f"{P}.aws.elbs[0].elasticIPs[0]: 1 is not a string",
            ],
            id="subnets and elastic IPs are lists of strings",
        ),
        pytest.param(
            cloud({**ELB, "tags": [{"value": "x"}, {"key": "a", "value": 1}, {"Key": "b"}, "team=web"]}),
            [
                f"{P}.aws.elbs[0].tags[0].key: the field is required",
                f"{P}.aws.elbs[0].tags[1].value: 1 is not a string",
                f'{P}.aws.elbs[0].tags[2]: unknown field "Key" (did you mean "key"?)',
                f"{P}.aws.elbs[0].tags[2].key: the field is required",
                f'{P}.aws.elbs[0].tags[3]: "team=web" is not an object',
            ],
            id="tags are key/value objects",
        ),
        pytest.param(
            {"aws": {"elbs": {"name": "x"}}},
            [f"{P}.aws.elbs: {{name: x}} is not a list"],
            id="elbs is a list",
        ),
        pytest.param(
            {"aws": {"elbs": [None]}}, [f"{P}.aws.elbs[0]: null is not an object"], id="an elb is an object"
        ),
        pytest.param({"aws": []}, [f"{P}.aws: [] is not an object"], id="aws is an object"),
        pytest.param(
            cloud({**ELB, "listeners": [{"port": 80, "tls": {"policy": 1, "certificates": "arn"}}]}),
            [
                f"{P}.aws.elbs[0].listeners[0].tls.policy: 1 is not a string",
                f'{P}.aws.elbs[0].listeners[0].tls.certificates: "arn" is not a list',
            ],
            id="tls settings",
        ),
    ],
)
def test_invalid_cloud_provider_configurations(value: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '{"aws": {}, "aws": {}}',
            f'{P}: the cloud-provider configuration is not valid JSON: duplicate key "aws"',
            id="a duplicate key",
        ),
        pytest.param(
            '{"aws": {"elbs": [{"name": "x", "listeners": [{"port": NaN}]}]}}',
            f"{P}: the cloud-provider configuration is not valid JSON: NaN is not a JSON value",
            id="NaN is no JSON",
        ),
        pytest.param(
            "{aws: {}}",
            f"{P}: the cloud-provider configuration is not valid JSON: "
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            id="YAML flow style is no JSON",
        ),
        pytest.param(
            " ",
            f"{P}: the cloud-provider configuration is not valid JSON: "
            "Expecting value: line 1 column 2 (char 1)",
            id="blank is not empty: the Go dklb read it as a cloud request too",
        ),
        pytest.param(
            "null",
            f"{P}: the cloud-provider configuration must be a JSON object, got null",
            id="JSON null",
        ),
        pytest.param(
            "[" * 5000 + "]" * 5000,
            f"{P}: the cloud-provider configuration is not valid JSON: it is nested too deeply",
            id="nested too deeply",
        ),
    ],
)
def test_cloud_provider_text_that_is_no_json_object(text: str, expected: str) -> None:
    assert errors_of(text) == [expected]


def test_without_the_service_listeners_are_checked_for_shape_only() -> None:
    """``states.deleting`` and ``dklb plan`` without a Service name know no frontend names."""
    value = cloud({**ELB, "listeners": [{"port": 8080, "linkFrontend": "anything"}]})

    assert errors_of(value, owner=None) == []


def test_a_service_without_tcp_port_has_no_frontend_to_link() -> None:
    value = cloud({**ELB, "listeners": [{"port": 80, "linkFrontend": WEB_80}]})

    assert errors_of(value, ports=()) == [
        f'{P}.aws.elbs[0].listeners[0].linkFrontend: "{WEB_80}" is not a frontend of this Service '
        "(its frontends: none: the Service has no TCP port)"
    ]


def service(text: str, *, name: str = "web", ports: tuple[int, ...] = (80, 443)) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "annotations": {ANNOTATION: text}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": p, "protocol": "TCP"} for p in ports]},
    }


LINKS_API = yaml.safe_dump(
    {"name": "cloud--web", P: json.dumps(cloud({**ELB, "listeners": [{"port": 80, "linkFrontend": WEB_80}]}))}
)


def test_check_service_uses_the_services_own_frontends() -> None:
    """The same annotation is right on the Service "web" and wrong on the Service "api"."""

    def check(name: str) -> tuple[str, ...]:
        return check_service(
            service(LINKS_API, name=name),
            previous=None,
            cluster_name=CLUSTER,
            default_size=1,
            pool_group="dcos-edgelb/pools",
        ).errors

    assert check("web") == ()
    assert len(check("api")) == 1 and "is not a frontend of this Service" in check("api")[0]


def test_a_nameless_service_has_its_listeners_checked_for_shape_only() -> None:
    """A CREATE with generateName: the frontends' names are not known yet."""
    svc = service(LINKS_API, name="api")
    svc["metadata"]["name"] = ""

    check = check_service(svc, previous=None, cluster_name=CLUSTER, default_size=1, pool_group="g")

    assert check.errors == ()


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        (LINKS_API, True),
        (LINKS_API.replace(WEB_80, "kubernetes-cluster:default:web:8080"), False),
        (LINKS_API.replace('"elbs"', '"elb"'), False),
    ],
)
def test_the_webhook_refuses_what_the_controller_would_reject(text: str, allowed: bool) -> None:
    document = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Service"},
            "operation": "CREATE",
            "object": service(text),
        },
    }
    response = review(document, settings=Settings(cluster_name=CLUSTER), mutate=False)["response"]

    assert response["allowed"] is allowed
    if not allowed:
        assert response["status"]["code"] == 403 and response["status"]["message"].startswith(P + ".aws")


def test_what_the_check_accepts_makes_a_pool_edgelb_accepts() -> None:
    """The check mirrors ``link_listeners``: an accepted configuration never leaves a listener unlinked."""
    value = cloud(
        {**ELB, "listeners": [{"port": 443}, {"port": 9443, "linkFrontend": WEB_80}]},
        {**ELB, "name": "second"},
    )
    result = parse_config(
        yaml.safe_dump({"name": "cloud--web", P: json.dumps(value)}),
        service_ports=[80, 443],
        cluster_name=CLUSTER,
        owner=("default", "web"),
    )
    assert result.errors == () and result.config is not None
    ports = [ServicePort(80, 30080), ServicePort(443, 30443)]
    frontends, backends = service_objects(
        cluster=CLUSTER, namespace="default", service="web", ports=ports, bind_ports={}, dynamic_ports=True
    )

    pool = new_pool(
        settings=result.config, pool_group="dcos-edgelb/pools", frontends=frontends, backends=backends
    )

    listeners = [listener for elb in pool["cloudProvider"]["aws"]["elbs"] for listener in elb["listeners"]]
    assert listeners == [
        {"port": 443, "linkFrontend": WEB_443},
        {"port": 9443, "linkFrontend": WEB_80},
        {"port": 80, "linkFrontend": WEB_80},
        {"port": 443, "linkFrontend": WEB_443},
    ]
    assert validate_pool(pool) == []
