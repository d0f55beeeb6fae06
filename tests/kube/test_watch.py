"""``engine.kube.watch.Watcher`` and ``node_addresses`` against a real kube-apiserver.

The watchers see the whole cluster; each test's ``Recorder`` keeps only its own namespace.
Everything is synchronised by polling a condition with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api

from engine.kube import watch
from engine.kube.api import api_client
from engine.kube.nodes import node_addresses
from engine.kube.watch import Watcher, object_key
from tests.kube import (
    Recorder,
    create_namespace,
    create_service,
    delete_namespace,
    delete_service,
    patch_service,
    unique,
    wait_until,
)

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def client(kube_cluster: Any) -> Iterator[ApiClient]:
    api = api_client(str(kube_cluster.kubeconfig))
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
def watchers() -> Iterator[Callable[..., Watcher]]:
    """Start watchers; every one still running is stopped at the end of the test."""
    started: list[Watcher] = []

    def start(client: ApiClient, recorder: Recorder, **kwargs: Any) -> Watcher:
        kwargs.setdefault("resource", "services")
        watcher = Watcher(
            client, on_upsert=recorder.upsert, on_delete=recorder.delete, on_synced=recorder.synced, **kwargs
        )
        watcher.start()
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def test_initial_list_delivers_existing_services_then_synced(client, core, namespace, watchers):
    create_service(core, namespace, "a")
    create_service(core, namespace, "b", type="ClusterIP")
    recorder = Recorder(namespace)

    watcher = watchers(client, recorder)

    wait_until(watcher.synced.is_set, what="the first list")
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds == ["upsert", "upsert", "synced"]
    assert sorted(recorder.names("upsert")) == ["a", "b"]
    for _, service in recorder.seen("upsert"):
        # Plain dicts, complete like a GET's (LIST items lack kind/apiVersion).
        assert type(service) is dict
        assert service["kind"] == "Service" and service["apiVersion"] == "v1"
        assert service["metadata"]["uid"]
    assert f"{namespace}/a" in watcher.known


def test_create_update_delete_are_delivered_in_order(client, core, namespace, watchers):
    recorder = Recorder(namespace)
    watcher = watchers(client, recorder)
    wait_until(watcher.synced.is_set, what="the first list")

    created = create_service(core, namespace, "redis")
    paused = {"kubernetes.dcos.io/dklb-paused": "true"}
    updated = patch_service(core, namespace, "redis", {"metadata": {"annotations": {"x": "1", **paused}}})
    delete_service(core, namespace, "redis")

    wait_until(lambda: recorder.seen("delete", "redis"), what="the delete")
    calls = recorder.seen(name="redis")
    assert [kind for kind, _ in calls] == ["upsert", "upsert", "delete"]
    assert [o["metadata"]["resourceVersion"] for _, o in calls[:2]] == [
        created["metadata"]["resourceVersion"],
        updated["metadata"]["resourceVersion"],
    ]
    # Services are delivered slim (engine.kube.objects.slim_service): dklb's annotations only.
    assert calls[1][1]["metadata"]["annotations"] == paused
    assert f"{namespace}/redis" not in watcher.known


def test_a_delete_missed_while_stopped_is_delivered_by_the_next_list(client, core, namespace, watchers):
    create_service(core, namespace, "stays")
    create_service(core, namespace, "goes")
    first = watchers(client, Recorder(namespace))
    wait_until(first.synced.is_set, what="the first list")
    first.stop()

    delete_service(core, namespace, "goes")
    recorder = Recorder(namespace)
    second = watchers(client, recorder, known=first.known)

    wait_until(second.synced.is_set, what="the second watcher's list")
    assert recorder.names("delete") == ["goes"]
    assert recorder.names("upsert") == ["stays"]
    # The delete is known before the engine is told the cache is complete.
    assert [kind for kind, _ in recorder.calls][-1] == "synced"


def test_objects_are_delivered_and_kept_without_managed_fields(client, core, namespace, watchers):
    created = create_service(core, namespace, "redis")
    assert created["metadata"].get("managedFields"), "the API server sends them"
    recorder = Recorder(namespace)
    watcher = watchers(client, recorder)
    wait_until(watcher.synced.is_set, what="the first list")

    patch_service(core, namespace, "redis", {"metadata": {"annotations": {"x": "1"}}})

    wait_until(lambda: len(recorder.seen("upsert", "redis")) == 2, what="the watch event")
    listed, watched = (obj for _, obj in recorder.seen("upsert", "redis"))
    for obj in (listed, watched):
        assert obj is not None and "managedFields" not in obj["metadata"]
        assert obj["kind"] == "Service" and obj["apiVersion"] == "v1"
    assert listed["metadata"]["uid"] == created["metadata"]["uid"]
    kept = watcher.known[f"{namespace}/redis"]
    assert kept == watched
    # Kept encoded: every read decodes a fresh copy.
    assert watcher.known[f"{namespace}/redis"] is not kept


def list_requests(watcher: Watcher) -> list[dict[str, Any]]:
    """Record the keyword arguments of the watcher's LIST requests (not its watches)."""
    requests: list[dict[str, Any]] = []
    original = watcher._call

    def call(**kwargs: Any) -> Any:
        if not kwargs.get("watch"):
            requests.append(kwargs)
        return original(**kwargs)

    watcher._call = call  # type: ignore[method-assign]  # a test double for this watcher
    return requests


def five_services_in_pages_of_two(core: Any, namespace: str, monkeypatch: Any) -> list[str]:
    monkeypatch.setattr(watch, "LIST_PAGE", 2)
    names = [f"s{i}" for i in range(5)]
    for name in names:
        create_service(core, namespace, name)
    return names


def test_a_paged_list_delivers_every_object_and_finds_deletes_on_any_page(
    client, core, namespace, watchers, monkeypatch
):
    names = five_services_in_pages_of_two(core, namespace, monkeypatch)
    first_recorder = Recorder(namespace)
    first = Watcher(
        client, resource="services", on_upsert=first_recorder.upsert, on_delete=first_recorder.delete
    )
    pages = list_requests(first)
    first.start()
    try:
        wait_until(first.synced.is_set, what="the first list")
    finally:
        first.stop()
    assert sorted(first_recorder.names("upsert")) == names
    assert first.lists == 1 and len(pages) >= 3, "one LIST of at least three pages"
    assert all(page["limit"] == 2 for page in pages)
    assert "_continue" not in pages[0] and all(page.get("_continue") for page in pages[1:])
    assert {f"{namespace}/{name}" for name in names} <= set(first.known)

    delete_service(core, namespace, "s0")
    delete_service(core, namespace, "s4")
    recorder = Recorder(namespace)
    second = watchers(client, recorder, known=first.known)

    wait_until(second.synced.is_set, what="the second watcher's list")
    assert sorted(recorder.names("delete")) == ["s0", "s4"]
    assert sorted(recorder.names("upsert")) == ["s1", "s2", "s3"]
    assert [kind for kind, _ in recorder.calls][-1] == "synced"
    assert f"{namespace}/s0" not in second.known and f"{namespace}/s1" in second.known


def test_an_expired_continue_token_starts_the_list_over(client, core, namespace, monkeypatch):
    names = five_services_in_pages_of_two(core, namespace, monkeypatch)
    recorder = Recorder(namespace)
    watcher = Watcher(
        client,
        resource="services",
        on_upsert=recorder.upsert,
        on_delete=recorder.delete,
        on_synced=recorder.synced,
    )
    original = watcher._call
    expired: list[str] = []

    def call(**kwargs: Any) -> Any:
        if kwargs.get("_continue") and not expired:
            expired.append(kwargs["_continue"])
            raise ApiException(status=410, reason="Expired")
        return original(**kwargs)

    watcher._call = call  # type: ignore[method-assign]  # a test double for this watcher
    watcher.start()
    try:
        wait_until(watcher.synced.is_set, what="the list")
    finally:
        watcher.stop()
    assert expired
    # Each object once: the pages before the expired token are not delivered twice.
    assert sorted(recorder.names("upsert")) == names
    assert watcher.lists == 1 and recorder.names("delete") == []


def test_a_410_relists_and_loses_nothing(client, core, namespace, watchers):
    create_service(core, namespace, "deleted-in-gap")
    recorder = Recorder(namespace)
    watcher = Watcher(client, resource="services", on_upsert=recorder.upsert, on_delete=recorder.delete)
    original = watcher._stream
    forced: list[str] = []

    def stream_with_one_410(resource_version: str, timeout: int) -> Iterator[dict[str, Any]]:
        if not forced:
            forced.append(resource_version)
            # Changes the watch never reports: only the re-list can find them.
            create_service(core, namespace, "created-in-gap")
            delete_service(core, namespace, "deleted-in-gap")
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
            raise AssertionError("the watcher must stop reading after a 410")
        yield from original(resource_version, timeout)

    watcher._stream = stream_with_one_410  # type: ignore[method-assign]  # a test double for this watcher
    watcher.start()
    try:
        wait_until(lambda: recorder.seen("delete", "deleted-in-gap"), what="the missed delete")
        wait_until(lambda: recorder.seen("upsert", "created-in-gap"), what="the missed create")
        assert watcher.lists == 2
        # And the watch goes on after the re-list.
        create_service(core, namespace, "after")
        wait_until(lambda: recorder.seen("upsert", "after"), what="an event after the re-list")
        assert watcher.lists == 2
    finally:
        watcher.stop()


def test_a_410_response_to_the_watch_request_relists(client, core, namespace):
    recorder = Recorder(namespace)
    watcher = Watcher(client, resource="services", on_upsert=recorder.upsert, on_delete=recorder.delete)
    original = watcher._call
    refused: list[bool] = []

    def call(**kwargs: Any) -> Any:
        if kwargs.get("watch") and not refused:
            refused.append(True)
            raise ApiException(status=410, reason="Gone")
        return original(**kwargs)

    watcher._call = call  # type: ignore[method-assign]  # a test double for this watcher
    watcher.start()
    try:
        wait_until(lambda: watcher.lists == 2, what="the re-list")
        create_service(core, namespace, "after")
        wait_until(lambda: recorder.seen("upsert", "after"), what="an event after the re-list")
    finally:
        watcher.stop()


def test_a_broken_connection_backs_off_and_relists(client, core, namespace):
    recorder = Recorder(namespace)
    watcher = Watcher(
        client, resource="services", on_upsert=recorder.upsert, on_delete=recorder.delete, backoff_base=0.05
    )
    original = watcher._stream
    broken: list[bool] = []

    def stream(resource_version: str, timeout: int) -> Iterator[dict[str, Any]]:
        if not broken:
            broken.append(True)
            create_service(core, namespace, "during-outage")
            raise ConnectionResetError("connection reset by peer")
        yield from original(resource_version, timeout)

    watcher._stream = stream  # type: ignore[method-assign]  # a test double for this watcher
    watcher.start()
    try:
        wait_until(lambda: recorder.seen("upsert", "during-outage"), what="the re-list after the outage")
        assert watcher.lists == 2
    finally:
        watcher.stop()


def test_a_watch_that_times_out_is_resumed_without_a_relist(client, core, namespace, watchers):
    recorder = Recorder(namespace)
    watcher = watchers(client, recorder, watch_timeout=1)
    wait_until(lambda: watcher.watches >= 3, what="three watch requests")

    create_service(core, namespace, "late")

    wait_until(lambda: recorder.seen("upsert", "late"), what="an event on a resumed watch")
    assert watcher.lists == 1


def test_resync_redelivers_every_known_object(client, core, namespace, watchers):
    created = create_service(core, namespace, "redis")
    recorder = Recorder(namespace)

    watcher = watchers(client, recorder, resync_period=0.5)

    wait_until(lambda: len(recorder.seen("upsert", "redis")) >= 3, what="two resyncs")
    versions = {o["metadata"]["resourceVersion"] for _, o in recorder.seen("upsert", "redis")}
    assert versions == {created["metadata"]["resourceVersion"]}
    assert watcher.lists == 1


def test_a_failing_callback_does_not_stop_the_watch(client, core, namespace, watchers):
    recorder = Recorder(namespace)
    failures: list[dict[str, Any]] = []

    def upsert(obj: dict[str, Any]) -> None:
        if obj["metadata"].get("namespace") == namespace and not failures:
            failures.append(obj)
            raise RuntimeError("consumer bug")
        recorder.upsert(obj)

    watcher = Watcher(client, resource="services", on_upsert=upsert, on_delete=recorder.delete)
    watcher.start()
    try:
        wait_until(watcher.synced.is_set, what="the first list")
        create_service(core, namespace, "first")
        create_service(core, namespace, "second")
        wait_until(lambda: recorder.seen("upsert", "second"), what="the second event")
        assert failures and watcher.lists == 1
    finally:
        watcher.stop()


def test_stop_returns_promptly_from_a_long_watch(client, namespace, watchers):
    watcher = watchers(client, Recorder(namespace), watch_timeout=300)
    wait_until(lambda: watcher.watches >= 1, what="the watch request")

    start = time.monotonic()
    watcher.stop(timeout=5)

    assert not watcher.is_alive()
    assert time.monotonic() - start < 2


# ---- nodes ---------------------------------------------------------------------------------------


def node(name: str, *, ip: str, ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
                {"type": "ExternalIP", "address": "198.51.100.1"},
            ],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_node_addresses_of_watched_nodes(client, core, watchers):
    ready, not_ready = unique("node"), unique("node")
    # The API server keeps a Node's status as given on create: no kubelet needed.
    core.create_node(node(ready, ip="10.1.2.3", ready=True), _preload_content=False)
    core.create_node(node(not_ready, ip="10.1.2.4", ready=False), _preload_content=False)
    try:
        recorder = Recorder()
        watcher = watchers(client, recorder, resource="nodes")
        wait_until(lambda: {ready, not_ready} <= set(watcher.known), what="both Nodes")

        ours = [n for n in watcher.objects() if n["metadata"]["name"] in (ready, not_ready)]
        assert node_addresses(ours) == ("10.1.2.3",)
        assert all(n["kind"] == "Node" for n in ours)
        assert object_key(ours[0]) in (ready, not_ready)

        core.delete_node(ready, _preload_content=False)
        wait_until(lambda: ready in recorder.names("delete"), what="the Node delete")
        assert ready not in watcher.known
    finally:
        for name in (ready, not_ready):
            try:
                core.delete_node(name, _preload_content=False)
            except ApiException as e:
                if e.status != 404:
                    raise


def test_node_addresses_are_sorted_unique_internal_ips_of_ready_nodes():
    nodes = [
        node("b", ip="10.0.0.2", ready=True),
        node("a", ip="10.0.0.1", ready=True),
        node("a2", ip="10.0.0.1", ready=True),
        node("c", ip="10.0.0.3", ready=False),
        {"metadata": {"name": "d"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.4"}]}},
        {"metadata": {"name": "e"}},
    ]

    assert node_addresses(nodes) == ("10.0.0.1", "10.0.0.2")
