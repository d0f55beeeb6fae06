"""The HTTP client of the EdgeLB V2 API: the production implementation of the EdgeLB port.

Data flow: the reconciler hands state handlers an ``engine.edgelb.port.EdgeLB``; in production
(and against the local EdgeLB of the demo) that is an ``EdgeLBClient`` built by
``client_from_options`` from the command-line flags. Each call is one HTTP request (two when a
401 makes it renew its token) to the EdgeLB V2 API (its contract: ``shared/edgelb-api.md`` of the
design documents); every answer that is not a success becomes one of the typed errors of
``engine.edgelb.errors`` which the handlers branch on. The client never retries on its own (except
that single re-login): the engine owns retries, with backoff persisted in its store, so a crash
does not reset them. ``iter_pools`` decodes the listing as it streams in (``engine.edgelb.stream``).

``on_response(method, route_template, status_or_0, seconds)`` is called after every HTTP
request; it feeds the Prometheus metrics (``engine.telemetry.metrics``), hence route templates
(``/v2/pools/{name}``) rather than paths, which would make one time series per pool.

Bodies: a pool is sent without ``packageName``/``packageVersion`` (``schema.SERVER_ONLY_KEYS``), which
EdgeLB fills in from the pool package it has: a pool read back and sent again would otherwise ask for
the package version it was installed with, which an upgraded EdgeLB no longer has (a 500 on every PUT).
Refusals: 400 (a malformed body) and 422 (a value outside the schema: enum, minimum, missing body,
with go-openapi's 6xx code in the body) are both ``Invalid``, carrying EdgeLB's message.

Secrets: the bearer token travels only in the ``Authorization`` header; it is never logged,
never part of an error message (server messages echoing it are scrubbed) and never in a repr.
``client_from_options`` (the one way the command line builds a client) refuses any credential
(token flag, token file, ``DKLB_EDGELB_TOKEN``, service account) with a plain ``http://`` EdgeLB
URL or login endpoint unless ``allow_insecure_http`` (``--edgelb-allow-insecure-http``), and
then logs a WARNING: "TLS verified by default" means nothing when there is no TLS. The
in-cluster default (plain HTTP to EdgeLB's DC/OS-internal address) carries no credential.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from engine.edgelb.auth import (
    ALLOW_INSECURE_HTTP_FLAG,
    EnvToken,
    FileToken,
    LoginError,
    ServiceAccountLogin,
    StaticToken,
    TokenSource,
    plaintext_refusal,
    scrub,
    server_detail,
    transport_reason,
)
from engine.edgelb.credentials import plaintext_credential
from engine.edgelb.errors import Conflict, EdgeLBError, Invalid, NotFound, Unavailable, Unexpected
from engine.edgelb.port import Pool
from engine.edgelb.schema import SERVER_ONLY_KEYS
from engine.edgelb.stream import response_items

log = logging.getLogger("dklb.edgelb")

OnResponse = Callable[[str, str, int, float], None]

#: The in-cluster address of EdgeLB's API in DC/OS (the Go dklb's ``--edgelb-host`` default).
DEFAULT_IN_CLUSTER_HOST = "api.edgelb.marathon.l4lb.thisdcos.directory"

_SCHEMES = ("http", "https")


def _check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(f"the EdgeLB URL scheme must be http or https, not {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise ValueError("the EdgeLB URL has no host")
    if parts.username is not None or parts.password is not None:
        # Not echoed: the URL carries a credential. Tokens belong in a token source.
        raise ValueError("the EdgeLB URL must not carry credentials; use a token file or a service account")
    if parts.query or parts.fragment:
        raise ValueError("the EdgeLB URL must not have a query or a fragment")
    # Joining is plain concatenation (urljoin would drop a path prefix without trailing slash).
    return base_url.rstrip("/")


class EdgeLBClient:
    """EdgeLB V2 API over HTTP(S); satisfies ``engine.edgelb.port.EdgeLB`` and adds the other calls."""

    def __init__(
        self,
        base_url: str,
        *,
        token: TokenSource | None = None,
        verify: bool | str = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        on_response: OnResponse | None = None,
    ) -> None:
        self._base = _check_base_url(base_url)
        self._token_source = token
        self._verify = verify
        self._timeout = (connect_timeout, read_timeout)
        self._on_response = on_response
        # Serializes renewals so concurrent 401s cause one re-login, not one per worker.
        self._renew_lock = threading.Lock()
        # Known token values, scrubbed from anything the server sends back into a message.
        self._seen_tokens: set[str] = set()
        # requests' default adapter does not retry (Retry(0, read=False)): exactly what we want.
        self._session = requests.Session()
        # The environment (proxies, no_proxy, CA bundle) is read once, here: left to requests, it
        # is scanned again on every request, which cost more CPU than the request itself.
        self._session.proxies = requests.utils.get_environ_proxies(self._base)
        if verify is True:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._session.trust_env = False
        self._session.verify = verify
        self._send_verify = verify
        # Straight to the transport adapter (``_prepared``): Session.request's merging, cookies, hooks
        # and redirects (off anyway) were ~40 % of a request's CPU. The URL is normalized once.
        self._adapter: BaseAdapter = self._session.get_adapter(self._base + "/")
        self._prefix = str(requests.Request("GET", self._base + "/").prepare().url).rstrip("/")
        self._headers = {k: str(v) for k, v in self._session.headers.items()}  # requests' defaults: str
        if verify is False:
            log.warning("TLS certificate verification of the EdgeLB API at %s is disabled", self._base)

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def verify(self) -> bool | str:
        return self._verify

    @property
    def token_source(self) -> TokenSource | None:
        return self._token_source

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> EdgeLBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EdgeLBClient(base_url={self._base!r}, token={self._token_source!r}, verify={self._verify!r})"

    def scrub(self, text: str) -> str:
        return scrub(text, *self._seen_tokens)

    def _get_token(self, renew: bool, stale: str | None) -> str | None:
        source = self._token_source
        if source is None:
            return None
        try:
            if not renew:
                value = source.token()
            else:
                with self._renew_lock:
                    # Another thread may have renewed while we waited: use its token.
                    current = source.token()
                    value = current if current and current != stale else source.renew()
        except EdgeLBError:
            raise
        except Exception as exc:
            # The port promises EdgeLB errors only; the type is enough (the text could hold a secret).
            raise LoginError(f"the EdgeLB token source failed: {type(exc).__name__}") from None
        if value:
            self._seen_tokens.add(value)
        return value

    def _report(self, method: str, route: str, path: str, status: int, started: float) -> None:
        seconds = time.monotonic() - started
        log.debug("%s %s -> %s in %.1f ms", method, path, status or "no answer", seconds * 1000)
        if self._on_response is not None:
            try:
                self._on_response(method, route, status, seconds)
            except Exception:
                # Metrics must never turn a good EdgeLB answer into a failure.
                log.exception("on_response callback failed for %s %s", method, route)

    def _send(
        self, method: str, route: str, path: str, body: Any, token: str | None, stream: bool = False
    ) -> requests.Response:
        started = time.monotonic()
        what = f"{method} {path}"
        try:
            # The adapter never follows a redirect (the API never redirects; following one could
            # hand the token to another endpoint): a 3xx is an answer like any other.
            resp = self._adapter.send(
                self._prepared(method, path, body, token),
                timeout=self._timeout,
                verify=self._send_verify,
                proxies=self._session.proxies,
                stream=stream,
            )
            if not stream or not 200 <= resp.status_code < 300:
                resp.content  # noqa: B018  (read now, as Session.request does: a drop mid-answer is caught below)
        except requests.ConnectTimeout:
            self._report(method, route, path, 0, started)
            raise Unavailable(f"{what}: could not connect within {self._timeout[0]}s") from None
        except requests.ReadTimeout:
            self._report(method, route, path, 0, started)
            raise Unavailable(f"{what}: no answer within the read timeout of {self._timeout[1]}s") from None
        except requests.exceptions.SSLError as exc:
            self._report(method, route, path, 0, started)
            raise Unavailable(f"{what}: TLS error: {self.scrub(transport_reason(exc))}") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # Refused, reset, DNS failure, connection dropped mid-answer.
            self._report(method, route, path, 0, started)
            raise Unavailable(f"{what}: connection failed: {self.scrub(transport_reason(exc))}") from None
        except requests.RequestException as exc:
            self._report(method, route, path, 0, started)
            raise Unexpected(f"{what}: request failed: {self.scrub(transport_reason(exc))}") from None
        self._report(method, route, path, resp.status_code, started)
        return resp

    def _prepared(self, method: str, path: str, body: Any, token: str | None) -> requests.PreparedRequest:
        """What Session.request would send: default headers, JSON body, bearer header, no cookie."""
        request = requests.PreparedRequest()
        request.method = method
        request.url = self._prefix + path
        headers = CaseInsensitiveDict(self._headers)
        data: bytes | None = None
        if body is not None:
            try:
                data = json.dumps(body, allow_nan=False).encode("utf-8")
            except ValueError as exc:  # NaN or infinity: requests' own refusal, mapped below
                raise requests.exceptions.InvalidJSONError(exc) from None
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(data))
        elif method not in ("GET", "HEAD"):
            headers["Content-Length"] = "0"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request.headers = headers
        request.body = data
        return request

    def _request(
        self, method: str, route: str, path: str, body: Any = None, stream: bool = False
    ) -> requests.Response:
        token = self._get_token(renew=False, stale=None)
        resp = self._send(method, route, path, body, token, stream)
        if resp.status_code == 401 and self._token_source is not None:
            # Tokens expire and rotate: log in again once, then give up (the engine retries later).
            resp.close()
            token = self._get_token(renew=True, stale=token)
            resp = self._send(method, route, path, body, token, stream)
            if resp.status_code == 401:
                raise Unexpected(
                    f"{method} {path}: 401 authentication failed even after renewing the token", status=401
                )
        if 200 <= resp.status_code < 300:
            return resp
        raise self._error(method, path, resp)

    def _error(self, method: str, path: str, resp: requests.Response) -> EdgeLBError:
        status = resp.status_code
        detail = self.scrub(server_detail(resp))
        message = f"{method} {path}: {status} {detail}".rstrip()
        if status == 401:
            return Unexpected(f"{message} (authentication failed: no token configured)", status=status)
        cls: type[EdgeLBError]
        if status == 404:
            cls = NotFound
        elif status == 409:
            cls = Conflict
        elif status in (400, 422):
            cls = Invalid
        elif status >= 500:
            cls = Unavailable
        else:
            cls = Unexpected
        return cls(message, status=status)

    @staticmethod
    def _pool_path(name: object, suffix: str = "") -> str:
        if not isinstance(name, str) or not name:
            # An empty name would address the pool list: refuse before sending anything.
            raise Invalid(f"a pool name must be a non-empty string, not {name!r}")
        return f"/v2/pools/{quote(name, safe='')}{suffix}"

    def _json(self, method: str, path: str, resp: requests.Response, kind: type) -> Any:
        try:
            value = resp.json()
        except ValueError:
            raise Unexpected(
                f"{method} {path}: {resp.status_code} answer is not JSON", status=resp.status_code
            ) from None
        if not isinstance(value, kind):
            raise Unexpected(
                f"{method} {path}: {resp.status_code} answer is a JSON {type(value).__name__}, "
                f"expected {kind.__name__}",
                status=resp.status_code,
            )
        return value

    @staticmethod
    def _text(resp: requests.Response) -> str:
        # Text answers (pong, version, haproxy.cfg) are UTF-8; requests would assume Latin-1 for a
        # text/* type without charset.
        if "charset" not in resp.headers.get("Content-Type", ""):
            resp.encoding = "utf-8"
        return resp.text

    # --- the API ----------------------------------------------------------------------------

    def ping(self) -> str:
        return self._text(self._request("GET", "/ping", "/ping")).strip()

    def version(self) -> str:
        return self._text(self._request("GET", "/version", "/version")).strip()

    def list_pools(self) -> list[Pool]:
        path = "/v2/pools"
        return self._json("GET", path, self._request("GET", path, path), list)

    def iter_pools(self) -> Iterator[Pool]:
        """``list_pools``, decoded one pool at a time as the answer streams in (reported to
        ``on_response`` once its headers are in): the whole listing is never held at once."""
        resp = self._request("GET", "/v2/pools", "/v2/pools", stream=True)
        return response_items(resp, what="GET /v2/pools", scrub=self.scrub)

    def get_pool(self, name: str) -> Pool:
        path = self._pool_path(name)
        return self._json("GET", path, self._request("GET", "/v2/pools/{name}", path), dict)

    def create_pool(self, pool: Pool) -> Pool:
        path = "/v2/pools"
        return self._json("POST", path, self._request("POST", path, path, _body(pool)), dict)

    def update_pool(self, pool: Pool) -> Pool:
        path = self._pool_path(pool.get("name") if isinstance(pool, dict) else None)
        return self._json("PUT", path, self._request("PUT", "/v2/pools/{name}", path, _body(pool)), dict)

    def delete_pool(self, name: str) -> None:
        path = self._pool_path(name)
        self._request("DELETE", "/v2/pools/{name}", path).close()

    def get_metadata(self, name: str) -> dict[str, Any]:
        path = self._pool_path(name, "/metadata")
        return self._json("GET", path, self._request("GET", "/v2/pools/{name}/metadata", path), dict)

    def get_lbconfig(self, name: str) -> str:
        path = self._pool_path(name, "/lbconfig")
        return self._text(self._request("GET", "/v2/pools/{name}/lbconfig", path))

    def get_config(self) -> dict[str, Any]:
        path = "/v2/config"
        return self._json("GET", path, self._request("GET", path, path), dict)


def _body(pool: Pool) -> Any:
    # EdgeLB chooses the pool package: see the module docstring.
    if not isinstance(pool, dict):
        return pool
    return {key: value for key, value in pool.items() if key not in SERVER_ONLY_KEYS}


def client_from_options(
    *,
    url: str | None = None,
    host: str | None = None,
    scheme: str = "http",
    path: str = "",
    token_file: str | None = None,
    token_env: str = "DKLB_EDGELB_TOKEN",
    service_account_secret_file: str | None = None,
    ca_bundle: str | None = None,
    insecure_skip_tls_verify: bool = False,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    on_response: OnResponse | None = None,
    token_value: str | None = None,
    allow_insecure_http: bool = False,
) -> EdgeLBClient:
    """Build the client from command-line style options.

    The base URL is ``url`` when given, else ``<scheme>://<host><path>`` (the Go dklb's
    ``--edgelb-scheme``, ``--edgelb-host``, ``--edgelb-path``). The token source is the service
    account when its secret file is given, else the token file, else ``token_value`` (the Go
    dklb's ``--edgelb-bearer-token``), else the ``token_env`` variable when it is set, else none
    (in-cluster EdgeLB needs no token). TLS is verified unless
    ``insecure_skip_tls_verify``; ``ca_bundle`` names the CA file to verify against.
    Raises ValueError for contradictory or malformed options and for a credential over plain
    HTTP without ``allow_insecure_http`` (see ``plaintext_credential``), LoginError for an
    unusable service-account secret (or its plain-HTTP login endpoint).
    """
    base_url = base_url_of(url=url, host=host, scheme=scheme, path=path)

    if insecure_skip_tls_verify and ca_bundle:
        raise ValueError("a CA bundle and skipping TLS verification contradict each other: give only one")
    verify: bool | str = True
    if insecure_skip_tls_verify:
        verify = False
    elif ca_bundle:
        if not os.path.isfile(ca_bundle) or not os.access(ca_bundle, os.R_OK):
            raise ValueError(f"the CA bundle {ca_bundle} is not a readable file")
        verify = ca_bundle

    if service_account_secret_file and token_file:
        raise ValueError("give either a token file or a service account secret file, not both")
    if token_value and (service_account_secret_file or token_file):
        raise ValueError("give either a token or a token file or service account secret file, not both")
    credential = plaintext_credential(
        base_url,
        token_file=token_file,
        token_value=token_value,
        service_account_secret_file=service_account_secret_file,
        token_env=token_env,
    )
    if credential is not None:
        if not allow_insecure_http:
            raise ValueError(plaintext_refusal(credential, base_url))
        log.warning(
            "%s goes to EdgeLB at %s over plain HTTP, readable by anyone on the path (%s)",
            credential,
            base_url,
            ALLOW_INSECURE_HTTP_FLAG,
        )
    token: TokenSource | None = None
    if service_account_secret_file:
        token = ServiceAccountLogin(
            service_account_secret_file,
            verify=verify,
            timeout=connect_timeout + read_timeout,
            allow_insecure_http=allow_insecure_http,
        )
    elif token_file:
        token = FileToken(token_file)
    elif token_value:
        token = StaticToken(token_value)
    elif token_env and os.environ.get(token_env):
        token = EnvToken(token_env)

    return EdgeLBClient(
        base_url,
        token=token,
        verify=verify,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        on_response=on_response,
    )


def base_url_of(*, url: str | None, host: str | None, scheme: str = "http", path: str = "") -> str:
    """``url`` when given, else ``<scheme>://<host><path>``; ValueError for a malformed part."""
    if url:
        return url
    if not host:
        raise ValueError(f"give the EdgeLB url or host (in DC/OS, usually {DEFAULT_IN_CLUSTER_HOST})")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"the EdgeLB scheme must be http or https, not {scheme!r}")
    if "/" in host or "@" in host:
        raise ValueError("the EdgeLB host must be a host name with an optional port, without scheme or path")
    prefix = path.strip("/")
    return f"{scheme}://{host}" + (f"/{prefix}" if prefix else "")


@dataclass(frozen=True)
class ClientOptions:
    """How to reach EdgeLB, as the command line says it (``engine.cli.options.edgelb``)."""

    url: str | None = None
    host: str | None = None
    scheme: str = "http"
    path: str = ""
    token_file: str | None = None
    service_account_secret_file: str | None = None
    ca_bundle: str | None = None
    insecure_skip_tls_verify: bool = False
    read_timeout: float = 30.0
    # A secret: never in a repr (AppConfig's, this one's).
    token_value: str | None = field(default=None, repr=False)
    allow_insecure_http: bool = False

    def client(self, *, on_response: OnResponse | None = None) -> EdgeLBClient:
        """``client_from_options`` with these options; raises what it raises."""
        return client_from_options(**asdict(self), on_response=on_response)
