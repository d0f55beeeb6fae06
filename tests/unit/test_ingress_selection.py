"""Which Ingresses dklb serves (engine.model.ingress.selection): class, legacy annotation, default class."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.ingress.selection import is_ours

OURS = "kubernetes.dcos.io/dklb"


def ingress_class(controller: str, *, default: str | None = None) -> dict[str, Any]:
    annotations = {} if default is None else {"ingressclass.kubernetes.io/is-default-class": default}
    return {"metadata": {"annotations": annotations}, "spec": {"controller": controller}}


def ingress(*, class_name: str | None = None, annotation: str | None = None) -> dict[str, Any]:
    annotations = {} if annotation is None else {"kubernetes.io/ingress.class": annotation}
    spec = {} if class_name is None else {"ingressClassName": class_name}
    return {"metadata": {"name": "web", "namespace": "ns", "annotations": annotations}, "spec": spec}


CLASSES = {
    "edgelb": ingress_class(OURS),
    "nginx": ingress_class("k8s.io/ingress-nginx"),
}
OUR_DEFAULT = {**CLASSES, "edgelb": ingress_class(OURS, default="true")}
THEIR_DEFAULT = {**CLASSES, "nginx": ingress_class("k8s.io/ingress-nginx", default="true")}


@pytest.mark.parametrize(
    ("case", "obj", "classes", "expected"),
    [
        ("our class by name", ingress(class_name="edgelb"), CLASSES, True),
        ("another controller's class", ingress(class_name="nginx"), CLASSES, False),
        ("a class that does not exist", ingress(class_name="missing"), CLASSES, False),
        ("legacy annotation edgelb", ingress(annotation="edgelb"), CLASSES, True),
        ("legacy annotation of another class", ingress(annotation="nginx"), CLASSES, False),
        ("legacy annotation is case-sensitive", ingress(annotation="EdgeLB"), CLASSES, False),
        (
            "the annotation wins over another class",
            ingress(class_name="nginx", annotation="edgelb"),
            CLASSES,
            True,
        ),
        (
            "the annotation wins over our class",
            ingress(class_name="edgelb", annotation="nginx"),
            CLASSES,
            False,
        ),
        (
            "an empty annotation still takes precedence",
            ingress(class_name="edgelb", annotation=""),
            CLASSES,
            False,
        ),
        ("no class, no default", ingress(), CLASSES, False),
        ("no class, our class is the default", ingress(), OUR_DEFAULT, True),
        ("no class, another controller's default", ingress(), THEIR_DEFAULT, False),
        ("a class given is not overridden by our default", ingress(class_name="nginx"), OUR_DEFAULT, False),
        (
            "default marker must be exactly true",
            ingress(),
            {"edgelb": ingress_class(OURS, default="yes")},
            False,
        ),
        ("no classes at all", ingress(), {}, False),
        ("empty ingressClassName is no class", ingress(class_name=""), OUR_DEFAULT, True),
    ],
)
def test_is_ours(case: str, obj: dict[str, Any], classes: dict[str, Any], expected: bool) -> None:
    assert is_ours(obj, classes=classes) is expected, case


@pytest.mark.parametrize(
    ("controller", "expected"),
    [("example.com/other", True), (OURS, False)],
)
def test_the_controller_value_is_configurable(controller: str, expected: bool) -> None:
    classes = {"mine": ingress_class("example.com/other")}
    assert is_ours(ingress(class_name="mine"), classes=classes, controller=controller) is expected


def test_an_ingress_without_metadata_or_spec_is_not_ours() -> None:
    assert is_ours({}, classes=CLASSES) is False
