"""A real kube-apiserver + etcd on 127.0.0.1, built from Debian packages: the cluster of the
demo and of the end-to-end tests.

``ensure_installed`` builds kube-apiserver v1.20.2 from Debian's ``kubernetes`` source package
once (about 6 minutes on 2 cores) into a cache outside the checkout (``~/.cache/dklb/kube``, or
``DKLB_KUBE_PREFIX``) and installs etcd from ``etcd-server``; later calls cost nothing.
``start`` runs etcd and the API server on free loopback ports in a state directory (on
/dev/shm when available: etcd fsyncs a lot) and returns a kubeconfig; ``stop`` ends both by PID.
``restart_apiserver`` (or ``stop_apiserver`` then ``start_apiserver``) ends the API server alone
by PID and starts it again on the same port and etcd, optionally with more flags: the fault tests
take the API server away under a running controller.
``start(webhook_client_certificate=True)`` has the API server present a client certificate to
every admission webhook (its ``--admission-control-config-file``), signed by a CA generated in
the state directory: ``LocalCluster.webhook_client_ca`` is what a webhook's
``--admission-client-ca-file`` names.
No kubelet, no kube-proxy: a Service's node port is whatever listens on 127.0.0.1 at that port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.admission.certs import generate_client_certificate
from localcluster.processes import terminate

HERE = Path(__file__).resolve().parent
TOKEN = "test-admin-token"


def prefix() -> Path:
    return Path(os.environ.get("DKLB_KUBE_PREFIX", "~/.cache/dklb/kube")).expanduser()


def apiserver_binary() -> Path:
    return prefix() / "bin" / "kube-apiserver"


def ensure_installed() -> Path:
    """The kube-apiserver binary, building it first if this machine has none (needs root for apt)."""
    binary = apiserver_binary()
    if binary.exists() and shutil.which("etcd"):
        return binary
    subprocess.run(["bash", str(HERE / "install.sh"), str(prefix())], check=True)
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LocalCluster:
    state_dir: Path
    kubeconfig: Path
    server: str
    token: str = TOKEN
    # etcd's client URL (http://127.0.0.1:PORT), for tests that talk to etcd directly.
    etcd: str = ""
    # The CA of the client certificate the API server presents to webhooks (None: it presents none).
    webhook_client_ca: Path | None = None
    # The API server flags start() added (restart_apiserver needs them again to keep them).
    added_args: tuple[str, ...] = ()


def webhook_client_args(directory: Path) -> tuple[Path, list[str]]:
    """A client CA and certificate in ``directory``, and the API server flags that present the
    certificate to every admission webhook: (the CA's file, flags).

    The shape is the API server's own (1.20: ``apiserver.config.k8s.io/v1``): an
    AdmissionConfiguration whose two webhook plugins name a kubeconfig; in it, the user named
    ``*`` (any webhook's host:port) holds the certificate and key.
    """
    ca, cert, key = generate_client_certificate(directory, name="kube-apiserver")
    kubeconfig = directory / "webhook-client.kubeconfig"
    user = {"client-certificate": str(cert), "client-key": str(key)}
    # JSON is YAML: the API server reads both files with its YAML decoder.
    kubeconfig.write_text(
        json.dumps({"apiVersion": "v1", "kind": "Config", "users": [{"name": "*", "user": user}]})
    )
    plugin = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(kubeconfig),
    }
    config = directory / "admission-control.json"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "AdmissionConfiguration",
                "plugins": [
                    {"name": name, "configuration": plugin}
                    for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
                ],
            }
        )
    )
    return ca, [f"--admission-control-config-file={config}"]


def _start_script(state_dir: Path, env: dict[str, str], apiserver_args: Sequence[str]) -> None:
    env = {**os.environ, **env, "APISERVER_EXTRA_ARGS": " ".join(apiserver_args)}
    result = subprocess.run(
        ["bash", str(HERE / "start.sh"), str(state_dir), str(ensure_installed())],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        subprocess.run(["bash", str(HERE / "stop.sh"), str(state_dir)], check=False)
        raise RuntimeError(f"kube-apiserver did not start:\n{result.stdout}\n{result.stderr}")


def start(
    state_dir: Path | None = None,
    *,
    apiserver_args: Sequence[str] = (),
    webhook_client_certificate: bool = False,
) -> LocalCluster:
    """etcd and kube-apiserver on free loopback ports; ``apiserver_args``: more API server flags;
    ``webhook_client_certificate``: present a client certificate to webhooks (``webhook_client_args``)."""
    ensure_installed()
    if state_dir is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        state_dir = Path(tempfile.mkdtemp(prefix="dklb-kube-", dir=base))
    client_ca: Path | None = None
    added: list[str] = []
    if webhook_client_certificate:
        client_ca, added = webhook_client_args(state_dir / "webhook-client")
    api_port, etcd_port = _free_port(), _free_port()
    env = {"ETCD_PORT": str(etcd_port), "ETCD_PEER_PORT": str(_free_port()), "API_PORT": str(api_port)}
    _start_script(state_dir, env, [*added, *apiserver_args])
    return LocalCluster(
        state_dir=state_dir,
        kubeconfig=state_dir / "kubeconfig",
        server=f"https://127.0.0.1:{api_port}",
        etcd=f"http://127.0.0.1:{etcd_port}",
        webhook_client_ca=client_ca,
        added_args=tuple(added),
    )


def stop_apiserver(cluster: LocalCluster) -> None:
    """End the API server alone, by PID (SIGTERM, SIGKILL after 30 s); etcd keeps running."""
    pid_file = cluster.state_dir / "apiserver.pid"
    if pid_file.exists():
        terminate(int(pid_file.read_text().strip()))
        pid_file.unlink()


def start_apiserver(cluster: LocalCluster, *, apiserver_args: Sequence[str] = ()) -> None:
    """Start the API server again on its port and etcd; returns once it is ready."""
    if not cluster.etcd:
        raise ValueError("this LocalCluster does not know its etcd (not made by start())")
    env = {
        "APISERVER_ONLY": "1",
        "ETCD_PORT": cluster.etcd.rsplit(":", 1)[1],
        "API_PORT": cluster.server.rsplit(":", 1)[1],
    }
    _start_script(cluster.state_dir, env, [*cluster.added_args, *apiserver_args])


def restart_apiserver(cluster: LocalCluster, *, apiserver_args: Sequence[str] = ()) -> None:
    """Stop the API server by PID and start it again (same port, same etcd), waiting until ready."""
    stop_apiserver(cluster)
    start_apiserver(cluster, apiserver_args=apiserver_args)


def stop(cluster: LocalCluster, *, remove: bool = True) -> None:
    subprocess.run(["bash", str(HERE / "stop.sh"), str(cluster.state_dir)], check=False)
    if remove:
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
