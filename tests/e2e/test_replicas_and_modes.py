"""`dklb run` as operators deploy it: two replicas under leader election (on SQLite and on
PostgreSQL), Node-address backends, flags from the environment.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from datetime import datetime
from pathlib import Path

import kubernetes

import localcluster
from tests.checks import present
from tests.e2e.conftest import BOTH_DATABASES, World
from tests.integration.conftest import free_port
from tests.integration.conftest import redis_ping as ping
from tests.processes import ControllerProcess, controller_args, wait_for

LEADING = "leading: this replica writes now"


def logged_at(log: str, needle: str) -> float | None:
    """When the first log line containing ``needle`` was written (epoch seconds), or None."""
    for line in log.splitlines():
        if needle in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


@BOTH_DATABASES
def test_only_the_leader_writes_and_the_standby_takes_over_after_a_crash(
    world: World, kube_cluster: localcluster.LocalCluster, tmp_path: Path
) -> None:
    world.controller.stop()
    elect = [
        "--leader-elect",
        "true",
        "--leader-elect-namespace",
        world.namespace,
        "--leader-elect-lease-duration",
        "3s",
        "--leader-elect-renew-deadline",
        "2s",
        "--leader-elect-retry-period",
        "0.5s",
        "--edgelb-request-timeout",
        "0.8s",
    ]
    replicas = []
    for i in range(2):
        args = controller_args(
            kubeconfig=kube_cluster.kubeconfig,
            edgelb_url=world.edgelb.url,
            # One SQLite file on one host, or one PostgreSQL database.
            database=world.database,
            resync_period="2s",
        )
        args = [a for a in args if a not in ("--leader-elect", "false")] + elect
        replicas.append(ControllerProcess(args=args, log_path=tmp_path / f"replica-{i}.log").start())
    try:
        port = free_port()
        service = world.create_service(
            "a", config=f"name: pool-a\nfrontends:\n- {{port: {port}, servicePort: 6379}}\n"
        )
        world.redis_on_node_port(service)
        wait_for(lambda: world.ingress("a"), what="a ready")
        leaders = [r for r in replicas if "leading: this replica writes now" in r.log()]
        assert len(leaders) == 1, "exactly one replica leads"
        leader, standby = leaders[0], next(r for r in replicas if r is not leaders[0])
        assert "pool-a" in leader.log() and "-> Provisioning" not in standby.log(), (
            "the standby wrote nothing"
        )

        killed = time.time()
        leader.kill()
        port_b = free_port()
        service_b = world.create_service(
            "b", config=f"name: pool-b\nfrontends:\n- {{port: {port_b}, servicePort: 6379}}\n"
        )
        world.redis_on_node_port(service_b)
        # lease duration (3 s) + 5 s, as an operator would expect of a takeover
        wait_for(lambda: "leading: this replica writes now" in standby.log(), timeout=8, what="takeover")
        wait_for(lambda: world.ingress("b"), what="b ready after the takeover")
        assert ping(port) and ping(port_b)
        assert world.pool_names() == ["pool-a", "pool-b"], "no pool provisioned twice"
        # The failover figure, from the standby's own log lines (millisecond timestamps).
        ready_line = f"{world.namespace}/b: AwaitingMetadata -> Ready"
        takeover = wait_for(lambda: logged_at(standby.log(), LEADING), what="the leading line") - killed
        ready = wait_for(lambda: logged_at(standby.log(), ready_line), what="b's Ready line") - killed
        print(
            f"\nfailover: the standby leads {takeover:.2f} s and Service b is Ready {ready:.2f} s after "
            "SIGKILL of the leader (lease 3 s, renew deadline 2 s, retry period 0.5 s)"
        )
    finally:
        for replica in replicas:
            replica.stop()


def test_address_backend_mode_sends_traffic_to_node_addresses(world: World) -> None:
    node = f"node-{uuid.uuid4().hex[:6]}"
    world.core.create_node(
        {  # type: ignore[arg-type]  # a dict body: the client takes it for its V1Node
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
        _preload_content=False,
    )
    try:
        # The Node is at 127.0.0.1: loopback Nodes are refused unless named (S12).
        world.restart_controller("--backend-mode", "address", "--node-address-cidr", "127.0.0.0/8")
        port = free_port()
        service = world.create_service(
            "web", config=f"name: addr\nfrontends:\n- {{port: {port}, servicePort: 6379}}\n"
        )
        world.redis_on_node_port(service)
        wait_for(lambda: world.ingress("web"), what="ready")
        backend = present(world.pool("addr"))["haproxy"]["backends"][0]
        endpoint = backend["services"][0]["endpoint"]
        assert (endpoint["type"], endpoint["address"]) == ("ADDRESS", "127.0.0.1")
        assert endpoint["port"] == service["spec"]["ports"][0]["nodePort"]
        assert wait_for(lambda: ping(port), what="traffic through the ADDRESS backend")
    finally:
        with contextlib.suppress(kubernetes.client.ApiException):
            world.core.delete_node(node, _preload_content=False)


def test_every_flag_can_come_from_the_environment(
    world: World, kube_cluster: localcluster.LocalCluster, tmp_path: Path
) -> None:
    world.controller.stop()
    env_controller = ControllerProcess(
        args=[],
        log_path=tmp_path / "env.log",
        env={
            "DKLB_KUBECONFIG": str(kube_cluster.kubeconfig),
            "DKLB_EDGELB_URL": world.edgelb.url,
            "DKLB_DATABASE": str(tmp_path / "env.db"),
            "DKLB_LEADER_ELECT": "false",
            "DKLB_KUBERNETES_CLUSTER_FRAMEWORK_NAME": "/dev/kube01",
            "DKLB_LOG_FORMAT": "json",
        },
    ).start()
    try:
        world.create_service("web", ports=[(free_port(), "TCP")])
        wait_for(lambda: world.ingress("web"), what="ready")
        pool = world.pool_names()[0]
        assert pool.startswith("dev--kube01--"), pool
        backend = present(world.pool(pool))["haproxy"]["backends"][0]
        assert backend["name"].startswith(".dev.kube01:" + world.namespace + ":web:")
        lines = [json.loads(line) for line in env_controller.log().splitlines() if line.startswith("{")]
        assert any("dklb running" in line["message"] for line in lines), "JSON lines from DKLB_LOG_FORMAT"
        assert (tmp_path / "env.db").exists()
    finally:
        env_controller.stop()
