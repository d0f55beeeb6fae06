"""Tests of the Kubernetes side (adapter, watcher) against the real kube-apiserver.

Helpers shared by the test modules: a per-test namespace, raw-JSON Service helpers (the
generated models cannot even decode some API responses, e.g. a Service DELETE's Status), and
``wait_until``, the only way these tests synchronise with the API server and the watcher.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

from kubernetes.client import ApiException, CoreV1Api

from engine.kube.api import response_json
from engine.model.services import FINALIZER
from tests.processes import wait_for

Object = dict[str, Any]

POLL = 0.02


def wait_until(condition: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` every 20 ms until it returns something truthy; fail after ``timeout``."""
    return wait_for(condition, timeout=timeout, interval=POLL, what=what)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_namespace(core: CoreV1Api) -> str:
    name = unique("t")
    # The generated client is typed for its model classes; it takes the plain dict as well.
    core.create_namespace({"metadata": {"name": name}}, _preload_content=False)  # type: ignore[arg-type]
    return name


def delete_namespace(core: CoreV1Api, namespace: str) -> None:
    """Delete the namespace and, first, its Services: there is no namespace controller here to
    empty it, and a Service held by our finalizer would linger in every later LIST."""
    for service in response_json(core.list_namespaced_service(namespace, _preload_content=False))["items"]:
        name = service["metadata"]["name"]
        if service["metadata"].get("finalizers"):
            patch_service(core, namespace, name, {"metadata": {"finalizers": None}})
        delete_service(core, namespace, name)
    core.delete_namespace(namespace, _preload_content=False)


def create_service(
    core: CoreV1Api,
    namespace: str,
    name: str,
    *,
    finalizers: list[str] | None = None,
    annotations: dict[str, str] | None = None,
    type: str = "LoadBalancer",
) -> Object:
    body: Object = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": type, "ports": [{"port": 6379, "protocol": "TCP"}]},
    }
    if finalizers:
        body["metadata"]["finalizers"] = finalizers
    if annotations:
        body["metadata"]["annotations"] = annotations
    # The generated client is typed for its model classes; it takes the plain dict as well.
    response = core.create_namespaced_service(namespace, body, _preload_content=False)  # type: ignore[arg-type]
    return response_json(response)


def read_service(core: CoreV1Api, namespace: str, name: str) -> Object | None:
    """What ``kubectl get service -o json`` shows, or None."""
    try:
        return response_json(core.read_namespaced_service(name, namespace, _preload_content=False))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def patch_service(core: CoreV1Api, namespace: str, name: str, body: Object) -> Object:
    response = core.patch_namespaced_service(
        name, namespace, body, _content_type="application/merge-patch+json", _preload_content=False
    )
    return response_json(response)


def delete_service(core: CoreV1Api, namespace: str, name: str) -> None:
    try:
        core.delete_namespaced_service(name, namespace, _preload_content=False)
    except ApiException as e:
        if e.status != 404:
            raise


def version(service: Object | None) -> int:
    assert service is not None
    return int(service["metadata"]["resourceVersion"])


def finalizers(service: Object | None) -> list[str]:
    assert service is not None
    return list(service["metadata"].get("finalizers") or [])


class Recorder:
    """Collects watcher callbacks for one namespace (the watcher sees the whole cluster)."""

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace
        self.calls: list[tuple[str, Object | None]] = []
        self._lock = threading.Lock()

    def upsert(self, obj: Object) -> None:
        self._add("upsert", obj)

    def delete(self, obj: Object) -> None:
        self._add("delete", obj)

    def synced(self) -> None:
        with self._lock:
            self.calls.append(("synced", None))

    def _add(self, kind: str, obj: Object) -> None:
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return
        with self._lock:
            self.calls.append((kind, obj))

    # An upsert or a delete always carries its object, and only those have a name to match.
    @overload
    def seen(
        self, kind: Literal["upsert", "delete"], name: str | None = None
    ) -> Sequence[tuple[str, Object]]: ...
    @overload
    def seen(self, kind: None = None, *, name: str) -> Sequence[tuple[str, Object]]: ...
    @overload
    def seen(
        self, kind: str | None = None, name: str | None = None
    ) -> Sequence[tuple[str, Object | None]]: ...
    def seen(self, kind: str | None = None, name: str | None = None) -> Sequence[tuple[str, Object | None]]:
        with self._lock:
            return [
                (k, o)
                for k, o in self.calls
                if (kind is None or k == kind)
                and (name is None or (o is not None and o["metadata"]["name"] == name))
            ]

    def names(self, kind: str) -> list[str]:
        return [o["metadata"]["name"] for _, o in self.seen(kind) if o is not None]


__all__ = ["FINALIZER"]
