"""``--admission-client-ca-file`` end to end: the real kube-apiserver authenticates to the webhook.

An API server of its own (``localcluster.start(webhook_client_certificate=True)``): its
``--admission-control-config-file`` gives it a client certificate for every webhook, signed by a
CA generated beside it. ``dklb run`` serves and registers the webhook (failure policy Fail) with
``--admission-client-ca-file`` naming that CA. Then:

- a Service created through the API server comes back with the defaulted ``dklb-config``
  annotation: the API server's certificate was accepted and the review answered (with Fail, a
  refused handshake would have refused the create);
- a direct HTTPS POST to the webhook with no client certificate, or with one of another CA, is
  cut at the TLS handshake, without a byte of HTTP;
- ``/metrics`` counted exactly those two cuts (``dklb_http_refused_total{server="webhook",
  reason="client_certificate"}``).
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import localcluster
from engine.admission.certs import generate_client_certificate
from engine.admission.register import unregister
from engine.kube.api import response_json
from engine.model.services import ANNOTATION
from tests.integration.conftest import free_port
from tests.processes import ControllerProcess, controller_args, scrape, start_edgelb, total, wait_for
from tests.unit.test_admission_server import admission_review

HOST = "127.0.0.1"
NAME = "dklb-client-ca"


@pytest.fixture(scope="module")
def cluster() -> Iterator[localcluster.LocalCluster]:
    """An API server of its own: it presents a client certificate to every webhook."""
    started = localcluster.start(webhook_client_certificate=True)
    try:
        yield started
    finally:
        localcluster.stop(started)


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 6379, "protocol": "TCP"}]},
    }


def post_review(port: int, server_ca: Path, client: tuple[Path, Path] | None, *, tls12: bool) -> bytes:
    """A review POSTed straight to the webhook: the answer, or b"" when the connection was cut
    (with TLS 1.2 the cut ends the client's own handshake; with 1.3, its first read)."""
    context = ssl.create_default_context(cafile=str(server_ca))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        context.load_cert_chain(*client)
    body = json.dumps(admission_review("direct")).encode()
    data = b""
    try:
        with (
            socket.create_connection((HOST, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            tls.sendall(
                b"POST /validate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                % len(body)
                + body
            )
            while chunk := tls.recv(65536):
                data += chunk
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        assert data == b"", "cut after an answer"
    return data


def test_the_api_server_is_reviewed_and_a_client_without_its_certificate_is_cut(
    cluster: localcluster.LocalCluster, tmp_path: Path
) -> None:
    assert cluster.webhook_client_ca is not None
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(cluster.kubeconfig)))
    admission = kubernetes.client.AdmissionregistrationV1Api(core.api_client)
    webhook_port, http_port = free_port(), free_port()
    certificates = tmp_path / "webhook-certs"
    edgelb = start_edgelb(tmp_path / "edgelb")
    controller = ControllerProcess(
        args=[
            *controller_args(
                kubeconfig=cluster.kubeconfig, edgelb_url=edgelb.url, database=tmp_path / "dklb.db"
            ),
            "--http-listen",
            f"{HOST}:{http_port}",
            "--admission-listen",
            f"{HOST}:{webhook_port}",
            "--admission-self-signed-dir",
            str(certificates),
            "--admission-client-ca-file",
            str(cluster.webhook_client_ca),
            "--register-admission-webhook",
            "--admission-webhook-name",
            NAME,
            "--admission-webhook-url",
            f"https://{HOST}:{webhook_port}",
            "--admission-failure-policy",
            "Fail",
        ],
        log_path=tmp_path / "controller.log",
    ).start()
    try:

        def reviewed() -> bool:
            assert controller.proc is not None and controller.proc.poll() is None, controller.log()[-3000:]
            try:
                response = core.create_namespaced_service(
                    "default",
                    service("probe"),  # type: ignore[arg-type]  # a dict body: the client takes it
                    dry_run="All",
                    _preload_content=False,
                )
            except kubernetes.client.ApiException:
                return False  # registered (Fail) before the server answered: not yet
            # Before the registration reached the API server, the Service passes unreviewed.
            return ANNOTATION in (response_json(response)["metadata"].get("annotations") or {})

        wait_for(reviewed, timeout=60, interval=0.2, what="the webhook in effect")
        response = core.create_namespaced_service("default", service("web"), _preload_content=False)  # type: ignore[arg-type]
        stored = response_json(response)
        # Defaulted by /mutate: the API server's certificate was accepted, the review answered.
        assert ANNOTATION in (stored["metadata"].get("annotations") or {}), stored["metadata"]
        registered = response_json(
            admission.read_mutating_webhook_configuration(NAME, _preload_content=False)
        )
        assert registered["webhooks"][0]["failurePolicy"] == "Fail"

        server_ca = certificates / "ca.crt"
        _, stranger_cert, stranger_key = generate_client_certificate(
            tmp_path / "stranger", name="kube-apiserver"
        )
        assert post_review(webhook_port, server_ca, None, tls12=True) == b""
        assert post_review(webhook_port, server_ca, (stranger_cert, stranger_key), tls12=False) == b""

        def refused() -> float:
            samples = scrape(f"http://{HOST}:{http_port}/metrics")
            return total(samples, "dklb_http_refused_total", server="webhook", reason="client_certificate")

        wait_for(lambda: refused() == 2, timeout=10, what="the two cuts counted")
        assert "TLS handshake with 127.0.0.1 failed (client_certificate)" in controller.log()
    finally:
        unregister(admission, NAME)
        controller.stop()
        edgelb.stop()
