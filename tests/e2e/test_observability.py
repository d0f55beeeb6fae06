"""`dklb run`'s /metrics, /healthz and /readyz, and its JSON log lines, end to end.

The controller of the e2e ``world`` is restarted with ``--http-listen 127.0.0.1:0`` (the kernel
picks a free port, so there is no race for one) and ``--log-format json``; the test reads the
bound address from the log line ``http listening on http://HOST:PORT``. A LoadBalancer Service
then walks to Ready through the real kube-apiserver and the local EdgeLB, and /metrics must show
what happened: the binding by state, the transitions, the EdgeLB and Kubernetes requests.
Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import re
from typing import Any

import requests

from tests.e2e.conftest import World
from tests.integration.conftest import free_port
from tests.processes import scrape, wait_for

TIMEOUT = 5.0
LISTENING = re.compile(r"http listening on (http://\S+)")


def log_lines(world: World, offset: int) -> list[str]:
    """The controller's log lines written after byte ``offset``."""
    return world.controller.log_path.read_bytes()[offset:].decode(errors="replace").splitlines()


def listening_url(world: World, offset: int) -> str | None:
    for line in log_lines(world, offset):
        try:
            message = json.loads(line).get("message", "")
        except ValueError:
            continue
        found = LISTENING.search(message)
        if found:
            return found.group(1)
    return None


def get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=TIMEOUT)
    except requests.ConnectionError:
        return None


def sample(metrics: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (summed over the others)."""
    matching = [s.value for s in metrics.get(name, []) if labels.items() <= s.labels.items()]
    return sum(matching) if matching else None


def test_metrics_and_probes_of_a_running_controller(world: World) -> None:
    offset = world.controller.log_path.stat().st_size
    world.restart_controller("--http-listen", "127.0.0.1:0", "--log-format", "json")
    url = wait_for(lambda: listening_url(world, offset), what="the http listening line in the log")

    def ready() -> requests.Response | None:
        answer = get(url + "/readyz")
        return answer if answer is not None and answer.status_code == 200 else None

    # Without --leader-elect this replica always leads.
    assert wait_for(ready, what="/readyz 200 (cache synced, database answering)").json() == {
        "ready": True,
        "leader": True,
    }

    world.create_service(
        "redis", config=f"name: dklb-redis\nfrontends:\n- port: {free_port()}\n  servicePort: 6379\n"
    )
    wait_for(lambda: world.ingress("redis"), what="status.loadBalancer.ingress")

    def bound() -> dict[str, list[Any]] | None:
        # The ingress is written just before the commit to Ready, and the transition is counted
        # just after it: wait for both.
        metrics = scrape(url + "/metrics")
        committed = sample(metrics, "dklb_bindings", state="Ready") == 1
        return metrics if committed and sample(metrics, "dklb_transitions_total", to="Ready") else None

    metrics = wait_for(bound, what='dklb_bindings{state="Ready"} 1')

    assert sample(metrics, "dklb_pools") == 1
    assert sample(metrics, "dklb_transitions_total", to="Ready"), "a transition to Ready was counted"
    assert (
        sample(metrics, "dklb_transitions_total", **{"from": "", "to": "Pending", "trigger": "observed"}) == 1
    )
    assert sample(metrics, "dklb_edgelb_requests_total", method="POST", route="/v2/pools", code="200") == 1
    assert (
        sample(metrics, "dklb_edgelb_request_duration_seconds_count", method="POST", route="/v2/pools") == 1
    )
    assert sample(
        metrics, "dklb_kubernetes_requests_total", verb="patch", resource="services/status", code="200"
    ), "the ingress was written through the status subresource"
    assert sample(metrics, "dklb_kubernetes_requests_total", verb="list", resource="services", code="200")
    assert sample(metrics, "dklb_reconcile_duration_seconds_count")
    assert sample(metrics, "dklb_leader") == 1
    assert sample(metrics, "dklb_workqueue_depth") is not None
    routes = {s.labels["route"] for s in metrics["dklb_edgelb_requests_total"]}
    assert not any("dklb-redis" in route for route in routes), f"route templates only, got {routes}"

    alive = requests.get(url + "/healthz", timeout=TIMEOUT)
    assert (alive.status_code, alive.json()) == (200, {"alive": True})
    assert requests.get(url + "/readyz", timeout=TIMEOUT).status_code == 200

    # Stopped here, not by the fixture, so that the shutdown lines are checked too.
    assert world.controller.stop() == 0
    assert get(url + "/healthz") is None, "the HTTP server stops with the process"
    lines = log_lines(world, offset)
    assert any("dklb stopped" in line for line in lines)
    for line in lines:
        assert isinstance(json.loads(line), dict), f"not a JSON object: {line!r}"
