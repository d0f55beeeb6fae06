"""The floor client's pure parts (``bench.floor``): the requests' bodies are dklb's, the metadata
schedule is AwaitingMetadata's, one POST per pool once all its Services are patched; the task
queue hands out work in due order. No servers: a burst against real ones is ``./dev bench``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import floor
from bench.workload import Spec, pool_members, specs
from engine.model.services import ANNOTATION, FINALIZER
from engine.model.translation import object_name


def service(spec: Spec, *, namespace: str = "ns", node_port: int = 31000) -> dict[str, Any]:
    """``spec`` as the API server answers it: a uid, the node port allocated."""
    body = spec.body()
    body["metadata"].update(namespace=namespace, uid=f"uid-{spec.name}", resourceVersion="7")
    body["spec"]["ports"][0]["nodePort"] = node_port
    return body


@pytest.mark.parametrize(("attempt", "delay"), [(0, 0.0), (1, 1.0), (2, 1.5), (3, 2.25), (20, 30.0)])
def test_poll_delay_is_awaiting_metadatas_schedule(attempt: int, delay: float) -> None:
    assert floor.poll_delay(attempt) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("plan", "pool", "members"), [({"a": 10}, "a", 10), ({"a": 10}, "b", 1), ({"a": 0}, "a", 1)]
)
def test_plan_of(plan: dict[str, int], pool: str, members: int) -> None:
    assert floor.plan_of(plan, pool) == members


def test_pool_members_counts_each_pools_services() -> None:
    counts = pool_members(specs(100))
    assert len(counts) == 64 and sum(counts.values()) == 100
    assert {n for p, n in counts.items() if p.startswith("bench-s-")} == {10}


def test_the_patch_adds_the_finalizer_and_the_defaulted_annotation() -> None:
    spec = specs(1)[0]
    ops, config, member = floor.finalizer_patch(service(spec))
    assert config is not None and member is not None
    assert ops[0] == {"op": "test", "path": "/metadata/uid", "value": "uid-svc-00000"}
    assert ops[1] == {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
    (annotation,) = ops[2:]
    assert annotation["path"] == "/metadata/annotations/" + ANNOTATION.replace("/", "~1")
    written = yaml.safe_load(annotation["value"])
    assert written["name"] == spec.pool and written["size"] == 1
    assert written["frontends"] == [{"port": spec.port, "servicePort": 80}]
    assert annotation["value"] == config.to_annotation()
    name = object_name(cluster=floor.CLUSTER, namespace="ns", service=spec.name, service_port=80)
    assert [fe["name"] for fe in member.frontends] == [name]
    assert member.backends[0]["services"][0]["endpoint"]["port"] == 31000


def test_an_annotation_already_defaulted_is_not_written_again() -> None:
    svc = service(specs(1)[0])
    _, config, _ = floor.finalizer_patch(svc)
    assert config is not None
    svc["metadata"]["annotations"][ANNOTATION] = config.to_annotation()
    ops, _, _ = floor.finalizer_patch(svc)
    assert [op["path"] for op in ops] == ["/metadata/uid", "/metadata/finalizers"]


def test_a_service_dklb_would_reject_gets_no_request() -> None:
    svc = service(specs(1)[0])
    svc["metadata"]["annotations"][ANNOTATION] = "name: [not, a, name]\n"
    assert floor.finalizer_patch(svc) == ([], None, None)


def test_one_pool_body_holds_every_member_of_a_shared_pool() -> None:
    shared = [s for s in specs(30) if s.shared]
    assert len(shared) == 10 and len({s.pool for s in shared}) == 1
    patched = [floor.finalizer_patch(service(s, node_port=31000 + i)) for i, s in enumerate(shared)]
    config = patched[0][1]
    assert config is not None
    body = floor.pool_body(config, [m for _, _, m in patched if m is not None])
    assert body["name"] == shared[0].pool and body["namespace"] == floor.POOL_GROUP
    assert [fe["bindPort"] for fe in body["haproxy"]["frontends"]] == [s.port for s in shared]
    assert len(body["haproxy"]["backends"]) == 10
    assert body["environmentVariables"]  # marked as dklb's, like dklb's own POST


def test_addresses_wait_for_every_member() -> None:
    members = [floor.finalizer_patch(service(s))[2] for s in specs(2)]
    assert all(m is not None for m in members)
    names = [m.frontends[0]["name"] for m in members if m is not None]
    endpoint = {"port": 1, "private": ["10.0.0.1"], "public": ["10.0.0.1"]}
    one = {"frontends": [{"name": names[0], "endpoints": [endpoint]}]}
    both = {"frontends": [{"name": n, "endpoints": [endpoint]} for n in names]}
    assert floor.addresses(one, members) is None  # type: ignore[arg-type]
    assert floor.addresses(both, members) == [[{"ip": "10.0.0.1"}]] * 2  # type: ignore[arg-type]


def test_tasks_are_handed_out_due_first_then_in_order() -> None:
    tasks = floor.Tasks()
    ran: list[str] = []
    tasks.add(lambda: ran.append("later"), delay=0.05)
    tasks.add(lambda: ran.append("first"))
    tasks.add(lambda: ran.append("second"))
    for _ in range(3):
        task = tasks.next()
        assert task is not None
        task()
    assert ran == ["first", "second", "later"]


def test_stopped_tasks_release_a_waiting_worker() -> None:
    tasks = floor.Tasks()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(tasks.next()))
    worker.start()
    tasks.stop()
    worker.join(timeout=10)
    assert not worker.is_alive() and got == [None]


def test_kube_access_reads_the_current_contexts_server_and_token(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {"name": "x", "cluster": {"server": "https://x"}},
                    {"name": "local", "cluster": {"server": "https://127.0.0.1:6443"}},
                ],
                "users": [{"name": "admin", "user": {"token": "t0k"}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
                "current-context": "local",
            }
        )
    )
    assert floor.kube_access(kubeconfig) == ("https://127.0.0.1:6443", "t0k")
