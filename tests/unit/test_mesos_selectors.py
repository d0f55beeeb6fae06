"""edgelb_local.render: which agents a Mesos selector picks, framework included, as EdgeLB does."""

from __future__ import annotations

from typing import Any

import pytest

from edgelb_local.render import DEFAULT_FRAMEWORK, RenderError, resolve_servers

AGENTS = {"kube-node-0": "10.0.0.10", "kube-node-1": "10.0.0.11"}
ALL = ["kube-node-0", "kube-node-1"]
TASKS = {"taskNamePattern": "^kube-node-.*$"}


def backend(mesos: dict[str, Any], **service: Any) -> dict[str, Any]:
    return {
        "name": "be",
        "services": [{"mesos": mesos, "endpoint": {"type": "CONTAINER_IP", "port": 30000}, **service}],
    }


@pytest.mark.parametrize(
    ("mesos", "framework", "expected"),
    [
        ({"frameworkName": "kubernetes-cluster", **TASKS}, DEFAULT_FRAMEWORK, ALL),
        # Another cluster's framework: its kube-node tasks are not these.
        ({"frameworkName": "other-cluster", **TASKS}, DEFAULT_FRAMEWORK, []),
        ({"frameworkName": "dev/kubernetes01", **TASKS}, "dev/kubernetes01", ALL),
        ({"frameworkName": "kubernetes-cluster", **TASKS}, "dev/kubernetes01", []),
        # A pattern is searched (unanchored) and wins over the exact name, as in EdgeLB.
        ({"frameworkNamePattern": "kubernetes", **TASKS}, DEFAULT_FRAMEWORK, ALL),
        (
            {"frameworkNamePattern": "^other$", "frameworkName": "kubernetes-cluster", **TASKS},
            DEFAULT_FRAMEWORK,
            [],
        ),
        # Framework and task IDs are not simulated: selecting by ID selects nothing.
        ({"frameworkID": "kubernetes-cluster", **TASKS}, DEFAULT_FRAMEWORK, []),
        ({"frameworkName": "kubernetes-cluster", "taskIDPattern": "."}, DEFAULT_FRAMEWORK, []),
        # Both constraints must hold.
        (
            {"frameworkName": "kubernetes-cluster", "taskName": "kube-node-1"},
            DEFAULT_FRAMEWORK,
            ["kube-node-1"],
        ),
        ({"frameworkName": "other-cluster", "taskName": "kube-node-1"}, DEFAULT_FRAMEWORK, []),
    ],
)
def test_a_selector_picks_tasks_of_its_framework_only(
    mesos: dict[str, str], framework: str, expected: list[str]
) -> None:
    servers = resolve_servers(backend(mesos), AGENTS, framework=framework)
    assert [s.name for s in servers] == [f"{agent}:30000" for agent in expected]


def test_a_marathon_selector_looks_in_the_marathon_framework() -> None:
    mesos = {"frameworkName": "kubernetes-cluster", **TASKS}
    assert resolve_servers(backend(mesos, marathon={"serviceID": "/redis"}), AGENTS) == []


def test_a_bad_framework_pattern_is_refused() -> None:
    with pytest.raises(RenderError, match=r"mesos\.frameworkNamePattern '\(': "):
        resolve_servers(backend({"frameworkNamePattern": "(", **TASKS}), AGENTS)
