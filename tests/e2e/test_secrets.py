"""The EdgeLB credentials never leak: not in logs, CLI output, the database, Kubernetes or /metrics.

Where it sits: the e2e ``world`` (real kube-apiserver, ``dklb run`` at log level debug). Its
controller is pointed at a recording proxy this test runs on a free loopback port, in front of
a second ``dklb edgelb-local`` that answers half the pool listings 503 (the orphan sweep's error
path; seeded). Faults on the Services' own path would make their time to Ready a matter of
luck (a run of 503s grows the retry backoff past any deadline), and the proxy already sends them
through both error paths, deterministically. The proxy
records the Authorization header of every request (edgelb-local does not check tokens, so this
is how the test proves the token was actually sent), answers one request 401 and one 503 with a
message that echoes the Authorization header back (a careless server: the client must scrub
it), and plays the DC/OS login endpoint for a service account (it verifies the JWT with the
account's public key and hands out a second sentinel token).

Credentials used: a sentinel bearer token (``--edgelb-bearer-token-file``), then a DC/OS
service-account secret (``--edgelb-service-account-secret-file``: its RSA private key, the JWT
signed with it, and the sentinel ACS token the login returns). Services are provisioned and
deleted through the error paths; then every EdgeLB-facing CLI command runs with the same
credentials (``dklb inspect NS/NAME``, ``dklb pools``, each ``-o table|json|yaml``, one that
cannot connect, one given a URL that carries the token) and ``dklb run --help``. No secret, nor
any piece of one, may appear in the controller log, any CLI stdout/stderr, the SQLite files,
the namespace's Events and Services, or /metrics.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import World
from tests.integration.conftest import free_port
from tests.processes import ROOT, start_edgelb, wait_for

TOKEN = "SENTINEL-7f3a9c2e4b1d8a6f0c3e5b7d9a1f2c4e"
ACS_TOKEN = "SENTINEL-ACS-5d2b8e1f7a3c9e0b4d6f8a2c1e3b5d7f"
LOGIN_PATH = "/acs/api/v1/auth/login"
SERVICE_ACCOUNT = "dklb-principal"
LISTENING = re.compile(r"http listening on (http://\S+)")
# The requests the proxy answers itself with a message echoing the Authorization header: the
# first GET of a pool (401: the client renews its token and retries) and the first POST (503: the
# controller retries later and says why in a Warning Event).
ECHOED = {("GET", 401), ("POST", 503)}
ECHO = "rejected credentials"


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    status: int


@dataclass
class RecordingProxy:
    """Forwards to ``upstream``; records every request; plays the DC/OS login endpoint."""

    upstream: str
    public_key: rsa.RSAPublicKey
    seen: list[Seen] = field(default_factory=list)
    assertions: list[str] = field(default_factory=list)  # the JWTs presented at login
    echoed: set[str] = field(default_factory=set)  # the methods already answered with an echo
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def edgelb_requests(self) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path != LOGIN_PATH]


def make_handler(proxy: RecordingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            authorization = self.headers.get("Authorization")
            if self.path == LOGIN_PATH:
                self._login(body)
                return
            pool_request = self.path.startswith("/v2/pools") and self.path.count("/") <= 3
            echo = next((code for method, code in ECHOED if method == self.command and pool_request), None)
            with proxy.lock:
                if echo is not None and self.command in proxy.echoed:
                    echo = None
                elif echo is not None:
                    proxy.echoed.add(self.command)
            if echo is not None:
                message = f"{ECHO} {authorization}"
                self._answer(echo, json.dumps({"code": echo, "message": message}).encode())
                status = echo
            else:
                status = self._forward(body)
            with proxy.lock:
                proxy.seen.append(Seen(self.command, self.path, authorization, status))

        def _forward(self, body: bytes) -> int:
            target = urlsplit(proxy.upstream)
            assert target.hostname is not None
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                headers = {"Content-Type": self.headers.get("Content-Type") or "application/json"}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                self._answer(
                    response.status, payload, response.getheader("Content-Type") or "application/json"
                )
                return response.status
            except (OSError, http.client.HTTPException):
                self._answer(502, b'{"code":502,"message":"proxy: upstream failed"}')
                return 502
            finally:
                connection.close()

        def _login(self, body: bytes) -> None:
            request = json.loads(body)
            claims = jwt.decode(request["token"], proxy.public_key, algorithms=["RS256"])
            assert claims["uid"] == request["uid"] == SERVICE_ACCOUNT
            with proxy.lock:
                proxy.assertions.append(request["token"])
                proxy.seen.append(Seen(self.command, self.path, None, 200))
            self._answer(200, json.dumps({"token": ACS_TOKEN}).encode())

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    return Handler


@contextlib.contextmanager
def recording_proxy(upstream: str, public_key: rsa.RSAPublicKey) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(upstream=upstream, public_key=public_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(proxy))
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def dklb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def leaks(text: str, secrets: list[str]) -> list[str]:
    """The secrets (or the pieces of them) found in ``text``."""
    return [s for s in secrets if s in text]


def test_no_credential_leaks_anywhere(world: World, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    faulty = start_edgelb(
        tmp_path / "edgelb-faulty",
        extra=["--no-dataplane", "--faults", "GET /v2/pools:5xx=0.5", "--faults-seed", "7"],
    )
    token_file = tmp_path / "edgelb-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    outputs: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(faulty.stop)
        proxy = stack.enter_context(recording_proxy(faulty.url, key.public_key()))
        secret_file = tmp_path / "service-account.json"
        secret_file.write_text(
            json.dumps({"uid": SERVICE_ACCOUNT, "private_key": pem, "login_endpoint": proxy.url + LOGIN_PATH})
        )
        secret_file.chmod(0o600)
        database = world.directory / "dklb.db"
        base_args = list(world.controller.args)
        # The local EdgeLB and its proxy speak plain HTTP: credentials need the operator's word (S6).
        insecure = "--edgelb-allow-insecure-http"
        common = [
            *("--edgelb-url", proxy.url, "--http-listen", "127.0.0.1:0", "--edgelb-request-timeout", "2s"),
            insecure,
        ]

        # 1. The bearer token file, through 503s and echoing servers: provision, then delete.
        offset = world.controller.log_path.stat().st_size
        world.controller.stop()
        world.controller.args = [*base_args, *common, "--edgelb-bearer-token-file", str(token_file)]
        world.controller.start()
        metrics = wait_for(
            lambda: (m := LISTENING.search(world.controller.log()[offset:])) and m.group(1),
            what="the http listening line",
        )
        world.create_service("web", ports=[(free_port(), "TCP")], config="name: secret-pool\n")
        world.create_service("gone", ports=[(free_port(), "TCP")], config="name: gone-pool\n")
        wait_for(lambda: world.ingress("web") and world.ingress("gone"), timeout=90, what="both Ready")
        world.delete_service("gone")
        wait_for(lambda: world.service("gone") is None, timeout=90, what="gone released")
        outputs["/metrics"] = requests.get(metrics + "/metrics", timeout=5).text

        sent = proxy.edgelb_requests()
        assert sent and {s.authorization for s in sent} == {f"Bearer {TOKEN}"}, (
            "every request carried the token"
        )
        statuses = {s.status for s in sent}
        assert {401, 503} <= statuses, f"the error paths were exercised: {statuses}"

        # 2. Every CLI command that talks to EdgeLB, with the token file; one cannot connect.
        before = len(proxy.edgelb_requests())
        with_token = ["--database", str(database), "--edgelb-bearer-token-file", str(token_file), insecure]
        closed = f"http://127.0.0.1:{free_port()}"
        for output in ("table", "json", "yaml"):
            for command in (["inspect", f"{world.namespace}/web"], ["pools"]):
                result = dklb(*command, *with_token, "--edgelb-url", proxy.url, "-o", output)
                outputs[f"{' '.join(command)} -o {output}"] = result.stdout + result.stderr
        for command in (["inspect", f"{world.namespace}/web"], ["pools"]):
            result = dklb(*command, *with_token, "--edgelb-url", closed)
            outputs[f"{' '.join(command)} (cannot connect)"] = result.stdout + result.stderr
            assert "connection failed" in result.stdout + result.stderr, result
        result = dklb(
            "pools", "--database", str(database), "--edgelb-url", f"http://dklb:{TOKEN}@127.0.0.1:1"
        )
        outputs["pools (credentials in the URL)"] = result.stdout + result.stderr
        assert result.returncode == 1 and "must not carry credentials" in result.stderr, result
        result = dklb("run", "--help")
        outputs["run --help"] = result.stdout + result.stderr
        assert result.returncode == 0 and "--edgelb-bearer-token-file" in result.stdout
        cli_sent = proxy.edgelb_requests()[before:]
        assert cli_sent and {s.authorization for s in cli_sent} == {f"Bearer {TOKEN}"}, "the CLI sent it too"

        # 3. A DC/OS service account: the JWT is signed with its key, the ACS token is used.
        before = len(proxy.edgelb_requests())
        world.controller.stop()
        world.controller.args = [
            *base_args,
            *common,
            "--edgelb-service-account-secret-file",
            str(secret_file),
        ]
        world.controller.start()
        world.create_service("sa-web", ports=[(free_port(), "TCP")], config="name: sa-pool\n")
        wait_for(lambda: world.ingress("sa-web"), timeout=90, what="sa-web Ready")
        result = dklb(
            "inspect",
            f"{world.namespace}/sa-web",
            "--database",
            str(database),
            "--edgelb-url",
            proxy.url,
            "--edgelb-service-account-secret-file",
            str(secret_file),
            insecure,
            "-o",
            "json",
        )
        outputs["inspect (service account)"] = result.stdout + result.stderr
        assert proxy.assertions, "the service account logged in"
        sa_sent = proxy.edgelb_requests()[before:]
        assert sa_sent and {s.authorization for s in sa_sent} == {f"Bearer {ACS_TOKEN}"}
        world.controller.stop()

    outputs["controller log"] = world.controller.log()
    outputs["SQLite files"] = b"".join(
        p.read_bytes() for p in sorted(database.parent.glob("dklb.db*"))
    ).decode("latin-1")
    for kind in ("event", "service"):
        listing = getattr(world.core, f"list_namespaced_{kind}")(world.namespace, _preload_content=False)
        # Decoded: the API server's JSON escapes "<", ">" and "&" as \u003c...
        outputs[f"Kubernetes {kind}s"] = json.dumps(json.loads(listing.data), ensure_ascii=False)
    assert "EnsuredLoadBalancer" in outputs["Kubernetes events"], "the Events were read"

    key_lines = [line for line in pem.splitlines() if line and "-----" not in line]
    signatures = [assertion.rsplit(".", 1)[-1] for assertion in proxy.assertions]
    secrets = [TOKEN, ACS_TOKEN, "SENTINEL", TOKEN[-12:], ACS_TOKEN[-12:], *key_lines, *signatures]
    log = outputs["controller log"]
    assert "-> 401 in" in log and "-> 503 in" in log, "the error paths ran, at log level debug"
    # The message that echoed the token reached the user (Event) and the history, scrubbed.
    for where in ("Kubernetes events", "SQLite files"):
        assert f"{ECHO} Bearer <redacted>" in outputs[where], f"the echoed error is in the {where}, scrubbed"
    print(
        f"\nsecrets: {len(proxy.seen)} requests recorded ({len(proxy.assertions)} logins), statuses "
        f"{sorted({s.status for s in proxy.seen})}, {len(outputs)} outputs searched for {len(secrets)} pieces"
    )
    found = {where: leaks(text, secrets) for where, text in outputs.items()}
    assert {where: pieces for where, pieces in found.items() if pieces} == {}
    assert all(outputs.values()), {where: len(text) for where, text in outputs.items()}
