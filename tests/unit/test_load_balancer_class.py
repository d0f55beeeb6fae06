"""``spec.loadBalancerClass``: which LoadBalancer Services are dklb's (``dklb run --load-balancer-class``).

The rule (``engine.model.services``) as a table over the controller's class, the Service's class,
its type, our finalizer and deletion; then the admission webhook, which must let another
controller's Service through untouched and unchecked, whatever its annotation says.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.admission.review import review
from engine.model.services import (
    ANNOTATION,
    ANY_CLASS,
    FINALIZER,
    claims,
    foreign,
    handled,
    load_balancer_class,
    wants_load_balancer,
)
from engine.model.settings import Settings

ABSENT: Any = object()
OURS, THEIRS = "example.com/dklb", "example.com/other-lb"


def service(
    cls: Any = ABSENT, *, type: str = "LoadBalancer", finalizer: bool = False, deleting: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web", "namespace": "default", "uid": "u1"}
    if finalizer:
        metadata["finalizers"] = [FINALIZER]
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {"type": type, "ports": [{"port": 80, "protocol": "TCP"}]}
    if cls is not ABSENT:
        spec["loadBalancerClass"] = cls
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


@pytest.mark.parametrize(
    ("controller", "cls", "claimed"),
    [
        (None, ABSENT, True),
        (None, None, True),
        (None, "", True),  # an empty class is no class
        (None, OURS, False),
        (OURS, ABSENT, False),
        (OURS, OURS, True),
        (OURS, THEIRS, False),
        (OURS, "EXAMPLE.COM/DKLB", False),  # classes are compared exactly, as Kubernetes does
        ("", ABSENT, True),  # no class given
    ],
)
def test_the_class_rule(controller: str | None, cls: Any, claimed: bool) -> None:
    assert claims(service(cls), controller) is claimed


@pytest.mark.parametrize(
    ("controller", "svc", "wants", "is_handled", "is_foreign"),
    [
        # No class configured (the default): Services without one are ours.
        (None, service(), True, True, False),
        (None, service(OURS), False, False, True),
        (None, service(OURS, finalizer=True), False, True, False),
        (None, service(deleting=True, finalizer=True), False, True, False),
        (None, service(type="ClusterIP"), False, False, False),
        (None, service(type="ClusterIP", finalizer=True), False, True, False),
        # A class configured: exactly the Services of that class.
        (OURS, service(OURS), True, True, False),
        (OURS, service(), False, False, True),
        (OURS, service(THEIRS), False, False, True),
        (OURS, service(THEIRS, deleting=True), False, False, True),
        # Held by our finalizer (a dklb of another class bound it): still ours to clean up.
        (OURS, service(THEIRS, finalizer=True), False, True, False),
        (OURS, service(OURS, deleting=True, finalizer=True), False, True, False),
        (OURS, service(type="NodePort"), False, False, False),
    ],
)
def test_wants_handled_and_foreign(
    controller: str | None, svc: dict[str, Any], wants: bool, is_handled: bool, is_foreign: bool
) -> None:
    assert (wants_load_balancer(svc, controller), handled(svc, controller), foreign(svc, controller)) == (
        wants,
        is_handled,
        is_foreign,
    )


@pytest.mark.parametrize("cls", [ABSENT, OURS, THEIRS])
def test_any_class_is_the_rule_without_the_class(cls: Any) -> None:
    for svc in (service(cls), service(cls, deleting=True), service(cls, type="ClusterIP")):
        assert wants_load_balancer(svc, ANY_CLASS) == wants_load_balancer(svc)
        assert wants_load_balancer(svc) == (
            svc["spec"]["type"] == "LoadBalancer" and "deletionTimestamp" not in svc["metadata"]
        )
    assert handled(service(cls), ANY_CLASS) is True


def test_load_balancer_class_reads_the_spec() -> None:
    assert [load_balancer_class(s) for s in (service(), service(""), service(OURS), {"spec": None}, {})] == [
        None,
        None,
        OURS,
        None,
        None,
    ]


def admit(obj: dict[str, Any], controller: str | None, *, mutate: bool) -> dict[str, Any]:
    request = {
        "uid": "req-1",
        "kind": {"group": "", "version": "v1", "kind": "Service"},
        "resource": {"group": "", "version": "v1", "resource": "services"},
        "namespace": "default",
        "name": "web",
        "operation": "CREATE",
        "object": obj,
        "oldObject": None,
    }
    answer = review(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request},
        settings=Settings(load_balancer_class=controller),
        mutate=mutate,
        rng=random.Random(0),
    )
    response: dict[str, Any] = answer["response"]
    return response


@pytest.mark.parametrize(
    ("controller", "cls", "checked"),
    [
        (None, ABSENT, True),
        (None, OURS, False),
        (OURS, OURS, True),
        (OURS, ABSENT, False),
        (OURS, THEIRS, False),
    ],
)
@pytest.mark.parametrize("mutate", [True, False])
def test_the_webhook_checks_and_defaults_only_its_own_class(
    controller: str | None, cls: Any, checked: bool, mutate: bool
) -> None:
    bad = service(cls)
    bad["metadata"]["annotations"] = {ANNOTATION: "name: __foo__\n"}
    refused = admit(bad, controller, mutate=False)
    assert refused["allowed"] is not checked
    good = admit(service(cls), controller, mutate=mutate)
    assert good["allowed"] is True
    # The mutating webhook writes the defaulted configuration into its own Services only.
    assert ("patch" in good) is (checked and mutate)
