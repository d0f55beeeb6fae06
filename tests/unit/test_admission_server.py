"""The admission webhook's HTTPS endpoint, over real TLS on loopback, and its self-signed certificates."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import select
import shutil
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from engine.admission.certs import generate_self_signed
from engine.admission.server import LIMITS, MAX_BODY, AdmissionServer
from engine.model.services import ANNOTATION
from engine.model.settings import Settings

HOST = "127.0.0.1"


def admission_review(uid: str = "req-1", annotation: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web", "namespace": "default"}
    if annotation is not None:
        metadata["annotations"] = {ANNOTATION: annotation}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Service"},
            "resource": {"group": "", "version": "v1", "resource": "services"},
            "namespace": "default",
            "name": "web",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
            },
            "oldObject": None,
            "dryRun": False,
        },
    }


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, float]] = []
        self._lock = threading.Lock()

    def __call__(self, path: str, allowed: bool, seconds: float) -> None:
        with self._lock:
            self.calls.append((path, allowed, seconds))


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path, Path]:
    return generate_self_signed(tmp_path / "certs", hosts=[HOST, "localhost"])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(certs: tuple[Path, Path, Path], recorder: Recorder) -> Iterator[AdmissionServer]:
    _, cert, key = certs
    server = AdmissionServer(
        host=HOST,
        port=0,
        cert_file=str(cert),
        key_file=str(key),
        settings=Settings(),
        on_request=recorder,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def url(server: AdmissionServer, path: str) -> str:
    host, port = server.address
    return f"https://{host}:{port}{path}"


def peer_serial(server: AdmissionServer, ca: Path) -> int:
    """The serial number of the certificate a new, verified connection is shown."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(server.address, timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# --- generate_self_signed ------------------------------------------------------------------------


def test_generate_self_signed_makes_a_ca_and_a_serving_certificate(certs: tuple[Path, Path, Path]) -> None:
    ca_file, cert_file, key_file = certs
    assert [p.name for p in certs] == ["ca.crt", "tls.crt", "tls.key"]
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(HOST)]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca_file.with_name("ca.key")).st_mode) == 0o600
    # The pair matches: an SSL context accepts it.
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)


def test_generate_self_signed_keeps_the_ca_and_renews_the_serving_certificate(
    certs: tuple[Path, Path, Path],
) -> None:
    ca_file, cert_file, _ = certs
    ca_before, cert_before = ca_file.read_bytes(), cert_file.read_bytes()
    again = generate_self_signed(ca_file.parent, hosts=["dklb-admission.kube-system.svc"])
    assert again == certs
    assert ca_file.read_bytes() == ca_before
    assert cert_file.read_bytes() != cert_before
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_before))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["dklb-admission.kube-system.svc"]


def test_generate_self_signed_replaces_a_ca_whose_key_does_not_match(certs: tuple[Path, Path, Path]) -> None:
    ca_file, _, _ = certs
    other = generate_self_signed(ca_file.parent.parent / "other", hosts=[HOST])
    shutil.copy(other[0].with_name("ca.key"), ca_file.with_name("ca.key"))
    before = ca_file.read_bytes()
    generate_self_signed(ca_file.parent, hosts=[HOST])
    assert ca_file.read_bytes() != before


def test_generate_self_signed_needs_a_host(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="host"):
        generate_self_signed(tmp_path, hosts=[])


def test_the_keys_are_elliptic_curve(certs: tuple[Path, Path, Path]) -> None:
    cert = x509.load_pem_x509_certificate(certs[1].read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


# --- serving -------------------------------------------------------------------------------------


def test_a_review_is_answered_over_verified_https(
    server: AdmissionServer, certs: tuple[Path, Path, Path], recorder: Recorder
) -> None:
    ca, _, _ = certs
    # The API server appends a timeout to the configured path.
    response = requests.post(
        url(server, "/mutate?timeout=10s"), json=admission_review("u-1"), verify=str(ca), timeout=10
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == "u-1" and body["response"]["allowed"] is True
    operations = json.loads(base64.b64decode(body["response"]["patch"]))
    assert operations[0]["path"] == "/metadata/annotations"

    refused = requests.post(
        url(server, "/validate"), json=admission_review("u-2", "size: -1"), verify=str(ca), timeout=10
    )
    assert refused.status_code == 200
    assert refused.json()["response"]["status"] == {
        "code": 403,
        "message": "size: -1 is not a valid size request",
    }

    assert [(path, allowed) for path, allowed, _ in recorder.calls] == [
        ("/mutate", True),
        ("/validate", False),
    ]
    assert all(0 <= seconds < 5 for _, _, seconds in recorder.calls)


def test_the_name_a_certificate_is_verified_against(
    server: AdmissionServer, certs: tuple[Path, Path, Path]
) -> None:
    ca, _, _ = certs
    _, port = server.address
    response = requests.post(
        f"https://localhost:{port}/validate", json=admission_review(), verify=str(ca), timeout=10
    )
    assert response.status_code == 200


def test_keep_alive_connections_serve_many_reviews(
    server: AdmissionServer, certs: tuple[Path, Path, Path]
) -> None:
    ca, _, _ = certs
    with requests.Session() as session:
        for i in range(5):
            response = session.post(url(server, "/validate"), json=admission_review(f"u-{i}"), verify=str(ca))
            assert response.json()["response"]["uid"] == f"u-{i}"


def test_reviews_on_a_kept_alive_connection_are_fast(
    server: AdmissionServer, certs: tuple[Path, Path, Path]
) -> None:
    """~2 ms each; Nagle's algorithm against the client's delayed ACK would make it ~40 ms."""
    ca, _, _ = certs
    data = json.dumps(admission_review()).encode()
    with requests.Session() as session:
        session.post(url(server, "/mutate"), data=data, verify=str(ca), timeout=10)  # handshake
        started = time.monotonic()
        for _ in range(20):
            session.post(url(server, "/mutate"), data=data, verify=str(ca), timeout=10)
        elapsed = time.monotonic() - started
    assert elapsed < 0.7, f"20 reviews took {elapsed:.2f} s"


def test_concurrent_reviews(server: AdmissionServer, certs: tuple[Path, Path, Path]) -> None:
    ca, _, _ = certs
    uids: list[str] = []
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with requests.Session() as session:
                for i in range(5):
                    body = session.post(
                        url(server, "/validate"),
                        json=admission_review(f"u-{n}-{i}"),
                        verify=str(ca),
                        timeout=10,
                    ).json()
                    uids.append(body["response"]["uid"])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(uids) == sorted(f"u-{n}-{i}" for n in range(8) for i in range(5))


def test_a_silent_client_does_not_block_the_others(
    server: AdmissionServer, certs: tuple[Path, Path, Path]
) -> None:
    ca, _, _ = certs
    with socket.create_connection(server.address, timeout=5):  # connects, never says hello
        response = requests.post(url(server, "/validate"), json=admission_review(), verify=str(ca), timeout=5)
        assert response.status_code == 200


def test_an_unknown_ca_is_not_trusted(server: AdmissionServer, tmp_path: Path) -> None:
    other_ca, _, _ = generate_self_signed(tmp_path / "other", hosts=[HOST])
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(url(server, "/validate"), json=admission_review(), verify=str(other_ca), timeout=10)


def test_plain_http_is_refused(server: AdmissionServer, certs: tuple[Path, Path, Path]) -> None:
    host, port = server.address
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"http://{host}:{port}/validate", json=admission_review(), timeout=10)
    # And the server is none the worse for it.
    assert requests.get(url(server, "/healthz"), verify=str(certs[0]), timeout=10).status_code == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_older_than_1_2_is_refused(server: AdmissionServer, certs: tuple[Path, Path, Path]) -> None:
    context = ssl.create_default_context(cafile=str(certs[0]))
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(server.address, timeout=5) as raw,
        pytest.raises(ssl.SSLError),
        context.wrap_socket(raw, server_hostname=HOST),
    ):
        pass


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON"),
        (b"[]", "not an AdmissionReview"),
        (json.dumps({"apiVersion": "v1", "kind": "Service"}).encode(), "not an AdmissionReview"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "no request"),
    ],
)
def test_a_body_that_is_no_admission_review_is_a_bad_request(
    server: AdmissionServer, certs: tuple[Path, Path, Path], recorder: Recorder, body: bytes, fragment: str
) -> None:
    ca, _, _ = certs
    response = requests.post(
        url(server, "/validate"),
        data=body,
        headers={"Content-Type": "application/json"},
        verify=str(ca),
        timeout=10,
    )
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert recorder.calls[-1][:2] == ("/validate", False)
    # The server still answers.
    ok = requests.post(url(server, "/validate"), json=admission_review(), verify=str(ca), timeout=10)
    assert ok.json()["response"]["allowed"] is True


def test_a_body_without_length_is_refused(server: AdmissionServer, certs: tuple[Path, Path, Path]) -> None:
    ca, _, _ = certs
    # Headers only, over a raw TLS socket: the answer must not depend on how much of a chunked
    # body the client managed to send before the server closed the connection.
    context = ssl.create_default_context(cafile=str(ca))
    host, port = server.address
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        status_line = tls.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"411"


def test_healthz_and_unknown_paths(server: AdmissionServer, certs: tuple[Path, Path, Path]) -> None:
    ca = str(certs[0])
    health = requests.get(url(server, "/healthz"), verify=ca, timeout=10)
    assert (health.status_code, health.text) == (200, "ok\n")
    assert requests.get(url(server, "/validate"), verify=ca, timeout=10).status_code == 405
    assert requests.get(url(server, "/nope"), verify=ca, timeout=10).status_code == 404
    assert requests.post(url(server, "/nope"), json={}, verify=ca, timeout=10).status_code == 404


def test_one_log_line_per_review(
    server: AdmissionServer, certs: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    ca = str(certs[0])
    with caplog.at_level(logging.INFO, logger="dklb.admission"):
        requests.post(url(server, "/mutate"), json=admission_review("u-9"), verify=ca, timeout=10)
        requests.post(
            url(server, "/validate"), json=admission_review("u-10", "cpus: -1"), verify=ca, timeout=10
        )
    lines = [
        r.getMessage() for r in caplog.records if r.name == "dklb.admission" and r.levelno == logging.INFO
    ]
    assert len(lines) == 2
    assert lines[0].startswith("/mutate CREATE default/web uid=u-9: allowed (patched)")
    assert lines[1] == (
        "/validate CREATE default/web uid=u-10: refused (cpus: -1.000000 is not a valid cpu request "
        "(-1: the CPU share must be a finite number, 0 or more))"
    )


def test_a_failing_on_request_hook_does_not_fail_the_review(certs: tuple[Path, Path, Path]) -> None:
    ca, cert, key = certs

    def broken(path: str, allowed: bool, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    server = AdmissionServer(
        host=HOST,
        port=0,
        cert_file=str(cert),
        key_file=str(key),
        settings=Settings(),
        on_request=broken,
    )
    server.start()
    try:
        response = requests.post(
            url(server, "/validate"), json=admission_review(), verify=str(ca), timeout=10
        )
        assert response.json()["response"]["allowed"] is True
    finally:
        server.stop()


def test_a_missing_certificate_fails_on_construction(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        AdmissionServer(
            host=HOST,
            port=0,
            cert_file=str(tmp_path / "absent.crt"),
            key_file=str(tmp_path / "absent.key"),
            settings=Settings(),
        )


# --- lifecycle -----------------------------------------------------------------------------------


def test_stop_frees_the_port(certs: tuple[Path, Path, Path]) -> None:
    ca, cert, key = certs
    first = AdmissionServer(host=HOST, port=0, cert_file=str(cert), key_file=str(key), settings=Settings())
    host, port = first.start()
    assert first.start() == (host, port)  # idempotent
    # A keep-alive connection left open, as the API server would.
    session = requests.Session()
    assert session.get(url(first, "/healthz"), verify=str(ca), timeout=10).status_code == 200
    first.stop()
    first.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5).close()
    second = AdmissionServer(
        host=HOST, port=port, cert_file=str(cert), key_file=str(key), settings=Settings()
    )
    assert second.start() == (host, port)
    try:
        assert requests.get(url(second, "/healthz"), verify=str(ca), timeout=10).status_code == 200
    finally:
        second.stop()
        session.close()


def test_reload_certificates_serves_the_new_certificate_on_new_connections(
    server: AdmissionServer, certs: tuple[Path, Path, Path]
) -> None:
    ca, cert_file, _ = certs
    old_serial = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number
    assert peer_serial(server, ca) == old_serial
    # A rotation: the same CA (reused from the directory) signs a new serving certificate.
    generate_self_signed(ca.parent, hosts=[HOST])
    new_serial = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number
    assert new_serial != old_serial
    assert peer_serial(server, ca) == old_serial  # nothing changes until told
    server.reload_certificates()
    assert peer_serial(server, ca) == new_serial
    response = requests.post(url(server, "/validate"), json=admission_review(), verify=str(ca), timeout=10)
    assert response.json()["response"]["allowed"] is True


def test_a_failed_reload_keeps_the_old_certificate(
    server: AdmissionServer, certs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ca, _, key_file = certs
    serial = peer_serial(server, ca)
    # A half-written rotation: the key of another pair.
    _, _, other_key = generate_self_signed(tmp_path / "other", hosts=[HOST])
    shutil.copy(other_key, key_file)
    with pytest.raises(ssl.SSLError):
        server.reload_certificates()
    assert peer_serial(server, ca) == serial


# --- S3: bounds ----------------------------------------------------------------------------------


def raw_exchange(server: AdmissionServer, ca: Path, data: bytes) -> bytes:
    """``data`` sent over a fresh TLS connection; everything until the server closes."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(server.address, timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        tls.sendall(data)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := tls.recv(65536):
                answer += chunk
    return answer


@pytest.mark.parametrize("length", [MAX_BODY + 1, 8 * 1024 * 1024])
def test_a_body_over_3_mib_is_refused_before_it_is_read(
    server: AdmissionServer, certs: tuple[Path, Path, Path], recorder: Recorder, length: int
) -> None:
    """S3 (security review): 8 MiB bodies were read and parsed (10 of them: 755 MB of peak RSS).
    The cap is now the API server's own 3 MiB, and the Content-Length decides before a byte of the
    body is read: the client announces it and sends nothing more, and still gets its answer."""
    started = time.monotonic()
    answer = raw_exchange(
        server, certs[0], b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"over the limit of 3145728 bytes" in answer
    assert time.monotonic() - started < LIMITS.deadline / 2
    assert recorder.calls == []  # no review ran


def test_a_body_of_3_mib_is_read_and_parsed(server: AdmissionServer, certs: tuple[Path, Path, Path]) -> None:
    body = b'"' + b"a" * (MAX_BODY - 2) + b'"'
    response = requests.post(
        url(server, "/validate"),
        data=body,
        headers={"Content-Type": "application/json"},
        verify=str(certs[0]),
        timeout=10,
    )
    assert response.status_code == 400 and "not an AdmissionReview" in response.json()["error"]


def test_the_webhook_limits() -> None:
    """The figures the load test and RELIABILITY.md rely on."""
    assert (LIMITS.workers, LIMITS.max_body, LIMITS.deadline) == (8, 3 * 1024 * 1024, 10.0)
    assert LIMITS.max_connections >= 128 and LIMITS.idle_timeout <= LIMITS.deadline


def test_a_silent_client_is_cut_at_the_deadline(certs: tuple[Path, Path, Path]) -> None:
    """S3 (security review): a silent or dribbling client held a thread for 30 s per read; now the
    whole exchange, TLS handshake included, has one deadline (1 s here, 10 s in ``dklb run``)."""
    ca, cert, key = certs
    limits = dataclasses.replace(LIMITS, deadline=1.0)
    server = AdmissionServer(
        host=HOST, port=0, cert_file=str(cert), key_file=str(key), settings=Settings(), limits=limits
    )
    server.start()
    try:
        with socket.create_connection(server.address, timeout=10) as silent:
            started = time.monotonic()
            readable, _, _ = select.select([silent], [], [], 5)
            assert readable and silent.recv(1) == b""
            assert 0.95 <= time.monotonic() - started < 2.5
        context = ssl.create_default_context(cafile=str(ca))
        with (
            socket.create_connection(server.address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            started = time.monotonic()
            for byte in b"POST /validate HTTP/1.1\r\n":  # one byte per 0.2 s: never a whole request
                readable, _, _ = select.select([tls], [], [], 0.2)
                if readable:
                    break
                tls.send(bytes([byte]))
            with contextlib.suppress(OSError):
                assert tls.recv(1) == b""
            assert time.monotonic() - started < 2.5
    finally:
        server.stop()
