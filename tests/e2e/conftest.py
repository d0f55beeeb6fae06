"""The end-to-end world: a real kube-apiserver, the local EdgeLB with real HAProxy, `dklb run`.

Each test gets its own namespace, its own local EdgeLB process and its own controller process
and database (the API server is shared by the session): a SQLite file, or, for a test
parametrized with ``BOTH_DATABASES``, also a fresh PostgreSQL database of the session's server.
Redis servers listening on 127.0.0.1 at a Service's nodePort play kube-proxy. Everything a test
started is stopped by PID at the end, and the test's Services are released (finalizers stripped)
so no later test sees them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import localcluster
from engine.edgelb.client import EdgeLBClient
from engine.edgelb.errors import NotFound
from engine.kube.api import response_json
from engine.model.services import ANNOTATION
from tests.integration.conftest import RedisServer, start_redis
from tests.processes import ControllerProcess, EdgeLBProcess, controller_args, start_edgelb, wait_for


@dataclass
class World:
    core: kubernetes.client.CoreV1Api
    namespace: str
    edgelb: EdgeLBProcess
    client: EdgeLBClient
    controller: ControllerProcess
    directory: Path
    # What the controller's --database says: a SQLite path or a PostgreSQL URL.
    database: str = ""
    _redis: list[contextlib.ExitStack] = field(default_factory=list)

    # ---- Services ------------------------------------------------------------------------------

    def create_service(
        self,
        name: str,
        *,
        ports: list[tuple[int, str]] | None = None,
        config: str | None = None,
        namespace: str | None = None,
        annotations: dict[str, str] | None = None,
        type: str = "LoadBalancer",
    ) -> dict[str, Any]:
        notes = dict(annotations or {})
        if config is not None:
            notes[ANNOTATION] = config
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "annotations": notes, "labels": {"app": name}},
            "spec": {
                "type": type,
                "selector": {"app": name},
                "ports": [
                    {"name": f"p{port}", "port": port, "targetPort": port, "protocol": proto}
                    for port, proto in (ports or [(6379, "TCP")])
                ],
            },
        }
        response = self.core.create_namespaced_service(
            namespace or self.namespace,
            body,  # type: ignore[arg-type]  # a dict body: the client takes it for its V1Service
            _preload_content=False,
        )
        return response_json(response)

    def service(self, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            response = self.core.read_namespaced_service(
                name, namespace or self.namespace, _preload_content=False
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return response_json(response)

    def patch_service(self, name: str, patch: dict[str, Any], *, namespace: str | None = None) -> None:
        self.core.patch_namespaced_service(name, namespace or self.namespace, patch, _preload_content=False)

    def set_config(self, name: str, config: str, *, namespace: str | None = None) -> None:
        self.patch_service(name, {"metadata": {"annotations": {ANNOTATION: config}}}, namespace=namespace)

    def delete_service(self, name: str, *, namespace: str | None = None) -> None:
        with contextlib.suppress(kubernetes.client.ApiException):
            self.core.delete_namespaced_service(name, namespace or self.namespace, _preload_content=False)

    def ingress(self, name: str, *, namespace: str | None = None) -> list[dict[str, str]]:
        service = self.service(name, namespace=namespace) or {}
        return ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []

    def events(
        self, name: str, *, namespace: str | None = None, type: str | None = None
    ) -> list[dict[str, Any]]:
        ns = namespace or self.namespace
        response = self.core.list_namespaced_event(
            ns, field_selector=f"involvedObject.name={name}", _preload_content=False
        )
        items = response_json(response)["items"]
        return [e for e in items if type is None or e["type"] == type]

    def wait_event(
        self,
        name: str,
        *,
        reason: str | None = None,
        contains: str = "",
        namespace: str | None = None,
        type: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for event in self.events(name, namespace=namespace, type=type):
                if (reason is None or event["reason"] == reason) and contains in event["message"]:
                    return event
            return None

        return wait_for(found, timeout=timeout, what=f"event {reason} {contains!r} on {name}")

    # ---- EdgeLB --------------------------------------------------------------------------------

    def pool(self, name: str) -> dict[str, Any] | None:
        try:
            return self.client.get_pool(name)
        except NotFound:
            return None

    def pool_names(self) -> list[str]:
        return sorted(p["name"] for p in self.client.list_pools())

    # ---- kube-proxy stand-in -------------------------------------------------------------------

    def redis_on_node_port(self, service: dict[str, Any], index: int = 0) -> RedisServer:
        """A redis-server on 127.0.0.1:<nodePort of port ``index``>: what kube-proxy would route to."""
        node_port = int(service["spec"]["ports"][index]["nodePort"])
        stack = contextlib.ExitStack()
        server = stack.enter_context(start_redis(self.directory / f"redis-{node_port}", port=node_port))
        self._redis.append(stack)
        return server

    def restart_controller(self, *extra: str) -> None:
        """Stop the controller and start it again, with ``extra`` flags appended if given."""
        self.controller.stop()
        self.controller.args += list(extra)
        self.controller.start()


@pytest.fixture(scope="session")
def core(kube_cluster: localcluster.LocalCluster) -> kubernetes.client.CoreV1Api:
    api = kubernetes.config.new_client_from_config(str(kube_cluster.kubeconfig))
    return kubernetes.client.CoreV1Api(api)


#: Runs a test that takes ``world`` once on each store: ``@BOTH_DATABASES``.
BOTH_DATABASES = pytest.mark.parametrize("world", ["sqlite", "postgresql"], indirect=True)


def e2e_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The --database of a test's controller: a SQLite file unless the test asked for PostgreSQL."""
    kind = getattr(request, "param", "sqlite")
    if kind == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        # SQLAlchemy's plain postgresql:// means psycopg2; dklb speaks psycopg 3.
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    assert kind == "sqlite", kind
    return str(tmp_path / "dklb.db")


@pytest.fixture
def world(
    kube_cluster: localcluster.LocalCluster,
    core: kubernetes.client.CoreV1Api,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    database = e2e_database(request, tmp_path)
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    # The generated client is typed for its model classes; it takes the plain dict as well.
    core.create_namespace({"metadata": {"name": namespace}}, _preload_content=False)  # type: ignore[arg-type]
    edgelb = start_edgelb(tmp_path / "edgelb")
    controller = ControllerProcess(
        args=controller_args(
            kubeconfig=kube_cluster.kubeconfig,
            edgelb_url=edgelb.url,
            database=database,
            resync_period="2s",
        ),
        log_path=tmp_path / "controller.log",
    )
    w = World(
        database=database,
        core=core,
        namespace=namespace,
        edgelb=edgelb,
        client=EdgeLBClient(edgelb.url),
        controller=controller.start(),
        directory=tmp_path,
    )
    # Every clean-up step runs even when an earlier one fails: nothing may outlive the test.

    def close_redis() -> None:
        for stack in w._redis:
            stack.close()

    with contextlib.ExitStack() as cleanup:
        cleanup.callback(close_redis)
        cleanup.callback(edgelb.stop_haproxies)
        cleanup.callback(edgelb.stop)
        cleanup.callback(release_services, core)
        cleanup.callback(lambda: w.controller.stop())
        yield w


def release_services(core: kubernetes.client.CoreV1Api) -> None:
    """Delete every Service of the e2e namespaces and strip their finalizers: nothing lingers."""
    response = core.list_service_for_all_namespaces(_preload_content=False)
    for service in response_json(response)["items"]:
        meta = service["metadata"]
        if not meta["namespace"].startswith("e2e-"):
            continue
        with contextlib.suppress(kubernetes.client.ApiException):
            if meta.get("finalizers"):
                core.patch_namespaced_service(
                    meta["name"],
                    meta["namespace"],
                    {"metadata": {"finalizers": None}},
                    _preload_content=False,
                )
            core.delete_namespaced_service(meta["name"], meta["namespace"], _preload_content=False)
