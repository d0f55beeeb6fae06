"""A Kubernetes API server that does not answer is an outage, not a bug (``engine.runtime.reconciler``).

Where it sits: the reconciler turns whatever a state handler raises into a retry. When the cause
is the Kubernetes API (no connection, a reset, a timeout, retries exhausted, a 5xx or a 429) the
retry's reason is ``KubernetesUnavailable``: one WARNING line naming the error, the traceback
only at DEBUG, no Event (it would go to the same API server), and the state's retry backoff.
Anything else stays a ``HandlerError`` logged with its traceback. Driven through the engine world
of ``tests.engine.harness`` with a fake Kubernetes whose writes raise, and once through the real
``KubeAdapter`` against a loopback port nobody listens on.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import urllib3

from engine.kube.adapter import KubeAdapter
from engine.kube.errors import KUBERNETES_UNAVAILABLE, kubernetes_unavailable
from tests.engine.harness import World
from tests.fakes.kube import FakeKube, make_service

KEY = "default/redis"


class DownKube(FakeKube):
    """A fake Kubernetes whose writes raise ``error`` while it is set (the API server is down)."""

    def __init__(self, *, only_events: bool = False) -> None:
        super().__init__()
        self.error: BaseException | None = None
        self.only_events = only_events
        self.refused = 0

    def _fail(self, event: bool = False) -> None:
        if self.error is not None and (event or not self.only_events):
            self.refused += 1
            raise self.error

    def add_finalizer(self, service: Any, *, annotation: str | None = None) -> Any:
        self._fail()
        return super().add_finalizer(service, annotation=annotation)

    def event(self, service: Any, *, type: str, reason: str, message: str) -> None:
        self._fail(event=True)
        super().event(service, type=type, reason=reason, message=message)


def refused() -> urllib3.exceptions.MaxRetryError:
    # A stand-in for the connection, whose "<object object at 0x...>" repr heads the message.
    cause = urllib3.exceptions.NewConnectionError(
        object(),  # type: ignore[arg-type]
        "Failed to establish a new connection: [Errno 111] Connection refused",
    )
    # No pool: urllib3's own Retry.increment raises it so too (and ignores the same type error).
    return urllib3.exceptions.MaxRetryError(None, "/api/v1/namespaces/default/services/redis", cause)  # type: ignore[arg-type]


def chained() -> RuntimeError:
    try:
        raise refused()
    except urllib3.exceptions.MaxRetryError as exc:
        try:
            raise RuntimeError("patching the Service failed") from exc
        except RuntimeError as outer:
            return outer


UNAVAILABLE = {
    "MaxRetryError (connection refused)": (
        refused(),
        "MaxRetryError: NewConnectionError: Failed to establish",
    ),
    "NewConnectionError": (
        urllib3.exceptions.NewConnectionError(
            object(),  # type: ignore[arg-type]  # a stand-in for the connection (see refused)
            "Failed to establish a new connection: refused",
        ),
        "NewConnectionError",
    ),
    "ProtocolError (reset)": (
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
        "ProtocolError",
    ),
    # No pool, as urllib3 itself raises it where it has none (typed as if it always had one).
    "ReadTimeoutError": (urllib3.exceptions.ReadTimeoutError(None, "/api", "Read timed out."), "timed out"),  # type: ignore[arg-type]
    "ConnectionRefusedError": (ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError"),
    "ApiException 503": (kubernetes.client.ApiException(status=503, reason="Service Unavailable"), "503"),
    "ApiException 500": (kubernetes.client.ApiException(status=500, reason="Internal\nServer Error"), "500"),
    "ApiException 429": (kubernetes.client.ApiException(status=429, reason="Too Many Requests"), "429"),
    "raised from MaxRetryError": (chained(), "MaxRetryError"),
}

BUGS = {
    "KeyError": KeyError("metadata"),
    "ApiException 403": kubernetes.client.ApiException(status=403, reason="Forbidden"),
    "ApiException 422": kubernetes.client.ApiException(status=422, reason="Unprocessable Entity"),
    "ValueError": ValueError("not a bug of the API server"),
}


@pytest.mark.parametrize(("error", "named"), UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_kubernetes_unavailable_names_the_error_on_one_line(error: BaseException, named: str) -> None:
    message = kubernetes_unavailable(error)
    assert message is not None and message.startswith("the Kubernetes API server ")
    assert named in message and "\n" not in message and " object at 0x" not in message


@pytest.mark.parametrize("error", BUGS.values(), ids=BUGS.keys())
def test_anything_else_is_not_an_outage(error: BaseException) -> None:
    assert kubernetes_unavailable(error) is None


@pytest.mark.parametrize(("error", "named"), UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_a_handler_failing_on_an_unreachable_api_retries_with_backoff_and_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: BaseException, named: str
) -> None:
    kube = DownKube()
    world = World(tmp_path, kube=kube)
    kube.apply(make_service("redis"))
    kube.error = error
    caplog.set_level(logging.DEBUG, logger="dklb")
    world.sync_cache()
    backoff = world.lifecycle.states["Pending"].retry
    assert backoff is not None

    waits = []
    for attempt in (1, 2, 3):
        after = world.reconciler.reconcile(KEY)
        binding = world.binding(KEY)
        assert binding.state == "Pending" and binding.attempts == attempt
        assert binding.last_error is not None and named in binding.last_error
        assert after is not None
        raw = min(backoff.cap, backoff.base * backoff.factor ** (attempt - 1))
        assert raw * (1 - backoff.jitter) <= after <= raw * (1 + backoff.jitter), (attempt, after)
        waits.append(after)
        world.clock.advance(after)

    history = world.store.history(key=KEY, limit=None)
    failed = [e for e in history if e.trigger == "failed"]
    assert [e.reason for e in failed] == [KUBERNETES_UNAVAILABLE] * 3
    assert kube.refused == 3, "one refused write per attempt; no Event posted to the dead API server"
    assert kube.events_for(KEY) == []

    records = [r for r in caplog.records if r.name == "dklb.reconciler"]
    loud = [r for r in records if r.levelno >= logging.WARNING]
    assert len(loud) == 3 and all(r.levelno == logging.WARNING for r in loud)
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in loud)
    assert all(
        named in r.getMessage() and "handler of Pending for default/redis" in r.getMessage() for r in loud
    )
    assert sum(1 for r in records if r.levelno == logging.DEBUG and r.exc_info) == 3, "tracebacks at DEBUG"

    kube.error = None
    world.settle()
    assert world.binding(KEY).state == "Ready" and world.binding(KEY).attempts == 0
    world.assert_invariants()
    print(f"\n{type(error).__name__}: waits {[round(w, 2) for w in waits]} s")


@pytest.mark.parametrize("error", BUGS.values(), ids=BUGS.keys())
def test_a_genuine_bug_stays_a_handler_error_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: BaseException
) -> None:
    kube = DownKube()
    world = World(tmp_path, kube=kube)
    kube.apply(make_service("redis"))
    kube.error = error
    world.sync_cache()
    world.reconciler.reconcile(KEY)
    binding = world.binding(KEY)
    assert binding.state == "Pending" and binding.attempts == 1
    assert binding.last_error is not None and binding.last_error.startswith(type(error).__name__)
    assert [e.reason for e in world.store.history(key=KEY) if e.trigger == "failed"] == ["HandlerError"]
    errors = [r for r in caplog.records if r.name == "dklb.reconciler" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "handler of Pending failed for default/redis" in errors[0].getMessage()


def test_the_real_adapter_against_a_port_nobody_listens_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The exception the Kubernetes client really raises, not one built by the test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configuration = kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    adapter = KubeAdapter(kubernetes.client.ApiClient(configuration), timeout=2.0)
    world = World(tmp_path, kube=adapter)  # type: ignore[arg-type]  # the real adapter for the fake
    world.reconciler.cache.put(
        make_service("redis")
        | {"metadata": {"name": "redis", "namespace": "default", "uid": "u1", "resourceVersion": "1"}}
    )
    caplog.set_level(logging.INFO, logger="dklb.reconciler")
    world.reconciler.reconcile(KEY)
    binding = world.binding(KEY)
    assert binding.state == "Pending" and binding.attempts == 1
    assert binding.last_error is not None
    assert binding.last_error.startswith("the Kubernetes API server does not answer (MaxRetryError")
    assert "Connection refused" in binding.last_error and " object at 0x" not in binding.last_error
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in loud] == ["dklb.reconciler"] and loud[0].exc_info is None, "one line, no Event"
    print(f"\nlast_error: {binding.last_error}")


def test_events_that_cannot_be_posted_cost_one_line_and_never_a_transition(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kube = DownKube(only_events=True)  # the API server fails between the handler's writes and the Events
    world = World(tmp_path, kube=kube)
    kube.apply(make_service("redis"))
    kube.error = refused()
    world.settle()
    assert world.binding(KEY).state == "Ready", "an Event is a courtesy: the transitions are committed"
    assert kube.events_for(KEY) == [] and kube.refused >= 2
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud and all(r.exc_info is None and "could not post event" in r.getMessage() for r in loud)
    assert all("the Kubernetes API server does not answer (MaxRetryError" in r.getMessage() for r in loud)
    # One WARNING line per refused Event, nothing else.
    assert len(loud) == kube.refused
