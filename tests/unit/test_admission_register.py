"""``engine.admission.register``, ``.plan`` and ``.webhook``: the webhook's part of ``dklb run``.

The objects are checked field by field; ``register`` and ``unregister`` talk, through a real
``kubernetes`` ``ApiClient``, to a small stand-in for the API server's admissionregistration/v1
endpoints (GET, POST, PUT with resourceVersion preconditions, DELETE) that records every
request, so the tests see exactly which writes a registration makes. The real API server's
acceptance of these objects is covered by ``tests/e2e/test_admission.py``. The ``--admission-*``
flags are checked together (every contradiction named, exit 1), and ``AdmissionWebhook``
serves, registers, and picks up a renewed certificate and its new CA.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from engine import cli
from engine.admission.certs import generate_client_certificate
from engine.admission.plan import AdmissionFlagError, admission_plan, self_signed_hosts
from engine.admission.register import (
    FAILURE_POLICIES,
    RegistrationError,
    parse_namespace_selector,
    parse_service_reference,
    register,
    unregister,
    webhook_configurations,
)
from engine.admission.webhook import AdmissionWebhook, WebhookError
from engine.model.settings import Settings
from tests.integration.conftest import free_port

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PREFIX = "/apis/admissionregistration.k8s.io/v1/"
PLURALS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")

Obj = dict[str, Any]


# ---- a stand-in for the API server ---------------------------------------------------------------


@dataclass
class FakeAPI:
    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[Obj] = field(default_factory=list)
    # (method, plural) -> HTTP statuses to answer instead of doing the request, first one first.
    faults: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    # Called before a write is done (to simulate another writer in between).
    before_write: Any = None
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def store(self, plural: str, obj: Obj) -> Obj:
        self.version += 1
        stored = json.loads(json.dumps(obj))
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["metadata"].setdefault("uid", f"uid-{self.version}")
        self.objects[(plural, obj["metadata"]["name"])] = stored
        return stored

    def handle(self, method: str, path: str, body: Obj | None) -> tuple[int, Obj]:
        assert path.startswith(PREFIX), path
        plural, _, name = path[len(PREFIX) :].partition("/")
        assert plural in PLURALS, plural
        with self.lock:
            self.requests.append((method, path))
            if body is not None:
                self.bodies.append(body)
            pending = self.faults.get((method, plural))
            if pending:
                code = pending.pop(0)
                return code, status(code, f"injected {code}")
            if method != "GET" and self.before_write is not None:
                hook, self.before_write = self.before_write, None
                hook(self)
            key = (plural, name)
            if method == "GET":
                return (200, self.objects[key]) if key in self.objects else (404, status(404, "not found"))
            if method == "POST":
                assert body is not None
                key = (plural, body["metadata"]["name"])
                if key in self.objects:
                    return 409, status(409, "already exists", reason="AlreadyExists")
                return 201, self.store(plural, body)
            if method == "PUT":
                assert body is not None
                if key not in self.objects:
                    return 404, status(404, "not found")
                sent = body["metadata"].get("resourceVersion")
                if sent != self.objects[key]["metadata"]["resourceVersion"]:
                    return 409, status(409, "the object has been modified", reason="Conflict")
                return 200, self.store(plural, body)
            if method == "DELETE":
                if self.objects.pop(key, None) is None:
                    return 404, status(404, "not found")
                return 200, status(200, "deleted")
        raise AssertionError(method)


def status(code: int, message: str, *, reason: str = "") -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "code": code, "message": message, "reason": reason}


class _Server(ThreadingHTTPServer):
    fake: FakeAPI


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        code, answer = self.server.fake.handle(self.command, self.path.split("?")[0], body)
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Served:
    fake: FakeAPI
    api: kubernetes.client.ApiClient


@pytest.fixture
def served() -> Iterator[Served]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = FakeAPI()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    api = kubernetes.client.ApiClient(configuration)
    try:
        yield Served(fake=server.fake, api=api)
    finally:
        api.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def stored(fake: FakeAPI, plural: str, name: str = "dklb") -> Obj:
    return fake.objects[(plural, name)]


# ---- the objects ----------------------------------------------------------------------------------


def test_url_mode_points_both_webhooks_at_their_paths_with_the_ca_bundle() -> None:
    mutating, validating = webhook_configurations(ca_bundle=CA, url="https://127.0.0.1:8443/")
    assert mutating["apiVersion"] == validating["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert mutating["kind"] == "MutatingWebhookConfiguration"
    assert validating["kind"] == "ValidatingWebhookConfiguration"
    assert mutating["metadata"]["name"] == validating["metadata"]["name"] == "dklb"
    (m,) = mutating["webhooks"]
    (v,) = validating["webhooks"]
    assert m["clientConfig"]["url"] == "https://127.0.0.1:8443/mutate"
    assert v["clientConfig"]["url"] == "https://127.0.0.1:8443/validate"
    for hook in (m, v):
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == CA
        assert "service" not in hook["clientConfig"]
        assert hook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["services"],
                "scope": "Namespaced",
            }
        ]
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["failurePolicy"] == "Ignore", "the Go dklb's default"
        assert hook["timeoutSeconds"] == 5
        assert hook["namespaceSelector"] == {}
        assert hook["name"].count(".") >= 2, "the API server wants a fully qualified webhook name"
    assert m["reinvocationPolicy"] == "IfNeeded"
    assert "reinvocationPolicy" not in v, "only mutating webhooks have one"


def test_service_mode_names_the_service_and_the_paths() -> None:
    mutating, validating = webhook_configurations(
        ca_bundle=CA,
        service=("dklb", "dklb-webhook", 443),
        failure_policy="Fail",
        timeout_seconds=10,
        namespace_selector={"dklb.example/admission": "on"},
        name="other",
    )
    for obj, path in ((mutating, "/mutate"), (validating, "/validate")):
        (hook,) = obj["webhooks"]
        assert obj["metadata"]["name"] == "other"
        assert hook["clientConfig"]["service"] == {
            "namespace": "dklb",
            "name": "dklb-webhook",
            "port": 443,
            "path": path,
        }
        assert "url" not in hook["clientConfig"]
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 10
        assert hook["namespaceSelector"] == {"matchLabels": {"dklb.example/admission": "on"}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of url and service"),
        ({"url": "https://a", "service": ("a", "b", 1)}, "exactly one of url and service"),
        ({"url": "http://127.0.0.1:8443"}, "is not an https:// URL"),
        ({"url": "https://127.0.0.1:8443/?x=1"}, "no query"),
        ({"url": "https://a", "failure_policy": "Retry"}, "is not one of Ignore, Fail"),
        ({"url": "https://a", "timeout_seconds": 0}, "not within 1-30 seconds"),
        ({"url": "https://a", "timeout_seconds": 31}, "not within 1-30 seconds"),
        ({"url": "https://a", "ca_bundle": b"garbage"}, "no PEM certificate"),
        ({"url": "https://a", "name": "Not_A_Name"}, "not a valid name"),
    ],
)
def test_unusable_arguments_are_refused_before_any_request(kwargs: Obj, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        webhook_configurations(**{"ca_bundle": CA, **kwargs})


def test_service_references_and_namespace_selectors_parse_from_their_flags() -> None:
    assert parse_service_reference("dklb/dklb-webhook:443") == ("dklb", "dklb-webhook", 443)
    for bad in ("dklb-webhook:443", "dklb/dklb-webhook", "dklb/:443", "dklb/x:0", "dklb/x:65536", "A/b:1"):
        with pytest.raises(ValueError):
            parse_service_reference(bad)
    assert parse_namespace_selector("a=b") == {"a": "b"}
    assert parse_namespace_selector("dklb.io/admission=on, team=") == {"dklb.io/admission": "on", "team": ""}
    for bad in ("a", "=b", "a=b,a=c", "a=b c", "a b=c"):
        with pytest.raises(ValueError):
            parse_namespace_selector(bad)


# ---- registration against the stand-in -----------------------------------------------------------


def test_register_creates_both_then_writes_nothing_when_nothing_changed(served: Served) -> None:
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    assert served.fake.writes() == [("POST", PREFIX + plural) for plural in PLURALS]
    mutating, validating = webhook_configurations(ca_bundle=CA, url="https://127.0.0.1:8443")
    assert stored(served.fake, PLURALS[0])["webhooks"] == mutating["webhooks"]
    assert stored(served.fake, PLURALS[1])["webhooks"] == validating["webhooks"]

    served.fake.requests.clear()
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    assert served.fake.writes() == [], "a second registration of the same thing is two GETs"
    assert [m for m, _ in served.fake.requests] == ["GET", "GET"]


def test_register_replaces_with_the_resource_version_it_read(served: Served) -> None:
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    versions = [stored(served.fake, p)["metadata"]["resourceVersion"] for p in PLURALS]
    served.fake.requests.clear()
    served.fake.bodies.clear()

    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443", failure_policy="Fail")
    assert served.fake.writes() == [("PUT", PREFIX + plural + "/dklb") for plural in PLURALS]
    assert [b["metadata"]["resourceVersion"] for b in served.fake.bodies] == versions
    for plural in PLURALS:
        assert stored(served.fake, plural)["webhooks"][0]["failurePolicy"] == "Fail"

    # Dropping the namespace selector is a change too (it is written out as {}).
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443", namespace_selector={"a": "b"})
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    assert stored(served.fake, PLURALS[0])["webhooks"][0]["namespaceSelector"] == {}


def test_a_webhook_added_by_hand_is_replaced_away(served: Served) -> None:
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    extra = dict(stored(served.fake, PLURALS[1])["webhooks"][0], name="extra.example.com")
    stored(served.fake, PLURALS[1])["webhooks"].append(extra)
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    assert len(stored(served.fake, PLURALS[1])["webhooks"]) == 1


def test_a_lost_race_is_retried_from_a_fresh_read(served: Served) -> None:
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")

    def another_replica(fake: FakeAPI) -> None:
        # Between our GET and our PUT, someone else writes the object: our PUT gets a 409.
        fake.store(PLURALS[0], stored(fake, PLURALS[0]))

    served.fake.before_write = another_replica
    served.fake.requests.clear()
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:9443")
    methods = [m for m, p in served.fake.requests if p.startswith(PREFIX + PLURALS[0])]
    assert methods == ["GET", "PUT", "GET", "PUT"]
    for plural in PLURALS:
        assert stored(served.fake, plural)["webhooks"][0]["clientConfig"]["url"].startswith(
            "https://127.0.0.1:9443/"
        )


def test_a_create_that_lost_to_another_replica_finds_the_object_on_the_next_read(served: Served) -> None:
    def another_replica(fake: FakeAPI) -> None:
        for body in webhook_configurations(ca_bundle=CA, url="https://127.0.0.1:8443"):
            plural = body["kind"].lower() + "s"
            fake.store(plural, body)

    served.fake.before_write = another_replica
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    assert served.fake.writes() == [("POST", PREFIX + PLURALS[0])], "the second one was already right"


def test_a_refusal_is_an_error_naming_the_object_and_the_api_servers_reason(served: Served) -> None:
    served.fake.faults[("POST", PLURALS[0])] = [403]
    refused = r"MutatingWebhookConfiguration 'dklb': HTTP 403: injected 403"
    with pytest.raises(RegistrationError, match=refused):
        register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    served.fake.faults[("PUT", PLURALS[0])] = [409] * 10
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    with pytest.raises(RegistrationError, match="HTTP 409"):
        register(served.api, ca_bundle=CA, url="https://127.0.0.1:9443")
    assert len([r for r in served.fake.requests if r[0] == "PUT"]) == 5, "a bounded number of retries"


def test_an_unreachable_api_server_is_a_registration_error() -> None:
    configuration = kubernetes.client.Configuration()
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused at once.
    configuration.host = "http://127.0.0.1:9"
    configuration.retries = 0
    with (
        kubernetes.client.ApiClient(configuration) as api,
        pytest.raises(RegistrationError, match="cannot register the MutatingWebhookConfiguration"),
    ):
        register(api, ca_bundle=CA, url="https://127.0.0.1:8443")


def test_unregister_deletes_both_and_tolerates_missing_ones(served: Served) -> None:
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443", name="mine")
    register(served.api, ca_bundle=CA, url="https://127.0.0.1:8443")
    unregister(served.api, "mine")
    assert sorted(served.fake.objects) == [(p, "dklb") for p in PLURALS], "only the named ones"
    unregister(served.api, "mine")
    served.fake.faults[("DELETE", PLURALS[1])] = [500]
    with pytest.raises(RegistrationError, match="HTTP 500"):
        unregister(served.api)


# ---- the flags of `dklb run` ---------------------------------------------------------------------


def run_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser(["run"]).parse_args(["run", *argv])


def test_the_flags_of_the_demo_and_the_tests_make_a_url_mode_plan(tmp_path: Path) -> None:
    plan = admission_plan(
        run_args(
            "--admission-listen",
            "127.0.0.1:8443",
            "--admission-self-signed-dir",
            str(tmp_path),
            "--register-admission-webhook",
            "--admission-webhook-url",
            "https://127.0.0.1:8443/",
            "--admission-failure-policy",
            "Fail",
            "--admission-namespace-selector",
            "team=a,dklb.io/admission=on",
        )
    )
    assert plan.listen == ("127.0.0.1", 8443)
    assert plan.self_signed_dir == str(tmp_path) and plan.cert_file is None
    assert plan.register is True and plan.name == "dklb"
    assert plan.url == "https://127.0.0.1:8443" and plan.service is None
    assert plan.failure_policy == "Fail"
    assert plan.namespace_selector == {"team": "a", "dklb.io/admission": "on"}
    # The generated certificate names what the API server dials.
    assert self_signed_hosts(plan) == ["127.0.0.1"]


def test_no_admission_flag_means_no_webhook_and_the_defaults_are_the_go_dklbs() -> None:
    plan = admission_plan(run_args())
    assert plan.listen is None and plan.register is False and plan.client_ca_file is None
    assert plan.failure_policy == "Ignore"
    assert cli.build_parser(["run"]).parse_args(["run"]).admission_failure_policy == FAILURE_POLICIES[0]


def test_every_admission_flag_has_its_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "DKLB_ADMISSION_LISTEN": "0.0.0.0:8443",
        "DKLB_ADMISSION_SELF_SIGNED_DIR": str(tmp_path),
        "DKLB_REGISTER_ADMISSION_WEBHOOK": "true",
        "DKLB_ADMISSION_WEBHOOK_SERVICE": "dklb/dklb-webhook:443",
        "DKLB_ADMISSION_FAILURE_POLICY": "Fail",
        "DKLB_ADMISSION_WEBHOOK_NAME": "mine",
        "DKLB_ADMISSION_CLIENT_CA_FILE": str(generate_client_certificate(tmp_path / "client", name="x")[0]),
    }.items():
        monkeypatch.setenv(name, value)
    plan = admission_plan(run_args())
    assert plan.listen == ("0.0.0.0", 8443) and plan.register is True
    assert plan.service == ("dklb", "dklb-webhook", 443)
    assert plan.failure_policy == "Fail" and plan.name == "mine"
    assert plan.client_ca_file == str(tmp_path / "client" / "ca.crt")
    hosts = self_signed_hosts(plan)
    assert hosts == ["dklb-webhook.dklb.svc", "dklb-webhook.dklb.svc.cluster.local"]
    # A bare flag and an explicit value both parse.
    assert run_args("--register-admission-webhook=false").register_admission_webhook is False


SERVING = ["--admission-listen", "127.0.0.1:1", "--admission-self-signed-dir", "d"]


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--admission-listen", "127.0.0.1:8443"], "--admission-listen needs a certificate"),
        (["--admission-listen", "nope", "--admission-self-signed-dir", "d"], "--admission-listen: 'nope'"),
        (
            ["--admission-listen", "127.0.0.1:1", "--admission-tls-cert-file", "{cert}"],
            "go together: give both",
        ),
        (
            [
                "--admission-listen",
                "127.0.0.1:1",
                "--admission-self-signed-dir",
                "d",
                "--admission-tls-cert-file",
                "{cert}",
                "--admission-tls-private-key-file",
                "{cert}",
            ],
            "give one or the other",
        ),
        (["--admission-self-signed-dir", "d"], "only --admission-listen starts"),
        (["--register-admission-webhook", "--admission-listen", "127.0.0.1:1"], "(exactly one)"),
        (
            [
                "--register-admission-webhook",
                "--admission-webhook-url",
                "https://a",
                "--admission-webhook-service",
                "a/b:1",
            ],
            "(exactly one)",
        ),
        (
            ["--register-admission-webhook", "--admission-webhook-url", "https://a"],
            "needs --admission-ca-bundle-file",
        ),
        (["--admission-webhook-url", "https://a"], "only matters with --register-admission-webhook"),
        (["--admission-webhook-url", "http://a"], "is not an https:// URL"),
        (["--admission-webhook-service", "a/b"], "is not NAMESPACE/NAME:PORT"),
        (["--admission-namespace-selector", "a"], "is not KEY=VALUE"),
        (["--admission-failure-policy", "Retry"], "'Retry' is not one of Ignore, Fail"),
        (["--admission-ca-bundle-file", "/nonexistent/ca.crt"], "cannot read /nonexistent/ca.crt"),
        (
            [*SERVING, "--admission-client-ca-file", "/nonexistent/ca.crt"],
            "--admission-client-ca-file: cannot read /nonexistent/ca.crt",
        ),
        (
            [*SERVING, "--admission-client-ca-file", "{garbage}"],
            "--admission-client-ca-file: {garbage} holds no PEM certificate",
        ),
        (
            [*SERVING, "--admission-client-ca-file", "{leaf}"],
            "--admission-client-ca-file: {leaf}: CN=leaf.example is not a CA certificate",
        ),
        (["--admission-client-ca-file", "{cert}"], "--admission-client-ca-file is for the webhook server"),
    ],
)
def test_contradicting_or_unusable_flags_are_each_named(
    tmp_path: Path, argv: list[str], problem: str
) -> None:
    from engine.admission.certs import generate_self_signed

    files = {"{cert}": tmp_path / "tls.crt", "{garbage}": tmp_path / "garbage.pem"}
    files["{cert}"].write_bytes(CA)
    files["{garbage}"].write_bytes(b"not a certificate\n")
    files["{leaf}"] = generate_self_signed(tmp_path / "leaf", hosts=["leaf.example"])[1]

    def filled(text: str) -> str:
        for placeholder, path in files.items():
            text = text.replace(placeholder, str(path))
        return text

    with pytest.raises(AdmissionFlagError) as raised:
        admission_plan(run_args(*map(filled, argv)))
    assert any(filled(problem) in p for p in raised.value.problems), raised.value.problems


def test_dklb_run_exits_1_with_the_problem_before_touching_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--database",
            str(tmp_path / "dklb.db"),
            "--admission-listen",
            "127.0.0.1:8443",
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "--admission-listen needs a certificate" in result.stderr
    assert not (tmp_path / "dklb.db").exists(), "no migration for a command that cannot run"


# ---- the webhook of `dklb run`: serving, registering, renewing the certificate -------------------


def test_a_renewed_certificate_is_served_and_its_new_ca_registered(served: Served, tmp_path: Path) -> None:
    from engine.admission.certs import generate_self_signed

    certs = tmp_path / "certs"
    port = free_port()
    plan = admission_plan(
        run_args(
            "--admission-listen",
            f"127.0.0.1:{port}",
            "--admission-self-signed-dir",
            str(certs),
            "--register-admission-webhook",
            "--admission-webhook-url",
            f"https://127.0.0.1:{port}",
        )
    )
    webhook = AdmissionWebhook(plan, settings=Settings(), api=served.api)
    try:
        webhook.start()
        first_ca = (certs / "ca.crt").read_bytes()
        registered = stored(served.fake, PLURALS[0])["webhooks"][0]["clientConfig"]["caBundle"]
        assert base64.b64decode(registered) == first_ca
        assert healthz(port, first_ca) == b"ok\n"

        # Nothing changed: nothing is reloaded or written.
        served.fake.requests.clear()
        webhook.check_certificates()
        assert served.fake.requests == []

        # A new CA and certificate (what a renewed Secret looks like on disk).
        (certs / "ca.crt").unlink()
        (certs / "ca.key").unlink()
        generate_self_signed(certs, hosts=["127.0.0.1"])
        new_ca = (certs / "ca.crt").read_bytes()
        assert new_ca != first_ca
        webhook.check_certificates()
        assert healthz(port, new_ca) == b"ok\n", "the new certificate is served"
        for plural in PLURALS:
            registered = stored(served.fake, plural)["webhooks"][0]["clientConfig"]["caBundle"]
            assert base64.b64decode(registered) == new_ca, "and its CA registered"
    finally:
        webhook.stop()


def test_an_address_in_use_is_a_clear_start_up_error(served: Served, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        plan = admission_plan(
            run_args("--admission-listen", f"127.0.0.1:{port}", "--admission-self-signed-dir", str(tmp_path))
        )
        webhook = AdmissionWebhook(plan, settings=Settings(), api=served.api)
        try:
            with pytest.raises(WebhookError) as raised:
                webhook.start()
        finally:
            webhook.stop()
    assert str(raised.value).startswith(f"cannot serve the admission webhook on 127.0.0.1:{port}")
    assert served.fake.requests == [], "nothing registered for a webhook that does not run"


def healthz(port: int, ca: bytes) -> bytes:
    """GET /healthz over HTTPS, trusting only ``ca`` (as the API server trusts the caBundle)."""
    context = ssl.create_default_context(cadata=ca.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body
