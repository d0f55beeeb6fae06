"""``engine.kube.adapter.KubeAdapter`` (and ``engine.kube.api``) against a real kube-apiserver.

Each test works in a fresh namespace. "No write" is checked the way the API server sees it: the
Service's resourceVersion does not move.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration, CoreV1Api

import engine.kube.api as kube_api
from engine.kube.adapter import KubeAdapter
from engine.kube.api import api_client, describe_request, response_json
from engine.model.services import ANNOTATION, FINALIZER
from tests.checks import present
from tests.kube import (
    create_namespace,
    create_service,
    delete_namespace,
    delete_service,
    finalizers,
    read_service,
    unique,
    version,
    wait_until,
)

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

OTHER = "example.com/other"


class Requests:
    """An ``on_request`` hook that keeps every (verb, resource, status)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, verb: str, resource: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        with self._lock:
            self.calls.append((verb, resource, status))

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def requests() -> Requests:
    return Requests()


@pytest.fixture(scope="module")
def client(kube_cluster: Any, requests: Requests) -> Iterator[ApiClient]:
    api = api_client(str(kube_cluster.kubeconfig), on_request=requests)
    yield api
    api.close()


@pytest.fixture
def core(client: ApiClient) -> CoreV1Api:
    return CoreV1Api(client)


@pytest.fixture
def namespace(core: CoreV1Api) -> Iterator[str]:
    name = create_namespace(core)
    yield name
    delete_namespace(core, name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kube(client: ApiClient, clock: Clock) -> KubeAdapter:
    return KubeAdapter(client, clock=clock, instance="test-instance")


def events(core: CoreV1Api, namespace: str, *, name: str | None = None) -> list[dict[str, Any]]:
    items = response_json(core.list_namespaced_event(namespace, _preload_content=False))["items"]
    return [e for e in items if name is None or e["involvedObject"]["name"] == name]


# ---- finalizer -----------------------------------------------------------------------------------


def test_add_finalizer_returns_the_stored_service_and_is_idempotent(core, kube, namespace):
    created = create_service(core, namespace, "redis")

    added = kube.add_finalizer(created)

    assert added is not None
    assert finalizers(added) == [FINALIZER]
    stored = read_service(core, namespace, "redis")
    assert stored == added
    assert version(added) > version(created)
    # Present already: no request at all, the given object back.
    assert kube.add_finalizer(added) is added
    # A stale copy (without the finalizer) makes no second entry and no write either.
    again = kube.add_finalizer(created)
    assert again is not None and finalizers(again) == [FINALIZER]
    assert version(read_service(core, namespace, "redis")) == version(added)


def test_add_finalizer_keeps_other_finalizers_and_survives_a_stale_list(core, kube, namespace):
    created = create_service(core, namespace, "redis", finalizers=[OTHER])
    # Someone adds a finalizer after our copy was taken: the JSON-patch test of the list fails,
    # the adapter re-reads and appends to the list that is really there.
    json_patch = [{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/third"}]
    core.patch_namespaced_service(
        "redis", namespace, json_patch, _content_type="application/json-patch+json", _preload_content=False
    )

    added = kube.add_finalizer(created)

    assert finalizers(added) == [OTHER, "example.com/third", FINALIZER]
    assert finalizers(read_service(core, namespace, "redis")) == [OTHER, "example.com/third", FINALIZER]


def test_remove_finalizer_removes_exactly_our_entry(core, kube, namespace):
    created = create_service(core, namespace, "redis", finalizers=[OTHER, FINALIZER, "example.com/third"])

    removed = kube.remove_finalizer(created)

    assert removed is not None
    assert finalizers(removed) == [OTHER, "example.com/third"]
    assert read_service(core, namespace, "redis") == removed
    assert kube.remove_finalizer(removed) == removed
    assert version(read_service(core, namespace, "redis")) == version(removed)


def test_remove_finalizer_does_not_trust_a_copy_without_it(core, kube, namespace):
    created = create_service(core, namespace, "redis")
    kube.add_finalizer(created)

    removed = kube.remove_finalizer(created)  # ``created`` predates the finalizer

    assert removed is not None and finalizers(removed) == []
    assert finalizers(read_service(core, namespace, "redis")) == []


def test_deleted_service_stays_terminating_until_the_finalizer_goes(core, kube, namespace):
    service = kube.add_finalizer(create_service(core, namespace, "redis"))
    assert service is not None

    delete_service(core, namespace, "redis")

    terminating = read_service(core, namespace, "redis")
    assert terminating is not None and terminating["metadata"].get("deletionTimestamp")
    assert finalizers(terminating) == [FINALIZER]
    assert kube.remove_finalizer(terminating) is None
    assert read_service(core, namespace, "redis") is None
    # Gone already: done, no error.
    assert kube.remove_finalizer(terminating) is None


def test_terminating_service_with_another_finalizer_is_returned(core, kube, namespace):
    service = kube.add_finalizer(create_service(core, namespace, "redis", finalizers=[OTHER]))
    assert service is not None
    delete_service(core, namespace, "redis")

    after = kube.remove_finalizer(service)

    assert after is not None
    assert after["metadata"].get("deletionTimestamp")
    assert finalizers(after) == [OTHER]


def test_the_uid_test_protects_a_recreated_service(core, kube, namespace):
    old = create_service(core, namespace, "redis", finalizers=[FINALIZER])
    # Deleted (for good: we drop the finalizer by hand) and created again under the same name
    # between our read and our writes.
    core.patch_namespaced_service(
        "redis",
        namespace,
        {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
        _preload_content=False,
    )
    delete_service(core, namespace, "redis")
    wait_until(lambda: read_service(core, namespace, "redis") is None, what="the old Service to go")
    new = create_service(core, namespace, "redis", finalizers=[FINALIZER])
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    stale_without_finalizer = {**old, "metadata": {**old["metadata"], "finalizers": []}}

    assert kube.remove_finalizer(old) is None
    assert kube.add_finalizer(stale_without_finalizer) is None
    assert kube.add_finalizer(stale_without_finalizer, annotation="name: other") is None
    assert kube.set_ingress(old, [{"ip": "10.0.0.9"}]) is None

    assert read_service(core, namespace, "redis") == new


def test_add_finalizer_writes_the_annotation_in_the_same_request(core, kube, namespace):
    created = create_service(core, namespace, "redis", annotations={"keep": "me"})

    written = kube.add_finalizer(created, annotation="name: pool\nsize: 2\n")

    assert written is not None
    stored = present(read_service(core, namespace, "redis"))
    assert stored == written
    assert version(written) == version(created) + 1, "one write"
    assert finalizers(stored) == [FINALIZER]
    assert stored["metadata"]["annotations"] == {"keep": "me", ANNOTATION: "name: pool\nsize: 2\n"}
    assert kube.add_finalizer(written, annotation="name: pool\nsize: 2\n") is written
    changed = kube.add_finalizer(written, annotation="name: pool\nsize: 3\n")
    assert changed is not None and changed["metadata"]["annotations"][ANNOTATION] == "name: pool\nsize: 3\n"


@pytest.mark.parametrize("other_finalizers", [[], [OTHER]])
def test_add_finalizer_creates_the_annotations_of_a_service_without_any(
    core, kube, namespace, other_finalizers
):
    created = create_service(core, namespace, "redis", finalizers=other_finalizers)
    assert not created["metadata"].get("annotations")

    written = kube.add_finalizer(created, annotation="name: pool\n")

    assert written is not None
    assert finalizers(written) == [*other_finalizers, FINALIZER]
    assert written["metadata"]["annotations"] == {ANNOTATION: "name: pool\n"}


def test_add_finalizer_never_undoes_a_newer_user_edit_of_the_annotation(core, kube, namespace):
    # The controller derived its text from the annotation it read; the user edited it since.
    read = create_service(core, namespace, "redis", annotations={ANNOTATION: "name: pool\n"})
    core.patch_namespaced_service(
        "redis", namespace, {"metadata": {"annotations": {ANNOTATION: "name: pool\nsize: 5\n"}}}
    )

    after = kube.add_finalizer(read, annotation="name: pool\nsize: 1\n")

    stored = present(read_service(core, namespace, "redis"))
    assert stored["metadata"]["annotations"][ANNOTATION] == "name: pool\nsize: 5\n", "the user's edit wins"
    assert finalizers(stored) == [FINALIZER], "the finalizer is added all the same"
    assert after == stored


def test_ingress_is_set_and_cleared_through_the_status_subresource(core, kube, namespace, requests):
    created = create_service(core, namespace, "redis")
    ingress = [{"hostname": "lb.example.com"}, {"ip": "10.0.0.1"}, {"ip": "203.0.113.7"}]
    requests.clear()

    written = kube.set_ingress(created, ingress)

    assert written is not None
    assert ("patch", "services/status", 200) in requests.calls
    stored = present(read_service(core, namespace, "redis"))
    assert stored == written
    assert stored["status"]["loadBalancer"]["ingress"] == ingress
    assert stored["spec"] == created["spec"]
    assert kube.set_ingress(written, ingress) is written

    cleared = kube.set_ingress(written, [])

    assert cleared is not None
    stored = present(read_service(core, namespace, "redis"))
    assert stored == cleared
    assert not stored["status"]["loadBalancer"].get("ingress")
    assert kube.set_ingress(cleared, []) is cleared
    assert version(read_service(core, namespace, "redis")) == version(cleared)


# ---- events --------------------------------------------------------------------------------------


def test_event_carries_the_fields_of_a_recorder_event(core, kube, namespace, clock):
    service = create_service(core, namespace, "redis")

    kube.event(service, type="Warning", reason="InvalidConfig", message="size must be > 0")

    (event,) = wait_until(lambda: events(core, namespace), what="the Event")
    assert event["involvedObject"] == {
        "kind": "Service",
        "namespace": namespace,
        "name": "redis",
        "uid": service["metadata"]["uid"],
        "apiVersion": "v1",
        "resourceVersion": service["metadata"]["resourceVersion"],
    }
    assert event["metadata"]["name"].startswith("redis.")
    assert event["type"] == "Warning"
    assert event["reason"] == "InvalidConfig"
    assert event["message"] == "size must be > 0"
    assert event["source"] == {"component": "dklb"}
    assert event["reportingComponent"] == "dklb"
    assert event["reportingInstance"] == "test-instance"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-01-02T03:04:05Z"
    assert event["count"] == 1


def test_same_event_within_ten_minutes_is_counted_not_repeated(core, kube, namespace, clock):
    service = create_service(core, namespace, "redis")

    kube.event(service, type="Normal", reason="EnsuredLoadBalancer", message="pool p ready")
    clock.now += timedelta(minutes=9)
    kube.event(service, type="Normal", reason="EnsuredLoadBalancer", message="pool p ready")
    kube.event(service, type="Normal", reason="EnsuringLoadBalancer", message="pool p")

    stored = events(core, namespace)
    assert len(stored) == 2
    (counted,) = [e for e in stored if e["reason"] == "EnsuredLoadBalancer"]
    assert counted["count"] == 2
    assert counted["firstTimestamp"] == "2026-01-02T03:04:05Z"
    assert counted["lastTimestamp"] == "2026-01-02T03:13:05Z"

    clock.now += timedelta(minutes=11)
    kube.event(service, type="Normal", reason="EnsuredLoadBalancer", message="pool p ready")

    counts = sorted(e["count"] for e in events(core, namespace) if e["reason"] == "EnsuredLoadBalancer")
    assert counts == [1, 2]


def test_a_counted_event_that_expired_is_created_again(core, kube, namespace):
    service = create_service(core, namespace, "redis")
    kube.event(service, type="Normal", reason="DeletingLoadBalancer", message="bye")
    (first,) = events(core, namespace)
    core.delete_namespaced_event(first["metadata"]["name"], namespace, _preload_content=False)

    kube.event(service, type="Normal", reason="DeletingLoadBalancer", message="bye")

    (second,) = events(core, namespace)
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert second["count"] == 1


def test_background_events_keep_their_time_and_fold_in_order(client, core, namespace, clock):
    kube = KubeAdapter(client, clock=clock, instance="test-instance", background_events=True)
    service = create_service(core, namespace, "redis")
    recorded_at = clock.now
    try:
        kube.event(service, type="Normal", reason="EnsuringLoadBalancer", message="pool p")
        clock.now += timedelta(minutes=1)
        kube.event(service, type="Normal", reason="EnsuringLoadBalancer", message="pool p")
        kube.event(service, type="Normal", reason="EnsuredLoadBalancer", message="pool p ready")
        assert kube.flush_events(timeout=30)
    finally:
        kube.close()

    stored = {e["reason"]: e for e in events(core, namespace)}
    assert set(stored) == {"EnsuringLoadBalancer", "EnsuredLoadBalancer"}
    assert stored["EnsuringLoadBalancer"]["count"] == 2
    assert stored["EnsuringLoadBalancer"]["firstTimestamp"] == recorded_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert stored["EnsuringLoadBalancer"]["lastTimestamp"] == "2026-01-02T03:05:05Z"


def test_event_failures_are_logged_never_raised(core, kube, caplog):
    absent = unique("absent")
    service = {"metadata": {"namespace": absent, "name": "redis", "uid": "u", "resourceVersion": "1"}}

    with caplog.at_level(logging.WARNING, logger="dklb.kube"):
        kube.event(service, type="Normal", reason="EnsuringLoadBalancer", message="hello")

    assert any("could not record" in r.getMessage() for r in caplog.records)


# ---- gone ----------------------------------------------------------------------------------------


def test_every_write_on_a_missing_service_returns_none(core, kube, namespace):
    gone = create_service(core, namespace, "redis")
    delete_service(core, namespace, "redis")

    assert kube.add_finalizer(gone) is None
    held = {**gone, "metadata": {**gone["metadata"], "finalizers": [FINALIZER]}}
    assert kube.remove_finalizer(held) is None
    assert kube.add_finalizer(gone, annotation="name: p") is None
    assert kube.set_ingress(gone, [{"ip": "10.0.0.1"}]) is None
    kube.event(gone, type="Normal", reason="DeletedLoadBalancer", message="gone")
    assert kube.get(namespace, "redis") is None


# ---- api -----------------------------------------------------------------------------------------


def test_on_request_sees_every_request_with_verb_resource_and_status(core, kube, namespace, requests):
    requests.clear()
    created = create_service(core, namespace, "redis")
    kube.add_finalizer(created)
    kube.get(namespace, "absent")

    assert requests.calls == [
        ("create", "services", 201),
        ("patch", "services", 200),
        ("get", "services", 404),
    ]


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "https://h/api/v1/namespaces/a/services/b", ("get", "services")),
        ("GET", "https://h/api/v1/services?watch=true&resourceVersion=5", ("watch", "services")),
        ("GET", "https://h/api/v1/services?limit=500", ("list", "services")),
        ("PATCH", "https://h/api/v1/namespaces/a/services/b/status", ("patch", "services/status")),
        ("POST", "https://h/api/v1/namespaces/a/events", ("create", "events")),
        ("GET", "https://h/api/v1/nodes", ("list", "nodes")),
        ("DELETE", "https://h/api/v1/namespaces/a", ("delete", "namespaces")),
        ("PUT", "https://h/api/v1/namespaces/a/finalize", ("update", "namespaces/finalize")),
        ("PUT", "https://h/apis/coordination.k8s.io/v1/namespaces/a/leases/l", ("update", "leases")),
    ],
)
def test_describe_request(method, url, expected):
    assert describe_request(method, url) == expected


def test_api_client_prefers_in_cluster_config_without_a_kubeconfig(monkeypatch):
    loaded: list[str] = []

    def incluster(client_configuration: Any) -> None:
        loaded.append("in-cluster")
        client_configuration.host = "https://10.96.0.1:443"

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setattr(kube_api.kubernetes.config, "load_incluster_config", incluster)

    client = api_client()

    assert loaded == ["in-cluster"]
    assert client.configuration.host == "https://10.96.0.1:443"


def test_the_kubeconfig_credential_hook_runs_at_most_once_a_second(tmp_path, monkeypatch):
    # The kubeconfig loader's hook re-applies the whole configuration (and re-reads the proxy
    # environment) before every request, and installs itself again each time it runs.
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "sentinel-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    now = [1000.0]
    monkeypatch.setattr(kube_api.time, "monotonic", lambda: now[0])
    configuration: Configuration = api_client(str(kubeconfig)).configuration
    assert configuration.refresh_api_key_hook is not None
    runs = []
    spied = type(configuration).__setattr__

    def count(self: Any, name: str, value: Any) -> None:
        # The hook re-applies the host, among others: one host per run.
        if name == "host":
            runs.append(value)
        spied(self, name, value)

    monkeypatch.setattr(type(configuration), "__setattr__", count)
    for _ in range(5):
        assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer sentinel-token"
    assert len(runs) == 1
    now[0] += kube_api.REFRESH_SECONDS
    for _ in range(5):
        configuration.get_api_key_with_prefix("BearerToken")
    assert len(runs) == 2
