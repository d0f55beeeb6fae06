"""``--admission-client-ca-file``: the webhook accepts only clients the CA certified (S3).

The real ``AdmissionServer`` (and, for the rotation, ``AdmissionWebhook`` built from ``dklb run``'s
flags) on loopback, with certificates made by ``engine.admission.certs``: a client CA and a
client certificate it signed (what the API server presents), another CA's certificate, and none.
What is checked is what a client sees (an answer, or a TLS failure and not a byte of HTTP) and
what the server counted (``on_refused``, i.e. ``dklb_http_refused_total``). The end-to-end twin,
with the real kube-apiserver presenting the certificate, is ``tests/e2e/test_webhook_client_ca.py``.
"""

from __future__ import annotations

import collections
import json
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import cli
from engine.admission.certs import generate_client_certificate, generate_self_signed
from engine.admission.plan import admission_plan
from engine.admission.server import AdmissionServer
from engine.admission.webhook import AdmissionWebhook
from engine.model.settings import Settings
from engine.telemetry.serving import CLIENT_CERTIFICATE
from tests.integration.conftest import free_port
from tests.processes import wait_for
from tests.unit.test_admission_server import admission_review

HOST = "127.0.0.1"
Pair = tuple[Path, Path]  # (certificate, key)


class Refused:
    """The ``on_refused`` hook: (server, reason) -> how many."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, server: str, reason: str) -> None:
        with self._lock:
            self.counts[(server, reason)] += 1


@dataclass
class Certificates:
    server_ca: Path  # what a client trusts for the webhook
    server: Pair
    client_ca: Path  # --admission-client-ca-file
    client: Pair  # signed by client_ca: the API server's
    stranger: Pair  # signed by another CA


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    server_ca, cert, key = generate_self_signed(tmp_path / "server", hosts=[HOST])
    client_ca, client_cert, client_key = generate_client_certificate(
        tmp_path / "client", name="kube-apiserver"
    )
    _, stranger_cert, stranger_key = generate_client_certificate(tmp_path / "stranger", name="kube-apiserver")
    return Certificates(
        server_ca, (cert, key), client_ca, (client_cert, client_key), (stranger_cert, stranger_key)
    )


def request(
    port: int, certs: Certificates, client: Pair | None, *, body: bytes | None = None, tls12: bool = False
) -> bytes:
    """One request on a new connection: the whole answer, or b"" when the server cut the connection
    (a TLS failure on the client's side counts as a cut: the answer is what matters)."""
    context = ssl.create_default_context(cafile=str(certs.server_ca))
    if tls12:
        # TLS 1.2: the server's refusal ends the client's own handshake (with 1.3 it ends the first read).
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        context.load_cert_chain(*client)
    if body is None:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    else:
        head = b"POST /validate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(
            body
        )
    data = b""
    try:
        with (
            socket.create_connection((HOST, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            tls.sendall(head + (body or b""))
            while chunk := tls.recv(65536):
                data += chunk
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        assert data == b"", "the cut came after an answer"
    return data


@pytest.fixture
def served(certs: Certificates) -> Iterator[tuple[AdmissionServer, Refused]]:
    refused = Refused()
    server = AdmissionServer(
        host=HOST,
        port=0,
        cert_file=str(certs.server[0]),
        key_file=str(certs.server[1]),
        settings=Settings(),
        client_ca_file=str(certs.client_ca),
        on_refused=refused,
    )
    server.start()
    try:
        yield server, refused
    finally:
        server.stop()


def test_a_client_certified_by_the_ca_is_served(
    served: tuple[AdmissionServer, Refused], certs: Certificates
) -> None:
    server, refused = served
    port = server.address[1]
    assert request(port, certs, certs.client).startswith(b"HTTP/1.1 200 ")
    answer = request(port, certs, certs.client, body=json.dumps(admission_review("u-1")).encode())
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["response"] == {"uid": "u-1", "allowed": True}
    assert refused.counts == {}


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2"])
def test_no_certificate_or_another_cas_is_cut_at_the_handshake(
    served: tuple[AdmissionServer, Refused], certs: Certificates, tls12: bool
) -> None:
    server, refused = served
    port = server.address[1]
    review = json.dumps(admission_review("u-2")).encode()
    assert request(port, certs, None, body=review, tls12=tls12) == b""
    assert request(port, certs, certs.stranger, body=review, tls12=tls12) == b""
    wait_for(lambda: refused.counts == {("webhook", CLIENT_CERTIFICATE): 2}, what="two refusals counted")
    # The server goes on serving its client.
    assert request(port, certs, certs.client).startswith(b"HTTP/1.1 200 ")


def test_without_a_client_ca_any_client_is_served_as_before(certs: Certificates) -> None:
    server = AdmissionServer(
        host=HOST, port=0, cert_file=str(certs.server[0]), key_file=str(certs.server[1]), settings=Settings()
    )
    port = server.start()[1]
    try:
        for client in (None, certs.client, certs.stranger):
            assert request(port, certs, client).startswith(b"HTTP/1.1 200 ")
    finally:
        server.stop()


def test_a_rotated_client_ca_is_followed(certs: Certificates, tmp_path: Path) -> None:
    """The client CA file is re-read like the serving certificate: after a rotation the new CA's
    client is served and the old one's is cut; a half-written CA file keeps the previous one."""
    ca_file = tmp_path / "mounted-client-ca.crt"
    shutil.copyfile(certs.client_ca, ca_file)
    port = free_port()
    args = cli.build_parser(["run"]).parse_args(
        [
            "run",
            "--admission-listen",
            f"{HOST}:{port}",
            "--admission-tls-cert-file",
            str(certs.server[0]),
            "--admission-tls-private-key-file",
            str(certs.server[1]),
            "--admission-client-ca-file",
            str(ca_file),
        ]
    )
    refused = Refused()
    webhook = AdmissionWebhook(admission_plan(args), settings=Settings(), on_refused=refused)
    try:
        webhook.start()
        assert request(port, certs, certs.client).startswith(b"HTTP/1.1 200 ")
        assert request(port, certs, certs.stranger) == b""

        ca_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nhalf writ")  # a rotation under way
        webhook.check_certificates()
        assert request(port, certs, certs.client).startswith(b"HTTP/1.1 200 "), "the previous CA still holds"

        shutil.copyfile(tmp_path / "stranger" / "ca.crt", ca_file)  # the rotation done
        webhook.check_certificates()
        assert request(port, certs, certs.stranger).startswith(b"HTTP/1.1 200 ")
        assert request(port, certs, certs.client) == b""
        wait_for(lambda: refused.counts == {("webhook", CLIENT_CERTIFICATE): 2}, what="two refusals counted")
    finally:
        webhook.stop()
