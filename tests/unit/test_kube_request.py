"""``engine.kube.api.request``: the hot writes' path around the generated client's methods."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest
from kubernetes.client import ApiClient, ApiException

from engine.kube.adapter import KubeAdapter
from engine.kube.api import client_of, query_string, request
from engine.kube.watch import Watcher


class Answer:
    """What ``ApiClient.call_api`` returns (a ``RESTResponse``), with a fixed status."""

    def __init__(self, status: int, data: bytes = b"{}") -> None:
        self.status = status
        self.reason = "Reason"
        self.data = data
        self.headers: dict[str, str] = {}
        self.response = self

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> dict[str, str]:
        return {}


def client(status: int, sent: list[dict[str, Any]], refreshed: list[int]) -> ApiClient:
    configuration = kubernetes.client.Configuration()
    configuration.host = "https://apiserver:6443"
    configuration.api_key = {"BearerToken": "t0ken"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    configuration.refresh_api_key_hook = lambda _c: refreshed.append(1)  # type: ignore[assignment]
    api = ApiClient(configuration)

    def call_api(method: str, url: str, **kwargs: Any) -> Answer:
        sent.append({"method": method, "url": url, **kwargs})
        return Answer(status)

    api.call_api = call_api  # type: ignore[method-assign, assignment]
    return api


@pytest.mark.parametrize(
    ("path", "params", "url"),
    [
        ("/api/v1/namespaces/{}/services/{}", ("ns", "web"), "/api/v1/namespaces/ns/services/web"),
        ("/api/v1/namespaces/{}/events", ("ns",), "/api/v1/namespaces/ns/events"),
        # Quoted as the generated client quotes a path parameter (no safe characters).
        ("/api/v1/namespaces/{}/events/{}", ("ns", "a/b c"), "/api/v1/namespaces/ns/events/a%2Fb%20c"),
    ],
)
def test_the_request_is_the_generated_clients(path: str, params: tuple[str, ...], url: str) -> None:
    sent: list[dict[str, Any]] = []
    refreshed: list[int] = []
    api = client(200, sent, refreshed)
    body = [{"op": "test", "path": "/metadata/uid", "value": "u"}]
    answer = request(
        api, "PATCH", path, body, content_type="application/json-patch+json", timeout=7.0, path_params=params
    )
    assert answer.data == b"{}"
    [call] = sent
    assert call["url"] == "https://apiserver:6443" + url
    assert call["body"] is body
    assert call["_request_timeout"] == 7.0
    headers = call["header_params"]
    assert headers["authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json-patch+json"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == api.user_agent
    assert refreshed == [1]  # the credential hook ran, as before every generated request


@pytest.mark.parametrize("status", [200, 201, 404, 409, 422, 429, 500])
def test_a_status_outside_2xx_is_the_generated_clients_api_exception(status: int) -> None:
    api = client(status, [], [])
    if 200 <= status <= 299:
        assert (
            request(
                api,
                "POST",
                "/api/v1/namespaces/{}/events",
                {},
                content_type="application/json",
                timeout=1.0,
                path_params=("ns",),
            ).status
            == status
        )
        return
    with pytest.raises(ApiException) as raised:
        request(
            api,
            "POST",
            "/api/v1/namespaces/{}/events",
            {},
            content_type="application/json",
            timeout=1.0,
            path_params=("ns",),
        )
    assert raised.value.status == status


# The watcher's requests and the adapter's read, against what the generated methods they replaced
# send: the same URL (path and query), the same headers, the same timeout.
def recording(sent: list[dict[str, Any]]) -> ApiClient:
    """A client recording each request in ``call_api``'s own signature (the generated methods
    pass its arguments by position)."""
    api = client(200, [], [])

    def call_api(
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Answer:
        sent.append(
            {
                "method": method,
                "url": url,
                "header_params": header_params,
                "body": body,
                "_request_timeout": _request_timeout,
            }
        )
        return Answer(200)

    api.call_api = call_api  # type: ignore[method-assign, assignment]
    return api


WATCH_CALLS = [
    {"limit": 500},
    {"limit": 2, "_continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MX0+/="},
    {
        "watch": True,
        "allow_watch_bookmarks": True,
        "resource_version": "12345",
        "timeout_seconds": 300,
        "_request_timeout": (30.0, 330.0),
    },
]


@pytest.mark.parametrize("resource", ["services", "nodes"])
@pytest.mark.parametrize("kwargs", WATCH_CALLS)
def test_the_watchers_requests_are_the_generated_list_methods(resource: str, kwargs: dict[str, Any]) -> None:
    generated: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    kwargs = {"_request_timeout": 30.0, **kwargs}
    method = "list_service_for_all_namespaces" if resource == "services" else "list_node"
    getattr(kubernetes.client.CoreV1Api(recording(generated)), method)(_preload_content=False, **kwargs)
    watcher = Watcher(recording(ours), resource=resource, on_upsert=print, on_delete=print)
    watcher._call(_preload_content=False, **kwargs)
    [expected], [call] = generated, ours
    assert call["method"] == expected["method"] == "GET"
    assert call["url"] == expected["url"]
    assert call["_request_timeout"] == expected["_request_timeout"]
    assert call["body"] is expected["body"] is None
    assert call["header_params"] == expected["header_params"]


def test_the_adapters_read_is_the_generated_read() -> None:
    generated: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    kubernetes.client.CoreV1Api(recording(generated)).read_namespaced_service(
        "web", "ns", _preload_content=False, _request_timeout=5.0
    )
    assert KubeAdapter(recording(ours), timeout=5.0).get("ns", "web") == {}
    [expected], [call] = generated, ours
    for field in ("method", "url", "_request_timeout", "header_params"):
        assert call[field] == expected[field], field


def test_a_generated_api_object_is_accepted_for_its_client() -> None:
    api = client(200, [], [])
    assert client_of(api) is api
    assert client_of(kubernetes.client.CoreV1Api(api)) is api


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ({}, ""),
        ({"limit": None}, ""),
        ({"limit": 500}, "?limit=500"),
        ({"watch": True, "allowWatchBookmarks": False}, "?watch=true&allowWatchBookmarks=false"),
        ({"continue": "a+b/c= d"}, "?continue=a%2Bb/c%3D%20d"),
    ],
)
def test_query_string(params: dict[str, Any], query: str) -> None:
    assert query_string(params) == query
