"""The EdgeLB HTTP client speaks the contract of shared/edgelb-api.md and maps answers to typed errors.

Where it sits: state handlers call the EdgeLB port; in production that is ``EdgeLBClient``. These
tests run it against ``StubServer``, a scripted HTTP(S) server on 127.0.0.1 (port 0, own thread,
stopped in teardown), so nothing leaves the machine. Held answers wait on a ``threading.Event``
released at teardown: no sleeps are used as synchronization.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.edgelb.auth import EnvToken, FileToken, LoginError, StaticToken
from engine.edgelb.client import EdgeLBClient, client_from_options
from engine.edgelb.errors import Conflict, EdgeLBError, Invalid, NotFound, Unavailable, Unexpected
from tests.checks import present

SENTINEL = "s3cr3t-SENTINEL-t0ken-9f8e7d"
POOL = {"apiVersion": "V2", "name": "dklb-redis", "count": 1, "haproxy": {"frontends": [], "backends": []}}


# --- the stub EdgeLB ----------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer. ``body``: dict/list -> JSON, str -> text, None -> empty."""

    status: int = 200
    body: Any = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False  # wait for the server's release event before answering (read timeouts)
    reset: bool = False  # abort the connection with a TCP RST instead of answering


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Reply | Callable[[Recorded], Reply]


class StubServer:
    """Scripted answers per (method, raw path); the last scripted answer of a route repeats."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[tuple[str, str], list[Responder]] = {}
        self.default: Responder = Reply(404, {"code": 404, "message": "stub: no such route"})
        self.requests: list[Recorded] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                rec = Recorded(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                reply = stub._next(rec)
                if reply.hold:
                    stub.release.wait()
                if reply.reset:
                    # SO_LINGER 0 turns close() into a RST: the client sees "connection reset by peer".
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                body, ctype = reply.body, reply.content_type
                if isinstance(body, (dict, list)):
                    data, ctype = json.dumps(body).encode(), ctype or "application/json"
                elif isinstance(body, str):
                    data, ctype = body.encode(), ctype or "text/plain; charset=utf-8"
                else:
                    data = b""
                try:
                    self.send_response(reply.status)
                    if ctype:
                        self.send_header("Content-Type", ctype)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout): nothing to answer to

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # resets and refused TLS handshakes are the point of some tests

        self.httpd = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        # A short poll interval only makes shutdown() quick; it is not used to wait for anything.
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _next(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            queue = self.routes.get((rec.method, rec.path))
            responder = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else self.default
        return responder(rec) if callable(responder) else responder

    def script(self, method: str, path: str, *replies: Responder) -> None:
        self.routes[(method, path)] = list(replies)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        assert isinstance(host, str)  # an AF_INET socket's address
        return f"{self.scheme}://{host}:{port}"

    def start(self) -> StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


def free_port() -> int:
    """A port nobody listens on (bound then released), for "connection refused"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingToken:
    """A token source handing out t1, t2, ...; counts renewals."""

    def __init__(self, prefix: str = "tok") -> None:
        self.prefix = prefix
        self.renewals = 0

    def token(self) -> str | None:
        return f"{self.prefix}-{self.renewals + 1}"

    def renew(self) -> str | None:
        self.renewals += 1
        return self.token()


# --- every call: method, path, body, result -----------------------------------------------------

CALLS = [
    # (id, invoke, method, path, reply, expected result, request body)
    ("ping", lambda c: c.ping(), "GET", "/ping", Reply(200, "pong\n"), "pong", None),
    ("version", lambda c: c.version(), "GET", "/version", Reply(200, "1.5.1\n"), "1.5.1", None),
    ("list_pools", lambda c: c.list_pools(), "GET", "/v2/pools", Reply(200, [POOL]), [POOL], None),
    (
        "get_pool",
        lambda c: c.get_pool("dklb-redis"),
        "GET",
        "/v2/pools/dklb-redis",
        Reply(200, POOL),
        POOL,
        None,
    ),
    ("create_pool", lambda c: c.create_pool(POOL), "POST", "/v2/pools", Reply(200, POOL), POOL, POOL),
    (
        "update_pool",
        lambda c: c.update_pool(POOL),
        "PUT",
        "/v2/pools/dklb-redis",
        Reply(200, POOL),
        POOL,
        POOL,
    ),
    (
        "delete_pool",
        lambda c: c.delete_pool("dklb-redis"),
        "DELETE",
        "/v2/pools/dklb-redis",
        Reply(204),
        None,
        None,
    ),
    (
        "get_metadata",
        lambda c: c.get_metadata("dklb-redis"),
        "GET",
        "/v2/pools/dklb-redis/metadata",
        Reply(200, {"name": "dklb-redis", "frontends": []}),
        {"name": "dklb-redis", "frontends": []},
        None,
    ),
    (
        "get_lbconfig",
        lambda c: c.get_lbconfig("dklb-redis"),
        "GET",
        "/v2/pools/dklb-redis/lbconfig",
        Reply(200, "global\n  maxconn 50000 # µ\n", content_type="text/plain"),
        "global\n  maxconn 50000 # µ\n",
        None,
    ),
    (
        "get_config",
        lambda c: c.get_config(),
        "GET",
        "/v2/config",
        Reply(200, {"pools": [POOL]}),
        {"pools": [POOL]},
        None,
    ),
]


@pytest.mark.parametrize("prefix", ["", "/", "/service/edgelb", "/service/edgelb/"])
@pytest.mark.parametrize(
    ("invoke", "method", "path", "reply", "expected", "body"),
    [c[1:] for c in CALLS],
    ids=[c[0] for c in CALLS],
)
def test_every_call_sends_method_path_body(stub, prefix, invoke, method, path, reply, expected, body):
    full = prefix.rstrip("/") + path
    stub.script(method, full, reply)
    client = EdgeLBClient(stub.url + prefix)
    assert invoke(client) == expected
    [rec] = stub.requests
    assert (rec.method, rec.path) == (method, full)
    if body is None:
        assert rec.body == b""
    else:
        assert rec.json() == body
        assert rec.headers["Content-Type"] == "application/json"
    assert "Authorization" not in rec.headers  # no token source, no header


def test_pool_names_are_path_quoted(stub):
    stub.script("GET", "/v2/pools/a%20b%2Fc%3F%23", Reply(200, POOL))
    stub.script("PUT", "/v2/pools/x%2F..%2Fy", Reply(200, POOL))
    client = EdgeLBClient(stub.url)
    assert client.get_pool("a b/c?#") == POOL
    assert client.update_pool({**POOL, "name": "x/../y"}) == POOL
    assert [r.path for r in stub.requests] == ["/v2/pools/a%20b%2Fc%3F%23", "/v2/pools/x%2F..%2Fy"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=30))
def test_any_pool_name_reaches_the_server_intact(stub, name):
    stub.default = lambda rec: Reply(200, {"name": unquote(rec.path.removeprefix("/v2/pools/"))})
    assert EdgeLBClient(stub.url).get_pool(name) == {"name": name}
    assert stub.requests[-1].path.count("/") == 3  # the name never adds a path segment


def test_delete_accepts_200_as_well(stub):
    stub.script("DELETE", "/v2/pools/p", Reply(200, {}))
    EdgeLBClient(stub.url).delete_pool("p")  # no error


def test_a_pool_without_name_or_an_empty_name_is_refused_before_sending(stub):
    client = EdgeLBClient(stub.url)
    with pytest.raises(Invalid):
        client.update_pool({"apiVersion": "V2"})
    with pytest.raises(Invalid):
        client.get_pool("")
    assert stub.requests == []


# --- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, Invalid),
        (404, NotFound),
        (409, Conflict),
        (500, Unavailable),
        (502, Unavailable),
        (503, Unavailable),
        (504, Unavailable),
        (403, Unexpected),
        (405, Unexpected),
        (418, Unexpected),
        (422, Invalid),
        (302, Unexpected),
    ],
)
def test_status_maps_to_error_class_with_server_message(stub, status, cls):
    stub.script(
        "PUT", "/v2/pools/dklb-redis", Reply(status, {"code": status, "message": f"the server says {status}"})
    )
    with pytest.raises(EdgeLBError) as info:
        EdgeLBClient(stub.url).update_pool(POOL)
    assert type(info.value) is cls
    assert info.value.status == status
    assert str(info.value) == f"PUT /v2/pools/dklb-redis: {status} the server says {status}"
    assert len(stub.requests) == 1  # no retry, no redirect followed


def test_invalid_message_reads_like_the_contract(stub):
    msg = "pool.name: foo:bar invalid: did not match ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
    stub.script("POST", "/v2/pools", Reply(400, {"code": 400, "message": msg}))
    with pytest.raises(Invalid, match=r"^POST /v2/pools: 400 pool\.name: foo:bar invalid") as info:
        EdgeLBClient(stub.url).create_pool({**POOL, "name": "foo:bar"})
    assert info.value.message.endswith(msg)


def test_a_422_is_a_refusal_with_edgelbs_message(stub):
    # go-openapi puts its own 6xx code in the body of a 422: the status decides, the message is kept.
    msg = "protocol in body should be one of [HTTP HTTPS TCP TLS]"
    stub.script("PUT", "/v2/pools/dklb-redis", Reply(422, {"code": 606, "message": msg}))
    with pytest.raises(Invalid) as info:
        EdgeLBClient(stub.url).update_pool(POOL)
    assert info.value.status == 422
    assert info.value.message == f"PUT /v2/pools/dklb-redis: 422 {msg}"


@pytest.mark.parametrize("method", ["create_pool", "update_pool"])
def test_pool_package_fields_are_never_sent(stub, method):
    # EdgeLB installs the package it has: echoing what a GET returned would pin an old version.
    stub.script("POST", "/v2/pools", Reply(200, POOL))
    stub.script("PUT", "/v2/pools/dklb-redis", Reply(200, POOL))
    read_back = {**POOL, "packageName": "edgelb-pool", "packageVersion": "v1.4.0"}
    getattr(EdgeLBClient(stub.url), method)(read_back)
    assert stub.requests[0].json() == POOL
    assert read_back["packageVersion"] == "v1.4.0"  # the caller's pool is not modified


def test_redirect_is_not_followed(stub):
    stub.script("GET", "/v2/pools", Reply(302, headers={"Location": "http://elsewhere.invalid/v2/pools"}))
    with pytest.raises(Unexpected) as info:
        EdgeLBClient(stub.url, token=StaticToken(SENTINEL)).list_pools()
    assert info.value.status == 302
    assert len(stub.requests) == 1


def test_non_json_error_body_is_quoted_briefly(stub):
    stub.script(
        "GET", "/v2/pools", Reply(502, "<html>\n<b>502 Bad Gateway</b>\n</html>", content_type="text/html")
    )
    with pytest.raises(Unavailable, match=r"GET /v2/pools: 502 <html> <b>502 Bad Gateway</b> </html>"):
        EdgeLBClient(stub.url).list_pools()


def test_empty_error_body_gives_the_reason_phrase(stub):
    stub.script("GET", "/v2/pools", Reply(503))
    with pytest.raises(Unavailable, match=r"^GET /v2/pools: 503 Service Unavailable$"):
        EdgeLBClient(stub.url).list_pools()


def test_metadata_not_yet_available_is_unavailable_504(stub):
    stub.script(
        "GET", "/v2/pools/dklb-redis/metadata", Reply(504, {"code": 504, "message": "not available yet"})
    )
    with pytest.raises(Unavailable) as info:
        EdgeLBClient(stub.url).get_metadata("dklb-redis")
    assert info.value.status == 504
    assert "not available yet" in str(info.value)


def test_unknown_pool_metadata_is_not_found(stub):
    stub.script("GET", "/v2/pools/gone/metadata", Reply(404, {"code": 404, "message": "pool gone not found"}))
    with pytest.raises(NotFound, match="pool gone not found"):
        EdgeLBClient(stub.url).get_metadata("gone")


@pytest.mark.parametrize(
    ("invoke", "path", "reply"),
    [
        (lambda c: c.list_pools(), "/v2/pools", Reply(200, "not json", content_type="application/json")),
        (lambda c: c.list_pools(), "/v2/pools", Reply(200, {"pools": []})),
        (lambda c: c.get_pool("p"), "/v2/pools/p", Reply(200, [POOL])),
        (lambda c: c.get_config(), "/v2/config", Reply(200, [])),
    ],
)
def test_malformed_success_answers_are_unexpected(stub, invoke, path, reply):
    stub.script("GET", path, reply)
    with pytest.raises(Unexpected, match=f"GET {path}: 200 answer is"):
        invoke(EdgeLBClient(stub.url))


# --- transport failures --------------------------------------------------------------------------


def test_connection_refused_is_unavailable_without_status():
    calls = []
    client = EdgeLBClient(f"http://127.0.0.1:{free_port()}", on_response=lambda *a: calls.append(a))
    with pytest.raises(Unavailable, match=r"^GET /v2/pools: connection failed: .*refused") as info:
        client.list_pools()
    assert info.value.status is None
    assert [(m, r, s) for m, r, s, _ in calls] == [("GET", "/v2/pools", 0)]


def test_read_timeout_is_unavailable(stub):
    stub.script("GET", "/v2/pools/slow", Reply(200, POOL, hold=True))
    calls = []
    client = EdgeLBClient(stub.url, read_timeout=0.2, on_response=lambda *a: calls.append(a))
    with pytest.raises(Unavailable, match=r"no answer within the read timeout of 0\.2s") as info:
        client.get_pool("slow")
    assert info.value.status is None
    assert [(m, r, s) for m, r, s, _ in calls] == [("GET", "/v2/pools/{name}", 0)]


def test_reset_connection_is_unavailable(stub):
    stub.script("DELETE", "/v2/pools/p", Reply(reset=True))
    with pytest.raises(Unavailable, match="connection failed") as info:
        EdgeLBClient(stub.url).delete_pool("p")
    assert info.value.status is None


def test_timeouts_are_passed_per_call(stub, monkeypatch):
    seen = []
    original = requests.adapters.HTTPAdapter.send

    def spy(self, request, **kwargs):
        seen.append((kwargs["timeout"], kwargs["verify"], kwargs["proxies"]))
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", spy)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    stub.script("GET", "/ping", Reply(200, "pong"))
    EdgeLBClient(stub.url, connect_timeout=1.5, read_timeout=7.0).ping()
    assert seen == [((1.5, 7.0), True, {})]


@pytest.mark.parametrize(
    ("call", "method", "body", "length"),
    [
        (lambda c: c.ping(), "GET", b"", None),
        (lambda c: c.create_pool(POOL), "POST", json.dumps(POOL).encode(), str(len(json.dumps(POOL)))),
        (lambda c: c.delete_pool("p"), "DELETE", b"", "0"),
    ],
)
def test_requests_carry_what_requests_would_send(stub, call, method, body, length):
    # The client hands prepared requests to the transport adapter itself (no Session.request):
    # the same headers and body as before, token included.
    stub.script("GET", "/ping", Reply(200, "pong"))
    stub.script("POST", "/v2/pools", Reply(200, POOL))
    stub.script("DELETE", "/v2/pools/p", Reply(204))
    call(EdgeLBClient(stub.url, token=StaticToken("tok")))
    [rec] = stub.requests
    assert rec.method == method
    assert rec.body == body
    assert rec.headers.get("Content-Length") == length
    assert rec.headers.get("Content-Type") == ("application/json" if body else None)
    assert rec.headers["Authorization"] == "Bearer tok"
    assert rec.headers["User-Agent"].startswith("python-requests/")
    assert rec.headers["Accept"] == "*/*"
    assert "Cookie" not in rec.headers


def test_a_body_json_cannot_carry_is_refused_before_sending(stub):
    with pytest.raises(Unexpected, match="request failed") as info:
        EdgeLBClient(stub.url).create_pool({**POOL, "cpus": float("nan")})
    assert info.value.status is None
    assert stub.requests == []


@pytest.mark.parametrize(
    ("env", "verify", "expected_verify", "expected_proxies"),
    [
        ({}, True, True, {}),
        ({"REQUESTS_CA_BUNDLE": "/etc/bundle.pem"}, True, "/etc/bundle.pem", {}),
        ({"CURL_CA_BUNDLE": "/etc/curl.pem"}, True, "/etc/curl.pem", {}),
        ({"REQUESTS_CA_BUNDLE": "/etc/bundle.pem"}, "/etc/mine.pem", "/etc/mine.pem", {}),
        ({"REQUESTS_CA_BUNDLE": "/etc/bundle.pem"}, False, False, {}),
        ({"HTTPS_PROXY": "http://proxy:3128"}, True, True, {"https": "http://proxy:3128"}),
        ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "edgelb.example"}, True, True, {}),
    ],
)
def test_the_environment_is_read_once_as_requests_would_read_it(
    monkeypatch, env, verify, expected_verify, expected_proxies
):
    # requests scans the environment on every request unless told not to; the client reads it
    # once, with the same meaning: a CA bundle only when verification is on and left to the default.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = EdgeLBClient("https://edgelb.example", verify=verify)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/changed/later.pem")
    assert client._session.trust_env is False
    assert client._session.verify == expected_verify
    assert client._session.proxies == expected_proxies
    assert client.verify == verify


# --- tokens and 401 ------------------------------------------------------------------------------


def test_bearer_token_is_sent(stub):
    stub.script("GET", "/v2/pools", Reply(200, []))
    EdgeLBClient(stub.url, token=StaticToken(SENTINEL)).list_pools()
    assert stub.requests[0].headers["Authorization"] == f"Bearer {SENTINEL}"


def test_bearer_token_wins_over_netrc(stub, tmp_path, monkeypatch):
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login someone password other\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    stub.script("GET", "/v2/pools", Reply(200, []))
    EdgeLBClient(stub.url, token=StaticToken(SENTINEL)).list_pools()
    assert stub.requests[0].headers["Authorization"] == f"Bearer {SENTINEL}"


def test_401_renews_once_and_retries(stub):
    def by_token(rec: Recorded) -> Reply:
        if rec.headers.get("Authorization") == "Bearer tok-2":
            return Reply(200, POOL)
        return Reply(401, {"code": 401, "message": "token expired"})

    stub.script("PUT", "/v2/pools/dklb-redis", by_token)
    source = CountingToken()
    calls = []
    client = EdgeLBClient(stub.url, token=source, on_response=lambda *a: calls.append(a))
    assert client.update_pool(POOL) == POOL
    assert source.renewals == 1
    assert [r.headers["Authorization"] for r in stub.requests] == ["Bearer tok-1", "Bearer tok-2"]
    assert [r.json() for r in stub.requests] == [POOL, POOL]  # the body is sent again
    assert [(m, r, s) for m, r, s, _ in calls] == [
        ("PUT", "/v2/pools/{name}", 401),
        ("PUT", "/v2/pools/{name}", 200),
    ]


def test_401_twice_is_an_authentication_error(stub):
    stub.script("GET", "/v2/pools", Reply(401, {"code": 401, "message": "unauthorized"}))
    source = CountingToken()
    with pytest.raises(Unexpected, match="authentication failed") as info:
        EdgeLBClient(stub.url, token=source).list_pools()
    assert info.value.status == 401
    assert source.renewals == 1
    assert len(stub.requests) == 2


def test_401_without_token_source_is_not_retried(stub):
    stub.script("GET", "/v2/pools", Reply(401, {"code": 401, "message": "unauthorized"}))
    with pytest.raises(Unexpected, match="authentication failed") as info:
        EdgeLBClient(stub.url).list_pools()
    assert info.value.status == 401
    assert len(stub.requests) == 1


def test_file_token_rotation_is_picked_up_on_401(stub, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("old\n")
    stub.script(
        "GET",
        "/v2/pools",
        lambda rec: Reply(200, []) if rec.headers.get("Authorization") == "Bearer new" else Reply(401),
    )
    client = EdgeLBClient(stub.url, token=FileToken(token_file))
    with pytest.raises(Unexpected):
        client.list_pools()  # old token, renewal rereads "old": still refused
    token_file.write_text("new\n")
    assert client.list_pools() == []


def test_a_failing_token_source_gives_an_edgelb_error_without_its_text(stub):
    class Broken:
        def token(self):
            raise RuntimeError(SENTINEL)

        def renew(self):
            raise RuntimeError(SENTINEL)

    with pytest.raises(LoginError, match="token source failed: RuntimeError") as info:
        EdgeLBClient(stub.url, token=Broken()).list_pools()
    assert SENTINEL not in str(info.value)
    assert stub.requests == []


# --- on_response and logging ---------------------------------------------------------------------


def test_on_response_gets_route_templates_and_statuses(stub):
    for _, _, method, path, reply, _, _ in CALLS:
        stub.script(method, path, reply)
    stub.script("GET", "/v2/pools/missing", Reply(404, {"code": 404, "message": "no pool"}))
    calls: list[tuple[str, str, int, float]] = []
    client = EdgeLBClient(stub.url, on_response=lambda *a: calls.append(a))
    for _, invoke, *_ in CALLS:
        invoke(client)
    with pytest.raises(NotFound):
        client.get_pool("missing")
    assert [(m, r, s) for m, r, s, _ in calls] == [
        ("GET", "/ping", 200),
        ("GET", "/version", 200),
        ("GET", "/v2/pools", 200),
        ("GET", "/v2/pools/{name}", 200),
        ("POST", "/v2/pools", 200),
        ("PUT", "/v2/pools/{name}", 200),
        ("DELETE", "/v2/pools/{name}", 204),
        ("GET", "/v2/pools/{name}/metadata", 200),
        ("GET", "/v2/pools/{name}/lbconfig", 200),
        ("GET", "/v2/config", 200),
        ("GET", "/v2/pools/{name}", 404),
    ]
    assert all(isinstance(sec, float) and sec >= 0 for *_, sec in calls)


def test_a_failing_on_response_does_not_fail_the_call(stub):
    def boom(*args):
        raise RuntimeError("metrics broke")

    stub.script("GET", "/ping", Reply(200, "pong"))
    assert EdgeLBClient(stub.url, on_response=boom).ping() == "pong"


def test_debug_log_has_one_line_per_request(stub, caplog):
    caplog.set_level(logging.DEBUG, logger="dklb.edgelb")
    stub.script("GET", "/v2/pools/dklb-redis", Reply(200, POOL))
    EdgeLBClient(stub.url, token=StaticToken(SENTINEL)).get_pool("dklb-redis")
    lines = [r.getMessage() for r in caplog.records if r.name == "dklb.edgelb"]
    assert len(lines) == 1
    assert lines[0].startswith("GET /v2/pools/dklb-redis -> 200 in ")
    assert lines[0].endswith(" ms")


def test_the_token_never_appears_in_errors_repr_or_logs(stub, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)

    def echo(status: int) -> Callable[[Recorded], Reply]:
        # A hostile or buggy server echoing the header back into its message.
        return lambda rec: Reply(
            status, {"code": status, "message": f"got {rec.headers.get('Authorization')}"}
        )

    for i, status in enumerate([400, 401, 403, 404, 409, 500, 504]):
        stub.script("GET", f"/v2/pools/p{i}", echo(status))
    stub.script("GET", "/v2/pools/text", lambda rec: Reply(502, f"proxy: {rec.headers.get('Authorization')}"))
    stub.script("GET", "/v2/pools/slow", Reply(200, POOL, hold=True))
    stub.script("GET", "/v2/pools/reset", Reply(reset=True))

    token_file = tmp_path / "token"
    token_file.write_text(SENTINEL)
    clients = [
        EdgeLBClient(stub.url, token=StaticToken(SENTINEL), read_timeout=0.2),
        EdgeLBClient(stub.url, token=FileToken(token_file), read_timeout=0.2),
    ]
    texts = []
    for client in clients:
        texts.append(repr(client))
        texts.append(repr(client.token_source))
        for name in [f"p{i}" for i in range(7)] + ["text", "slow", "reset"]:
            with pytest.raises(EdgeLBError) as info:
                client.get_pool(name)
            texts += [str(info.value), repr(info.value), info.value.message]
        refused = EdgeLBClient(f"http://127.0.0.1:{free_port()}", token=client.token_source)
        with pytest.raises(Unavailable) as info:
            refused.list_pools()
        texts += [str(info.value), repr(refused)]
    texts.append(caplog.text)
    assert any("<redacted>" in t for t in texts)  # the echoes were there, and scrubbed
    assert not [t for t in texts if SENTINEL in t]
    assert "Authorization" not in caplog.text


# --- client_from_options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "base_url"),
    [
        ({"url": "https://dcos.example/service/edgelb/"}, "https://dcos.example/service/edgelb"),
        ({"url": "http://edgelb:8080", "host": "ignored", "scheme": "https"}, "http://edgelb:8080"),
        (
            {"host": "api.edgelb.marathon.l4lb.thisdcos.directory"},
            "http://api.edgelb.marathon.l4lb.thisdcos.directory",
        ),
        (
            {"host": "dcos.example", "scheme": "https", "path": "/service/edgelb"},
            "https://dcos.example/service/edgelb",
        ),
        (
            {"host": "dcos.example", "scheme": "HTTPS", "path": "service/edgelb/"},
            "https://dcos.example/service/edgelb",
        ),
        ({"host": "127.0.0.1:9999", "path": "/"}, "http://127.0.0.1:9999"),
    ],
)
def test_options_build_the_base_url(options, base_url):
    assert client_from_options(**options).base_url == base_url


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "give the EdgeLB url or host"),
        ({"host": "h", "scheme": "ftp"}, "scheme must be http or https, not 'ftp'"),
        ({"url": "ftp://h/x"}, "scheme must be http or https, not 'ftp'"),
        ({"url": "edgelb:8080"}, "scheme must be http or https"),
        ({"url": "http://"}, "has no host"),
        ({"url": f"http://user:{SENTINEL}@h/"}, "must not carry credentials"),
        ({"host": "http://h"}, "host name with an optional port"),
        ({"host": "h", "insecure_skip_tls_verify": True, "ca_bundle": "/etc/ssl/ca.pem"}, "contradict"),
        ({"host": "h", "ca_bundle": "/nonexistent/ca.pem"}, "is not a readable file"),
        ({"host": "h", "token_file": "t", "service_account_secret_file": "s"}, "not both"),
    ],
)
def test_bad_options_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message) as info:
        client_from_options(**options)
    assert SENTINEL not in str(info.value)


def test_options_choose_the_verify_value(tmp_path, stub, monkeypatch):
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")
    assert client_from_options(host="h").verify is True
    assert client_from_options(host="h", ca_bundle=str(ca)).verify == str(ca)
    assert client_from_options(host="h", insecure_skip_tls_verify=True).verify is False

    seen = []
    original = requests.adapters.HTTPAdapter.send

    def spy(self, request, **kwargs):
        seen.append(kwargs["verify"])
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", spy)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    stub.script("GET", "/ping", Reply(200, "pong"))
    client_from_options(url=stub.url).ping()
    client_from_options(url=stub.url, insecure_skip_tls_verify=True).ping()
    assert seen == [True, False]


def test_options_choose_the_token_source(tmp_path, monkeypatch):
    monkeypatch.delenv("DKLB_EDGELB_TOKEN", raising=False)
    assert client_from_options(host="h").token_source is None
    monkeypatch.setenv("DKLB_EDGELB_TOKEN", SENTINEL)
    env = client_from_options(host="h", scheme="https").token_source
    assert isinstance(env, EnvToken) and env.token() == SENTINEL
    monkeypatch.setenv("OTHER_VAR", "x")
    assert (
        present(client_from_options(host="h", scheme="https", token_env="OTHER_VAR").token_source).token()
        == "x"
    )
    (tmp_path / "t").write_text("from-file\n")
    ft = client_from_options(host="h", scheme="https", token_file=str(tmp_path / "t")).token_source
    assert isinstance(ft, FileToken) and ft.token() == "from-file"
    assert SENTINEL not in repr(client_from_options(host="h", scheme="https"))


def test_insecure_logs_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="dklb.edgelb")
    client_from_options(host="h", insecure_skip_tls_verify=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "verification" in warnings[0].getMessage()


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made now (no key material in the repository)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def tls_stub(self_signed) -> Iterator[StubServer]:
    cert, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = StubServer(tls=ctx).start()
    server.script("GET", "/ping", Reply(200, "pong"))
    yield server
    server.stop()


def test_tls_is_verified_by_default(tls_stub):
    with pytest.raises(Unavailable, match="certificate verify failed") as info:
        client_from_options(url=tls_stub.url).ping()
    assert info.value.status is None


def test_tls_with_the_ca_bundle_succeeds(tls_stub, self_signed):
    cert, _ = self_signed
    assert client_from_options(url=tls_stub.url, ca_bundle=str(cert)).ping() == "pong"
    host, port = tls_stub.url.removeprefix("https://").split(":")
    via_host = client_from_options(host=f"{host}:{port}", scheme="https", ca_bundle=str(cert))
    assert via_host.ping() == "pong"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_insecure_skip_verify_succeeds(tls_stub):
    assert client_from_options(url=tls_stub.url, insecure_skip_tls_verify=True).ping() == "pong"
