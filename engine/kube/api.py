"""The connection to the Kubernetes API server: one ``ApiClient`` shared by the adapter and watchers.

``dklb run`` calls ``api_client`` once; the client it returns is handed to ``KubeAdapter`` (the
writes state handlers make through the ``Kube`` port) and to the ``Watcher`` threads (the reads
that feed ``Controller.observe``). Every request made through it is reported to ``on_request``
(verb, resource, HTTP status, seconds), which is where the Prometheus metrics hook in.

Everything dklb exchanges with the API server is plain JSON dicts: every request goes through
``request`` (never a generated ``CoreV1Api`` method, whose module alone is ~20 MB of RSS) and
callers decode the body themselves (``response_json``), so no generated model class ever stands
between the API's JSON and the engine.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import kubernetes.client
import kubernetes.config
from kubernetes.client import ApiClient, ApiException
from urllib3.exceptions import InsecureRequestWarning

if TYPE_CHECKING:
    # Only for annotations: the generated module costs ~22 MB of RSS once imported, and nothing
    # in the controller calls a generated method (``request`` does every call).
    from kubernetes.client import CoreV1Api

log = logging.getLogger("dklb.kube")

OnRequest = Callable[[str, str, int, float], None]

JSON = "application/json"

# Status reported to ``on_request`` when no HTTP response arrived (connection refused, timeout).
NO_RESPONSE = 0


def api_client(kubeconfig: str | None = None, *, on_request: OnRequest | None = None) -> ApiClient:
    """An API client configured from, in order: ``kubeconfig``, the in-cluster service account
    (when ``KUBERNETES_SERVICE_HOST`` is set, i.e. inside a Pod), the default kubeconfig
    (``$KUBECONFIG`` or ``~/.kube/config``)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    hook = configuration.refresh_api_key_hook
    if hook is not None:
        configuration.refresh_api_key_hook = _at_most_every(REFRESH_SECONDS, hook)
    if not configuration.verify_ssl:
        # Only a kubeconfig saying insecure-skip-tls-verify gets here (the in-cluster config always
        # verifies); the user asked for it, so do not warn on every request, and only for this host.
        host = urlsplit(configuration.host).hostname or ""
        warnings.filterwarnings(
            "ignore",
            message=rf"Unverified HTTPS request is being made to host '{re.escape(host)}'",
            category=InsecureRequestWarning,
        )
    if on_request is None:
        return ApiClient(configuration)
    return _ObservedApiClient(configuration, on_request=on_request)


# The kubeconfig loader's credential hook runs before every request and re-applies the whole
# configuration, re-reading the proxy environment: more CPU than the request. Credentials expire in
# minutes; checking them once a second is as good.
REFRESH_SECONDS = 1.0


def _at_most_every(seconds: float, hook: Callable[[Any], None]) -> Callable[[Any], None]:
    lock = threading.Lock()
    last = [-seconds]

    def throttled(configuration: Any) -> None:
        now = time.monotonic()
        with lock:
            if now - last[0] < seconds:
                return
            last[0] = now
        hook(configuration)
        # The kubeconfig loader's hook installs itself again each time it runs.
        configuration.refresh_api_key_hook = throttled

    return throttled


def core_v1(api: ApiClient | CoreV1Api) -> CoreV1Api:
    """A ``CoreV1Api`` over ``api`` (for the benchmark's baseline; dklb itself uses ``request``)."""
    from kubernetes.client import CoreV1Api

    return api if isinstance(api, CoreV1Api) else CoreV1Api(api)


def client_of(api: ApiClient | CoreV1Api) -> ApiClient:
    """The ``ApiClient`` under ``api``: callers (tests, tools) may hand a generated API object
    (``CoreV1Api(client)``) wherever a client is expected; its ``api_client`` is the same thing."""
    client: ApiClient = getattr(api, "api_client", None) or api  # type: ignore[assignment]
    return client


def query_string(params: dict[str, Any]) -> str:
    """``params`` (in their order, None values left out, booleans as ``true``/``false``) as a URL
    query quoted as the generated methods quote it (``/`` kept); empty for no parameters."""
    pairs = [
        f"{k}={quote(str(v).lower() if isinstance(v, bool) else str(v))}"
        for k, v in params.items()
        if v is not None
    ]
    return "?" + "&".join(pairs) if pairs else ""


def request(
    api: ApiClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str | None = None,
    timeout: float | tuple[float, float],
    path_params: tuple[str, ...] = (),
    query: dict[str, Any] | None = None,
) -> Any:
    """One request through ``api`` without the generated method: ``path`` (``{}`` filled with the
    quoted ``path_params``, then ``query``) relative to the API server, ``body`` sent as JSON;
    returns the raw, unread response (read it with ``response_json``, or stream it) or raises
    ``ApiException`` as the generated method with ``_preload_content=False`` does for a non-2xx
    status.

    Every Kubernetes request of the controller comes here (the watch's LIST and WATCH, the reads,
    the finalizer patch, the status, Events): the generated method validates its arguments with
    pydantic and walks the body to serialize it, which cost more CPU than the request, and its
    module alone is ~22 MB of RSS. Everything else is the generated path's own: ``call_api`` (so
    ``on_request`` sees it), the same urllib3 pool with the same TLS settings, the same bearer
    token through ``update_params_for_auth`` (which runs the credential refresh hook), the same
    default headers (User-Agent).
    """
    configuration = api.configuration
    safe = configuration.safe_chars_for_path_param
    url = configuration.host + path.format(*(quote(p, safe=safe) for p in path_params))
    url += query_string(query or {})
    headers: dict[str, Any] = {**api.default_headers, "Accept": JSON}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if api.cookie:
        headers["Cookie"] = api.cookie
    api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
    response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response.response


def response_json(response: Any) -> dict[str, Any]:
    """The body of a ``_preload_content=False`` response as the API's JSON."""
    return json.loads(response.data)


class _ObservedApiClient(ApiClient):
    """An ``ApiClient`` that reports every request it makes.

    ``call_api`` is the single place every generated API method goes through, and it sees the
    HTTP response before the generated code turns a non-2xx status into an ``ApiException``.
    For a streaming request (a watch) the time measured is the time to the response headers.
    """

    def __init__(self, configuration: kubernetes.client.Configuration, *, on_request: OnRequest) -> None:
        super().__init__(configuration)
        self._on_request = on_request

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        status = NO_RESPONSE
        try:
            response = super().call_api(method, url, *args, **kwargs)
            status = int(response.status)
            return response
        except kubernetes.client.ApiException as e:
            status = int(e.status or NO_RESPONSE)
            raise
        finally:
            verb, resource = describe_request(method, url)
            try:
                self._on_request(verb, resource, status, time.monotonic() - start)
            except Exception:
                # Metrics must never break a request.
                log.warning("on_request hook failed", exc_info=True)


# Subresources of a namespace (``/api/v1/namespaces/{name}/status``), not namespaced collections.
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


def describe_request(method: str, url: str) -> tuple[str, str]:
    """The Kubernetes verb and resource of a request, as the API server's own metrics name them.

    ``GET /api/v1/namespaces/a/services/b/status`` → ``("get", "services/status")``;
    ``GET /api/v1/services?watch=true`` → ``("watch", "services")``.
    """
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["api"]:
        rest = segments[2:]
    elif segments[:1] == ["apis"]:
        rest = segments[3:]
    else:
        return method.lower(), parts.path
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in _NAMESPACE_SUBRESOURCES:
        rest = rest[2:]
    resource = rest[0] if rest else ""
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    named = len(rest) >= 2
    query = parse_qs(parts.query)
    method = method.upper()
    if method == "GET":
        watching = query.get("watch", [""])[0] in ("true", "1")
        verb = "watch" if watching else "get" if named else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
    return verb, resource
