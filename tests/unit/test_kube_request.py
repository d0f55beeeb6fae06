"""``engine.kube.api.request``: the hot writes' path around the generated client's methods."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest
from kubernetes.client import ApiClient, ApiException

from engine.kube.api import request


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
