"""The admission webhook's decisions: injection of the defaults, refusals and their messages."""

from __future__ import annotations

import base64
import copy
import json
import random
import re
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.admission.review import InvalidReview, review
from engine.model.checks import NO_TCP_PORT, check_service
from engine.model.config import PoolConfig
from engine.model.parse import parse_config
from engine.model.services import ANNOTATION
from engine.model.settings import Settings
from tests.checks import present

SETTINGS = Settings()
CLUSTER = SETTINGS.cluster_name
GROUP = SETTINGS.pool_group
DEFAULT_NAME = re.compile(r"kubernetes-cluster--[a-z0-9]{5}")
PARSE_FAILED = f'failed to parse the value of "{ANNOTATION}" as a configuration object: '
REMOVED = f"the {ANNOTATION} annotation cannot be removed"
ESCAPED_PATH = "/metadata/annotations/kubernetes.dcos.io~1dklb-config"
CPUS_0_1 = (
    "cpus: -0.100000 is not a valid cpu request (-0.1: the CPU share must be a finite number, 0 or more)"
)
CPUS_1 = "cpus: -1.000000 is not a valid cpu request (-1: the CPU share must be a finite number, 0 or more)"
NOT_OURS = f"{NO_TCP_PORT}: dklb makes no load balancer for it (allowed: another controller may)"

# --- building reviews ----------------------------------------------------------------------------


def service(
    annotation: str | None = None,
    *,
    type: str | None = "LoadBalancer",
    ports: tuple[tuple[int, str], ...] = ((80, "TCP"), (443, "TCP")),
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web", "namespace": "default", "uid": "svc-uid"}
    if annotations is not None or annotation is not None:
        metadata["annotations"] = dict(annotations or {})
        if annotation is not None:
            metadata["annotations"][ANNOTATION] = annotation
    if deleting:
        metadata["deletionTimestamp"] = "2024-01-01T00:00:00Z"
        metadata["finalizers"] = ["kubernetes.dcos.io/dklb"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": type,
            "ports": [{"port": p, "protocol": proto, "targetPort": p} for p, proto in ports],
        },
    }


def admission_review(
    operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None = None, uid: str = "req-1"
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Service"},
        "resource": {"group": "", "version": "v1", "resource": "services"},
        "namespace": "default",
        "name": "web",
        "operation": operation,
        "object": obj,
        "oldObject": old,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def answer(
    operation: str,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None = None,
    *,
    mutate: bool,
    seed: int = 0,
) -> dict[str, Any]:
    result = review(
        admission_review(operation, obj, old), settings=SETTINGS, mutate=mutate, rng=random.Random(seed)
    )
    assert_well_formed(result, "req-1")
    return result["response"]


def mutate(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    return answer(operation, obj, old, mutate=True)


def validate(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    return answer(operation, obj, old, mutate=False)


def assert_well_formed(result: dict[str, Any], uid: str) -> None:
    assert result["apiVersion"] == "admission.k8s.io/v1"
    assert result["kind"] == "AdmissionReview"
    response = result["response"]
    assert set(response) <= {"uid", "allowed", "status", "patchType", "patch", "warnings"}
    assert response["uid"] == uid
    assert isinstance(response["allowed"], bool)
    if response["allowed"]:
        assert "status" not in response
    else:
        assert response["status"]["code"] in (400, 403)
        assert isinstance(response["status"]["message"], str) and response["status"]["message"]
        assert "patch" not in response
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        assert isinstance(json.loads(base64.b64decode(response["patch"])), list)
    else:
        assert "patchType" not in response
    for warning in response.get("warnings", []):
        assert isinstance(warning, str) and warning
    json.dumps(result)  # serialisable as is


# --- a tiny RFC 6902 applier (add/replace/remove on objects are all the webhook may emit) ---------


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    for op in operations:
        *parents, last = [unescape(t) for t in op["path"].split("/")[1:]]
        target = document
        for token in parents:
            target = target[token]
        if op["op"] == "add":
            target[last] = op["value"]
        elif op["op"] == "replace":
            assert last in target, f"replace of a missing member {op['path']}"
            target[last] = op["value"]
        elif op["op"] == "remove":
            del target[last]
        else:
            raise AssertionError(f"unexpected operation {op}")
    return document


def patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    return apply_patch(obj, json.loads(base64.b64decode(response["patch"])))


def annotation_of(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)


def config_of(obj: dict[str, Any]) -> PoolConfig:
    ports = [p["port"] for p in obj["spec"]["ports"] if p.get("protocol", "TCP") == "TCP"]
    result = parse_config(annotation_of(obj), service_ports=ports, cluster_name=CLUSTER)
    assert result.config is not None, result.errors
    assert not result.defaulted_name, "the injected annotation names its pool"
    return result.config


def full(name: str = "pool-a", **fields: Any) -> str:
    """A complete annotation as the webhook writes it, for a Service with ports 80 and 443."""
    text = parse_config(
        yaml.safe_dump({"name": name, **fields}), service_ports=[80, 443], cluster_name=CLUSTER
    )
    assert text.config is not None, text.errors
    return text.config.to_annotation()


# --- mutating: injecting the defaults ------------------------------------------------------------


def test_create_without_annotation_injects_the_defaults() -> None:
    obj = service()
    assert "annotations" not in obj["metadata"]
    response = mutate("CREATE", obj)
    assert response["allowed"] is True
    operations = json.loads(base64.b64decode(response["patch"]))
    assert [(op["op"], op["path"]) for op in operations] == [("add", "/metadata/annotations")]
    config = config_of(patched(obj, response))
    assert DEFAULT_NAME.fullmatch(config.name)
    assert (config.role, config.network, config.cpus, config.memory, config.size) == (
        "slave_public",
        "",
        0.1,
        128,
        1,
    )
    assert [(f.port, f.service_port) for f in config.frontends] == [(80, 80), (443, 443)]
    assert config.creation_strategy == "IfNotPresent"


def test_the_injected_annotation_is_what_the_controller_would_write() -> None:
    obj = service()
    written = annotation_of(patched(obj, mutate("CREATE", obj)))
    assert written == config_of({**obj, "metadata": {"annotations": {ANNOTATION: written}}}).to_annotation()


def test_other_annotations_are_kept_and_the_key_is_escaped() -> None:
    obj = service(annotations={"team": "web"})
    response = mutate("CREATE", obj)
    operations = json.loads(base64.b64decode(response["patch"]))
    assert [(op["op"], op["path"]) for op in operations] == [("add", ESCAPED_PATH)]
    result = patched(obj, response)
    assert result["metadata"]["annotations"]["team"] == "web"
    assert DEFAULT_NAME.fullmatch(config_of(result).name)


def test_null_annotations_are_replaced_whole() -> None:
    obj = service()
    obj["metadata"]["annotations"] = None
    operations = json.loads(base64.b64decode(mutate("CREATE", obj)["patch"]))
    assert [(op["op"], op["path"]) for op in operations] == [("add", "/metadata/annotations")]


@pytest.mark.parametrize("empty", ["", "  \n", "# only a comment\n", "{}"])
def test_an_empty_annotation_is_replaced_by_the_defaults(empty: str) -> None:
    obj = service(empty)
    response = mutate("CREATE", obj)
    operations = json.loads(base64.b64decode(response["patch"]))
    assert [(op["op"], op["path"]) for op in operations] == [("replace", ESCAPED_PATH)]
    assert DEFAULT_NAME.fullmatch(config_of(patched(obj, response)).name)


def test_a_partial_annotation_is_completed_keeping_what_is_given() -> None:
    obj = service("name: dklb-redis\ncpus: 0.5\nfrontends:\n- port: 18080\n  servicePort: 80\n")
    config = config_of(patched(obj, mutate("CREATE", obj)))
    assert (config.name, config.cpus, config.memory) == ("dklb-redis", 0.5, 128)
    assert [(f.port, f.service_port) for f in config.frontends] == [(18080, 80), (443, 443)]


def test_the_name_comes_from_the_given_rng() -> None:
    obj = service()
    first = annotation_of(patched(obj, answer("CREATE", obj, mutate=True, seed=7)))
    again = annotation_of(patched(obj, answer("CREATE", obj, mutate=True, seed=7)))
    other = annotation_of(patched(obj, answer("CREATE", obj, mutate=True, seed=8)))
    assert first == again != other


def test_the_cluster_name_and_default_size_come_from_the_settings() -> None:
    obj = service()
    custom = Settings(cluster_name="prod/kube", default_pool_size=3)
    response = review(admission_review("CREATE", obj), settings=custom, mutate=True)["response"]
    text = present(annotation_of(patched(obj, response)))
    data = yaml.safe_load(text)
    assert re.fullmatch(r"prod--kube--[a-z0-9]{5}", data["name"])
    assert data["size"] == 3


def test_no_patch_when_the_annotation_is_already_complete() -> None:
    obj = service(full())
    response = mutate("CREATE", obj)
    assert response == {"uid": "req-1", "allowed": True}


def test_mutating_is_idempotent() -> None:
    obj = service("cpus: 0.3")
    once = patched(obj, mutate("CREATE", obj))
    assert "patch" not in mutate("CREATE", once)


def test_the_injected_object_passes_validation_without_warnings() -> None:
    obj = service()
    result = patched(obj, mutate("CREATE", obj))
    assert validate("CREATE", result) == {"uid": "req-1", "allowed": True}


# --- validating: invalid configurations ----------------------------------------------------------

INVALID = [
    ("name: [", PARSE_FAILED + "while parsing a flow node: did not find expected node content "
     "(at the end of the text)"),
    ("- a", "the configuration object must be a mapping, got a list: [a]"),
    ("name: __foo__", 'name: "__foo__" is not a valid edgelb pool name'),
    ("network: foo", 'network: cannot join a virtual network when the pool\'s role is "slave_public"'),
    ("cpus: -0.1", CPUS_0_1),
    ("memory: -256", "memory: -256 is not a valid memory request"),
    ("size: -1", "size: -1 is not a valid size request"),
    ("strategies:\n  creation: Foo",
     'strategies.creation: failed to parse "Foo" as an edgelb pool creation strategy '
     "(expected one of IfNotPresent, Once, Never)"),
    ("frontends:\n- port: 123456\n  servicePort: 80", "frontends[0].port: 123456 is not a valid port number"),
    ("name: __foo__\ncpus: -0.1\nsize: -1",
     f'name: "__foo__" is not a valid edgelb pool name; {CPUS_0_1}; '
     "size: -1 is not a valid size request"),
    ("colour: red", 'unknown field "colour"'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_an_invalid_configuration_is_refused_with_the_parser_messages(text: str, message: str) -> None:
    response = validate("CREATE", service(text))
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "message": message}
    expected = parse_config(text, service_ports=[80, 443], cluster_name=CLUSTER).errors
    assert message == "; ".join(expected)  # the controller's messages, joined the controller's way


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_an_invalid_configuration_is_let_through_unpatched_by_mutate(text: str, message: str) -> None:
    assert mutate("CREATE", service(text)) == {"uid": "req-1", "allowed": True}


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_an_invalid_configuration_is_refused_on_update_too(text: str, message: str) -> None:
    response = validate("UPDATE", service(text), service(full()))
    assert response["status"] == {"code": 403, "message": message}


@pytest.mark.parametrize(
    ("ports", "port_warnings"),
    [
        (((53, "UDP"),), ["port 53/UDP is not exposed: dklb supports TCP only"]),
        (((53, "UDP"), (5060, "SCTP")),
         ["port 53/UDP is not exposed: dklb supports TCP only",
          "port 5060/SCTP is not exposed: dklb supports TCP only"]),
        ((), []),
    ],
)  # fmt: skip
@pytest.mark.parametrize("text", [None, "name: dns-pool", "name: dns-pool\ncpus: 0.5"])
def test_a_service_without_tcp_port_is_allowed_with_a_warning(
    ports: tuple[tuple[int, str], ...], port_warnings: list[str], text: str | None
) -> None:
    """Another load-balancer controller may serve it: the cluster-wide webhook must let it in."""
    obj = service(text, ports=ports)
    assert validate("CREATE", obj) == {
        "uid": "req-1",
        "allowed": True,
        "warnings": [*port_warnings, NOT_OURS],
    }
    assert mutate("CREATE", obj) == {"uid": "req-1", "allowed": True}  # nothing written into it
    # The controller does not manage it: Pending rejects it with the same text.
    check = check_service(obj, previous=None, cluster_name=CLUSTER, default_size=1, pool_group=GROUP)
    assert check.errors == (NO_TCP_PORT,) and check.no_tcp_port
    # An update of it is let in just the same.
    assert validate("UPDATE", service(text, ports=ports, annotations={"a": "b"}), obj)["allowed"] is True


def test_a_service_without_tcp_port_is_still_refused_for_its_configuration() -> None:
    response = validate("CREATE", service("size: -1", ports=()))
    assert response["status"]["message"] == "size: -1 is not a valid size request"
    assert response["warnings"] == [NOT_OURS]


# --- UPDATE: the fields that cannot change -------------------------------------------------------

OLD = full("pool-a")
PRIVATE = full("pool-b", role="*", network="dcos")
FORBIDDEN_UPDATES = [
    (OLD, full("pool-z"),
     'name: the name of the target edgelb pool cannot be changed (from "pool-a" to "pool-z")'),
    (OLD, full("pool-a", role="*"),
     'role: the role of the target edgelb pool cannot be changed (from "slave_public" to "*"); '
     'network: the virtual network of the target edgelb pool cannot be changed (from "" to "dcos")'),
    (PRIVATE, full("pool-b", role="*", network="other"),
     'network: the virtual network of the target edgelb pool cannot be changed (from "dcos" to "other")'),
    (PRIVATE, full("pool-b", role="ops", network="dcos"),
     'role: the role of the target edgelb pool cannot be changed (from "*" to "ops")'),
    (OLD, None, REMOVED),
    (OLD, "", REMOVED),
    ("name: pool-a", None, REMOVED),  # a partial annotation names its pool too
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "message"), FORBIDDEN_UPDATES)
def test_a_forbidden_transition_is_refused(old: str, new: str | None, message: str) -> None:
    response = validate("UPDATE", service(new), service(old))
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "message": message}


@pytest.mark.parametrize(("old", "new", "message"), FORBIDDEN_UPDATES)
def test_mutate_does_not_hide_a_forbidden_transition(old: str, new: str | None, message: str) -> None:
    """No patch: re-injecting a removed annotation would hide the removal behind a new random name."""
    assert mutate("UPDATE", service(new), service(old)) == {"uid": "req-1", "allowed": True}


def test_removing_the_annotation_among_others_is_refused() -> None:
    old = service(OLD, annotations={"team": "web"})
    new = service(annotations={"team": "web"})
    assert validate("UPDATE", new, old)["status"]["message"] == REMOVED


@pytest.mark.parametrize(
    "new",
    [
        full("pool-a", cpus=0.5),
        full("pool-a", memory=512, size=3),
        full("pool-a", frontends=[{"port": 18080, "servicePort": 80}]),
        full("pool-a", constraints='[["hostname","UNIQUE"]]'),
        OLD,
    ],
)
def test_changing_the_other_fields_is_allowed(new: str) -> None:
    response = validate("UPDATE", service(new), service(OLD))
    assert response == {"uid": "req-1", "allowed": True}
    assert "patch" not in mutate("UPDATE", service(new), service(OLD))


def test_a_partial_reapply_keeps_the_pool_name() -> None:
    """``kubectl apply`` of a manifest that never had the name must not move the Service."""
    old = service(OLD)
    new = service("cpus: 0.5\nfrontends:\n- port: 18080\n  servicePort: 80\n")
    response = mutate("UPDATE", new, old)
    result = patched(new, response)
    config = config_of(result)
    assert (config.name, config.cpus) == ("pool-a", 0.5)
    assert [(f.port, f.service_port) for f in config.frontends] == [(18080, 80), (443, 443)]
    assert validate("UPDATE", result, old) == {"uid": "req-1", "allowed": True}


@pytest.mark.parametrize("empty", ["{}", "# nothing\n"])
def test_an_empty_but_present_annotation_keeps_the_pool_name(empty: str) -> None:
    new = service(empty)
    result = patched(new, mutate("UPDATE", new, service(OLD)))
    assert config_of(result).to_annotation() == OLD


def test_a_partial_reapply_that_was_not_mutated_is_refused_like_the_controller_would() -> None:
    """Without the mutating webhook, Pending would draw a new name and reject the change."""
    response = validate("UPDATE", service("cpus: 0.5"), service(OLD))
    message = response["status"]["message"]
    assert re.fullmatch(
        r'name: the name of the target edgelb pool cannot be changed \(from "pool-a" to '
        r'"kubernetes-cluster--[a-z0-9]{5}"\)',
        message,
    )


def test_a_partial_reapply_with_a_forbidden_change_is_not_patched() -> None:
    new = service("role: '*'")
    assert mutate("UPDATE", new, service(OLD)) == {"uid": "req-1", "allowed": True}
    assert "role: the role" in validate("UPDATE", new, service(OLD))["status"]["message"]


def test_an_old_annotation_without_a_name_fixes_no_pool() -> None:
    """Such a Service predates the webhook: its name was never fixed, so there is nothing to keep."""
    old = service("cpus: 0.2")
    new = service("cpus: 0.3")
    assert validate("UPDATE", new, old) == {"uid": "req-1", "allowed": True}
    assert DEFAULT_NAME.fullmatch(config_of(patched(new, mutate("UPDATE", new, old))).name)


def test_an_old_invalid_annotation_fixes_no_pool() -> None:
    new = service(full("pool-new"))
    assert validate("UPDATE", new, service("name: __bad__")) == {"uid": "req-1", "allowed": True}


def test_an_update_adding_ports_extends_the_frontends() -> None:
    old = service(OLD)
    new = service(OLD, ports=((80, "TCP"), (443, "TCP"), (8443, "TCP")))
    config = config_of(patched(new, mutate("UPDATE", new, old)))
    assert config.name == "pool-a"
    assert [f.service_port for f in config.frontends] == [80, 443, 8443]


# --- what is not ours, or no longer ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ClusterIP", "NodePort", "ExternalName", None])
@pytest.mark.parametrize("text", [None, "name: __foo__", "cpus: 0.5"])
def test_a_service_that_is_not_a_load_balancer_passes_untouched(kind: str | None, text: str | None) -> None:
    obj = service(text, type=kind)
    for is_mutating in (True, False):
        assert answer("CREATE", obj, mutate=is_mutating) == {"uid": "req-1", "allowed": True}
        old = service(type=kind)
        assert answer("UPDATE", obj, old, mutate=is_mutating) == {"uid": "req-1", "allowed": True}


@pytest.mark.parametrize("text", [None, "", "name: other", "name: __foo__"])
def test_a_load_balancer_becoming_cluster_ip_is_allowed(text: str | None) -> None:
    old = service(OLD)
    new = service(text, type="ClusterIP")
    assert validate("UPDATE", new, old) == {"uid": "req-1", "allowed": True}
    assert mutate("UPDATE", new, old) == {"uid": "req-1", "allowed": True}


def test_a_cluster_ip_becoming_a_load_balancer_is_a_creation() -> None:
    old = service(type="ClusterIP")
    new = service()
    config = config_of(patched(new, mutate("UPDATE", new, old)))
    assert DEFAULT_NAME.fullmatch(config.name)
    # Even with an annotation left from an earlier life as LoadBalancer: there is no pool to keep.
    assert validate("UPDATE", service(full("pool-z")), service(OLD, type="ClusterIP"))["allowed"]


def test_a_service_being_deleted_is_never_refused() -> None:
    """The controller removes its finalizer with an UPDATE: refusing it would leave the Service stuck."""
    old = service("name: __foo__", deleting=True)
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    for is_mutating in (True, False):
        assert answer("UPDATE", new, old, mutate=is_mutating) == {"uid": "req-1", "allowed": True}


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_allowed(operation: str) -> None:
    for is_mutating in (True, False):
        response = answer(operation, None, service("name: __foo__"), mutate=is_mutating)
        assert response == {"uid": "req-1", "allowed": True}


def test_another_kind_is_allowed_untouched() -> None:
    document = admission_review("CREATE", {"apiVersion": "v1", "kind": "ConfigMap", "data": {}})
    document["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    for is_mutating in (True, False):
        response = review(document, settings=SETTINGS, mutate=is_mutating)["response"]
        assert response == {"uid": "req-1", "allowed": True}


# --- an update that leaves an invalid configuration as it is ------------------------------------


def test_an_update_leaving_an_invalid_configuration_as_is_is_allowed_with_a_warning() -> None:
    """A Service made invalid before the webhook existed can still be labelled, paused, finalized."""
    old = service("cpus: -1")
    new = service("cpus: -1", annotations={"kubernetes.dcos.io/dklb-paused": "true"})
    response = validate("UPDATE", new, old)
    assert response["allowed"] is True
    assert response["warnings"] == [
        f"the Service's configuration is invalid ({CPUS_1}); allowed: the update leaves it as is"
    ]
    assert mutate("UPDATE", new, old) == {"uid": "req-1", "allowed": True}


def test_an_update_changing_the_ports_of_an_invalid_configuration_is_refused() -> None:
    old = service("cpus: -1")
    new = service("cpus: -1", ports=((80, "TCP"),))
    assert validate("UPDATE", new, old)["status"]["message"] == CPUS_1


# --- warnings ------------------------------------------------------------------------------------

CONTRAINTS = '"contraints" is accepted as "constraints"; please rename the field'


def test_the_misspelt_constraints_warn_from_the_webhook_that_rewrites_them() -> None:
    obj = service('contraints: "[[\\"hostname\\",\\"MAX_PER\\",\\"1\\"]]"')
    response = mutate("CREATE", obj)
    assert response["warnings"] == [CONTRAINTS]
    result = patched(obj, response)
    assert config_of(result).constraints == '[["hostname","MAX_PER","1"]]'
    # Rewritten as "constraints": the validating webhook has nothing left to say.
    assert "warnings" not in validate("CREATE", result)
    # Without the mutating webhook, the validating one says it.
    assert validate("CREATE", obj)["warnings"] == [CONTRAINTS]


def test_a_skipped_udp_port_warns_from_the_validating_webhook_only() -> None:
    obj = service(ports=((80, "TCP"), (53, "UDP")))
    response = mutate("CREATE", obj)
    assert "warnings" not in response
    result = patched(obj, response)
    assert [f.service_port for f in config_of(result).frontends] == [80]
    assert validate("CREATE", result) == {
        "uid": "req-1",
        "allowed": True,
        "warnings": ["port 53/UDP is not exposed: dklb supports TCP only"],
    }


def test_a_stale_frontend_warns_and_is_dropped() -> None:
    obj = service("name: pool-a\nfrontends:\n- port: 19999\n  servicePort: 9999\n")
    response = mutate("CREATE", obj)
    assert response["warnings"] == [
        "frontends[0]: service port 9999 is not a TCP port of the Service; the entry is ignored"
    ]
    assert [f.service_port for f in config_of(patched(obj, response)).frontends] == [80, 443]


def test_warnings_accompany_a_refusal() -> None:
    response = validate("CREATE", service("contraints: x\nsize: 0", ports=((80, "TCP"), (53, "UDP"))))
    assert response["status"]["message"] == "size: 0 is not a valid size request"
    assert response["warnings"] == [CONTRAINTS, "port 53/UDP is not exposed: dklb supports TCP only"]


# --- the envelope --------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", ["705ab4f5-6393-11e8-b7cc-42010a800002", "x"])
@pytest.mark.parametrize("is_mutating", [True, False])
def test_the_uid_is_echoed(uid: str, is_mutating: bool) -> None:
    for obj in (service(), service("name: __foo__"), service(type="ClusterIP")):
        result = review(admission_review("CREATE", obj, uid=uid), settings=SETTINGS, mutate=is_mutating)
        assert_well_formed(result, uid)


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        "AdmissionReview",
        {},
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "Status", "request": {"uid": "u"}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": []},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}},
    ],
)
def test_a_document_that_is_no_admission_review_raises(document: Any) -> None:
    with pytest.raises(InvalidReview):
        review(document, settings=SETTINGS, mutate=False)


def malformed_port(obj: dict[str, Any]) -> None:
    obj["spec"]["ports"][0]["port"] = "http"


def ports_not_a_list(obj: dict[str, Any]) -> None:
    obj["spec"]["ports"] = {"port": 80}


def annotation_not_a_string(obj: dict[str, Any]) -> None:
    obj["metadata"]["annotations"] = {ANNOTATION: {"name": "x"}}


def metadata_not_an_object(obj: dict[str, Any]) -> None:
    obj["metadata"] = ["x"]


@pytest.mark.parametrize(
    "damage", [malformed_port, ports_not_a_list, annotation_not_a_string, metadata_not_an_object]
)
@pytest.mark.parametrize("is_mutating", [True, False])
def test_a_malformed_load_balancer_is_refused_as_a_bad_request(damage: Any, is_mutating: bool) -> None:
    obj = service()
    damage(obj)
    response = answer("CREATE", obj, mutate=is_mutating)
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert response["status"]["message"].startswith("malformed Service: ")


def test_an_update_without_its_old_object_is_a_bad_request() -> None:
    response = answer("UPDATE", service(full("pool-z")), None, mutate=False)
    assert response["status"]["code"] == 400


def test_review_does_not_modify_its_input() -> None:
    document = admission_review("UPDATE", service("cpus: 0.5"), service(OLD))
    before = copy.deepcopy(document)
    for is_mutating in (True, False):
        review(document, settings=SETTINGS, mutate=is_mutating)
    assert document == before


# --- the shared check ----------------------------------------------------------------------------


def test_check_service_orders_errors_like_the_pending_handler() -> None:
    previous = PoolConfig.from_dict(yaml.safe_load(OLD))
    check = check_service(
        service("name: pool-z\nsize: 0", ports=((53, "UDP"),)),
        previous=previous,
        cluster_name=CLUSTER,
        default_size=1,
        pool_group=GROUP,
    )
    # An invalid configuration reports its own errors; the transition is checked on a valid one.
    assert check.errors == ("size: 0 is not a valid size request", NO_TCP_PORT)
    assert check.config is None
    assert check.port_warnings == ("port 53/UDP is not exposed: dklb supports TCP only",)
    removed = check_service(
        service(), previous=previous, cluster_name=CLUSTER, default_size=1, pool_group=GROUP
    )
    assert removed.errors == (REMOVED,)


# --- properties ----------------------------------------------------------------------------------

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-70000, 70000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["pool-a", "*", "dcos", "slave_public", "IfNotPresent", "Foo", "__x__"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(
    [
        "name",
        "role",
        "network",
        "cpus",
        "memory",
        "size",
        "frontends",
        "constraints",
        "contraints",
        "strategies",
    ]
)
config_like = st.dictionaries(field_names, yaml_values, max_size=5).map(
    lambda d: yaml.safe_dump(d, sort_keys=False)
)
annotation_text = st.one_of(st.none(), st.text(max_size=60), config_like)
port_lists = st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(["TCP", "UDP", "SCTP"])), max_size=3)
old_objects = st.one_of(
    st.none(),
    st.builds(
        lambda t, p: service(t, ports=tuple(p)),
        st.one_of(st.just(OLD), st.just(PRIVATE), annotation_text),
        port_lists,
    ),
    st.just(service(type="ClusterIP")),
)


@settings(max_examples=300, deadline=None)
@given(text=annotation_text, ports=port_lists, old=old_objects, seed=st.integers(0, 2**32))
# Blank to Python, a string to YAML: a re-apply of it once broke the name-keeping path.
@example(text="\xa0", ports=[(80, "TCP")], old=service(OLD, ports=((80, "TCP"),)), seed=0)
def test_any_annotation_gets_a_well_formed_consistent_answer(
    text: str | None, ports: list[tuple[int, str]], old: dict[str, Any] | None, seed: int
) -> None:
    obj = service(text, ports=tuple(ports))
    operation = "CREATE" if old is None else "UPDATE"
    mutated = answer(operation, obj, old, mutate=True, seed=seed)
    validated = answer(operation, obj, old, mutate=False, seed=seed)
    assert mutated["allowed"] is True  # the mutating webhook never refuses
    if validated["allowed"] is False:
        assert validated["status"]["code"] == 403
    if "patch" in mutated:
        result = patched(obj, mutated)
        config_of(result)  # a complete, valid, named configuration
        # What the mutating webhook produced, the validating one accepts, and it is a fixed point.
        assert answer(operation, result, old, mutate=False, seed=seed)["allowed"] is True
        assert "patch" not in answer(operation, result, old, mutate=True, seed=seed)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    obj=st.one_of(json_values, st.builds(service, annotation_text).map(lambda s: {**s, "spec": None})),
    old=json_values,
    operation=st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", None, 3]),
    spec=st.one_of(json_values, st.just({"type": "LoadBalancer", "ports": [{"port": 80}]})),
)
def test_any_request_gets_a_well_formed_answer(obj: Any, old: Any, operation: Any, spec: Any) -> None:
    if isinstance(obj, dict) and "spec" in obj:
        obj["spec"] = spec
    document = admission_review("CREATE", None)
    document["request"].update(object=obj, oldObject=old, operation=operation)
    for is_mutating in (True, False):
        assert_well_formed(review(document, settings=SETTINGS, mutate=is_mutating), "req-1")
