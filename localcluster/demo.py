"""``dklb demo``: the seed's "Exposing a Redis instance" walk-through, for real, on this machine.

Starts a kube-apiserver + etcd (``localcluster``), the local EdgeLB with real HAProxy
(``dklb edgelb-local``) and the controller (``dklb run``) as separate processes, then replays
the seed's steps with the same objects, printing what ``kubectl`` and ``dcos edgelb list``
would show; redis-server listening at the Service's node port plays the Kubernetes node. It
proves ``SET foo bar`` / ``GET foo`` through the pool's frontend on port 16379, deletes the
Service, checks the pool is gone, and stops everything it started (``--keep`` leaves it all
running and says how to stop it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from engine.cli.output import table
from engine.cli.pools import SUMMARY_COLUMNS, pool_summary, summary_row
from engine.edgelb.errors import EdgeLBError
from localcluster import processes

T = TypeVar("T")
FRONTEND_PORT = 16379

POD = """apiVersion: v1
kind: Pod
metadata:
  labels:
    app: redis
  name: redis
spec:
  containers:
  - name: redis
    image: redis:5.0.3
    ports:
    - name: redis
      containerPort: 6379
      protocol: TCP
"""

SERVICE = """apiVersion: v1
kind: Service
metadata:
  annotations:
    kubernetes.dcos.io/dklb-config: |
      name: dklb-redis
      frontends:
      - port: 16379
        servicePort: 6379
  labels:
    app: redis
  name: redis
spec:
  type: LoadBalancer
  selector:
    app: redis
  ports:
  - protocol: TCP
    port: 6379
    targetPort: 6379
"""


class DemoFailed(Exception):
    """A step did not do what the walk-through says it does."""


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` sub-command's flags (``engine.cli.dev`` registers it)."""
    parser.description = __doc__
    parser.epilog = (
        "examples:\n  dklb demo\n  dklb demo --keep            # leave everything running\n"
        "  dklb demo --stop DIR        # stop what a --keep run left running"
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the cluster, EdgeLB and controller running"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where state and logs go (default: a temp dir)"
    )
    parser.add_argument(
        "--stop", type=Path, default=None, metavar="DIR", help="stop a demo left running by --keep"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds each step may take (default 120)"
    )
    parser.set_defaults(func=run)


def say(text: str = "") -> None:
    print(text, flush=True)


def shell(command: str, output: str = "") -> None:
    say(f"$ {command}")
    if output:
        say(output.rstrip("\n"))


def wait_for(condition: Callable[[], T | None], *, timeout: float, what: str) -> T:
    return processes.wait_for(condition, timeout=timeout, interval=0.1, what=what, error=DemoFailed)


def redis(port: int, *args: str) -> str:
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        answer = sock.recv(4096).decode()
    if answer.startswith("+"):
        return answer[1:].strip()
    if answer.startswith("$"):
        return answer.split("\r\n")[1]
    raise DemoFailed(f"redis answered {answer!r}")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Processes:
    """What the demo started, recorded in WORK/pids so that ``--stop`` can end it later."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.pids: dict[str, int] = {}

    def started(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        (self.work / "pids.json").write_text(json.dumps(self.pids))

    def stop_all(self) -> None:
        for name in ["controller", "edgelb", "redis"]:
            pid = self.pids.get(name)
            if pid:
                processes.terminate(pid)


def _kubectl_get_svc(service: dict[str, Any]) -> str:
    ports = ",".join(
        f"{p['port']}:{p.get('nodePort', '')}/{p.get('protocol', 'TCP')}" for p in service["spec"]["ports"]
    )
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("hostname") or i.get("ip", "") for i in ingress) or "<pending>"
    rows = [
        ("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"),
        (
            service["metadata"]["name"],
            service["spec"]["type"],
            service["spec"].get("clusterIP", ""),
            external,
            ports,
        ),
    ]
    return table(rows[0], rows[1:])


def _edgelb_list(client: Any) -> str:
    """``dcos edgelb list``: dynamic ports (stats bindPort 0) shown as EdgeLB resolved them."""
    rows = []
    for pool in client.list_pools():
        with contextlib.suppress(EdgeLBError, LookupError, TypeError):
            stats = client.get_metadata(pool["name"])["stats"][0]["port"]
            pool = {
                **pool,
                "haproxy": {**pool["haproxy"], "stats": {**pool["haproxy"]["stats"], "bindPort": stats}},
            }
        rows.append(summary_row(pool_summary(pool)))
    return table(SUMMARY_COLUMNS, rows)


@contextlib.contextmanager
def _cluster(work: Path, keep: bool) -> Iterator[Any]:
    import localcluster

    if not localcluster.apiserver_binary().exists():
        say("# building kube-apiserver from Debian's sources once (about 6 minutes; cached afterwards)")
    cluster = localcluster.start(work / "kube")
    try:
        yield cluster
    finally:
        if not keep:
            localcluster.stop(cluster, remove=False)


def run(args: argparse.Namespace) -> int:
    if args.stop is not None:
        return _stop(args.stop)
    if not port_free(FRONTEND_PORT):
        print(f"error: port {FRONTEND_PORT} is in use; the demo's pool frontend needs it", file=sys.stderr)
        return 1
    work = args.work_dir or Path(
        tempfile.mkdtemp(prefix="dklb-demo-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    work.mkdir(parents=True, exist_ok=True)
    processes = Processes(work)
    try:
        with _cluster(work, args.keep) as cluster:
            _walkthrough(cluster, work, processes, timeout=args.timeout, keep=args.keep)
    except DemoFailed as exc:
        say(f"\ndemo FAILED: {exc}\nlogs: {work}/controller.log, {work}/edgelb.log")
        log = work / "controller.log"
        if log.exists():
            say("--- last lines of the controller log ---")
            say("\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        processes.stop_all()
        return 1
    finally:
        if not args.keep:
            processes.stop_all()
    if args.keep:
        say(f"\nLeft running (state in {work}):")
        say(f"  export KUBECONFIG={work}/kube/kubeconfig")
        say(f"  EdgeLB API: {(work / 'edgelb.url').read_text().strip()}")
        say(f"  controller log: {work}/controller.log")
        say(f"  stop it all: dklb demo --stop {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    say("\ndemo passed")
    return 0


def _stop(work: Path) -> int:
    import localcluster

    pids = json.loads((work / "pids.json").read_text()) if (work / "pids.json").exists() else {}
    for name in ["controller", "edgelb", "redis"]:
        if pids.get(name):
            processes.terminate(int(pids[name]))
    subprocess.run(["bash", str(localcluster.HERE / "stop.sh"), str(work / "kube")], check=False)
    say(f"stopped the demo in {work}")
    return 0


def _walkthrough(cluster: Any, work: Path, processes: Processes, *, timeout: float, keep: bool) -> None:
    import kubernetes

    from edgelb_local import process as edgelb_process
    from engine.edgelb.client import EdgeLBClient
    from engine.edgelb.errors import EdgeLBError, NotFound
    from engine.kube.api import api_client, response_json

    say(f"# a real kube-apiserver v1.20.2 + etcd is serving at {cluster.server}")
    edgelb_log = (work / "edgelb.log").open("ab")
    try:
        edgelb, url = edgelb_process.start(
            work / "edgelb", extra=["--metadata-delay", "2s"], stderr=edgelb_log, new_session=True
        )
    except RuntimeError as exc:
        raise DemoFailed(str(exc)) from exc
    processes.started("edgelb", edgelb.pid)
    (work / "edgelb.url").write_text(url + "\n")
    say(f"# the local EdgeLB (V2 API, one real HAProxy per pool) is serving at {url}")

    controller = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--edgelb-url",
            url,
            "--database",
            str(work / "dklb.db"),
            "--leader-elect",
            "false",
            "--resync-period",
            "30s",
            "--http-listen",
            "127.0.0.1:0",
        ],
        stdout=(work / "controller.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    processes.started("controller", controller.pid)
    say(f"# dklb run is watching the cluster (log: {work}/controller.log)\n")

    api = api_client(str(cluster.kubeconfig))
    core = kubernetes.client.CoreV1Api(api)
    client = EdgeLBClient(url)

    shell("cat <<EOF | kubectl create -f -\n" + POD + "EOF", "pod/redis created")
    core.create_namespaced_pod("default", yaml.safe_load(POD), _preload_content=False)
    say("# (no kubelet here: redis-server on 127.0.0.1 at the Service's node port plays the node)\n")

    shell("cat <<EOF | kubectl create -f -\n" + SERVICE + "EOF", "service/redis created")
    created = response_json(
        core.create_namespaced_service("default", yaml.safe_load(SERVICE), _preload_content=False)
    )
    node_port = int(created["spec"]["ports"][0]["nodePort"])
    redis_server = subprocess.Popen(
        ["redis-server", "--port", str(node_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=work,
        start_new_session=True,
    )
    processes.started("redis", redis_server.pid)

    def service() -> dict[str, Any]:
        return response_json(core.read_namespaced_service("redis", "default", _preload_content=False))

    shell('kubectl get svc --selector "app=redis"', _kubectl_get_svc(service()))
    say()

    def pool() -> dict[str, Any] | None:
        try:
            return client.get_pool("dklb-redis")
        except NotFound:
            return None

    wait_for(pool, timeout=timeout, what="the dklb-redis EdgeLB pool")

    def launched() -> bool:
        try:
            return bool(client.get_metadata("dklb-redis"))
        except EdgeLBError:
            return False

    # Like a real pool, the local one reports where it runs a moment after it is created.
    wait_for(launched, timeout=timeout, what="the dklb-redis pool to launch")
    shell("dcos edgelb list", _edgelb_list(client))
    say()

    def ingress() -> list[dict[str, str]]:
        return ((service().get("status") or {}).get("loadBalancer") or {}).get("ingress") or []

    addresses = wait_for(ingress, timeout=timeout, what="status.loadBalancer.ingress of the Service")
    shell('kubectl get svc --selector "app=redis"', _kubectl_get_svc(service()))
    address = addresses[0].get("ip") or addresses[0].get("hostname")
    say()

    shell(f"redis-cli -h {address} -p {FRONTEND_PORT} SET foo bar", redis(FRONTEND_PORT, "SET", "foo", "bar"))
    answer = redis(FRONTEND_PORT, "GET", "foo")
    shell(f"redis-cli -h {address} -p {FRONTEND_PORT} GET foo", f'"{answer}"')
    if answer != "bar":
        raise DemoFailed(f"GET foo through the pool answered {answer!r}")
    say()

    def events_once_ensured() -> list[dict[str, Any]] | None:
        # Events are posted in the background, after the status write the address came from:
        # the first listing may come before EnsuredLoadBalancer is there (seen on a loaded machine).
        items: list[dict[str, Any]] = response_json(
            core.list_namespaced_event(
                "default", field_selector="involvedObject.name=redis", _preload_content=False
            )
        )["items"]
        return items if any(e.get("reason") == "EnsuredLoadBalancer" for e in items) else None

    events = wait_for(events_once_ensured, timeout=timeout, what="the Service's EnsuredLoadBalancer Event")
    shell(
        "kubectl describe svc redis   # Events",
        table(("TYPE", "REASON", "MESSAGE"), [(e["type"], e["reason"], e["message"]) for e in events]),
    )
    say()

    if keep:
        return
    shell("kubectl delete svc redis", 'service "redis" deleted')
    core.delete_namespaced_service("redis", "default", _preload_content=False)
    wait_for(lambda: pool() is None, timeout=timeout, what="the dklb-redis pool to be deleted")
    shell("kubectl delete pod redis", 'pod "redis" deleted')
    core.delete_namespaced_pod("redis", "default", _preload_content=False)
    shell("dcos edgelb list", _edgelb_list(client))
    say("# the dklb-redis EdgeLB pool was deleted automatically")
