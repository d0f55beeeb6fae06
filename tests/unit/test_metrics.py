"""The metrics of ``dklb run`` and its HTTP side door, without a cluster.

The collectors run against a real SQLite database filled by ``tests.engine.harness.World``
(fake Kubernetes, fake EdgeLB, fake clock): bindings by state and pools must equal what the
database holds, and the transition counter must count what the reconciler committed. The EdgeLB
hook is fed by the real HTTP client talking to an in-process local EdgeLB (no HAProxy), and by
direct calls. The health server runs on port 0 and is read over real HTTP; every wait polls a
condition with a deadline.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from edgelb_local.dataplane import NullDataplane
from edgelb_local.server import LocalEdgeLB
from engine import cli
from engine.cli.run import HTTP_PORT
from engine.edgelb.client import EdgeLBClient
from engine.edgelb.errors import Unavailable
from engine.model.services import PAUSED_ANNOTATION
from engine.runtime.cache import ServiceCache
from engine.runtime.controller import Controller
from engine.store import Fenced, Store, migrate
from engine.telemetry.health import HealthServer, Probes
from engine.telemetry.metrics import NO_ANSWER, Metrics
from engine.telemetry.serving import parse_listen
from tests.engine.harness import World
from tests.fakes.kube import make_service
from tests.processes import ROOT, wait_for

TIMEOUT = 5.0  # every HTTP call: a hung server fails the test instead of hanging it


# ---- helpers ------------------------------------------------------------------------------------


def samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` in the registry, by their sorted labels."""
    found = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def settled_world(tmp_path: Path) -> World:
    """Two Ready Services on one pool, one on its own pool, one Rejected, one Paused."""
    world = World(tmp_path)
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: shared\n"))
    world.kube.apply(make_service("b", ports=[(81, 30002)], config="name: shared\n"))
    world.kube.apply(make_service("c", ports=[(82, 30003)], config="name: alone\n"))
    world.kube.apply(make_service("bad", config='name: "__foo__"\ncpus: -0.1\n'))
    world.kube.apply(make_service("quiet", ports=[(83, 30004)], annotations={PAUSED_ANNOTATION: "true"}))
    return world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = settled_world(tmp_path)
    yield w
    w.store.close()


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.close()


# ---- the database gauges ------------------------------------------------------------------------


def test_bindings_by_state_and_pools_match_the_database(world: World, metrics: Metrics) -> None:
    states = [s for s in world.lifecycle.states if s != world.lifecycle.final]
    metrics.watch_store(world.store, states=states)
    world.settle()

    in_db = collections.Counter(b.state for b in world.store.bindings())
    assert in_db == {"Ready": 3, "Rejected": 1, "Paused": 1}
    exported = {dict(labels)["state"]: v for labels, v in samples(metrics, "dklb_bindings").items()}
    # Every declared state is exported, the empty ones as 0, so no series disappears.
    assert exported == {state: float(in_db.get(state, 0)) for state in states}
    assert value(metrics, "dklb_pools") == len(world.store.pools()) == 2

    # Read at scrape time: a change in the database shows at the next scrape.
    world.kube.delete("default/c")
    world.settle()
    assert value(metrics, "dklb_bindings", state="Ready") == 2
    assert value(metrics, "dklb_pools") == 1


def test_the_store_answers_the_readiness_ping_and_the_collector_survives_a_broken_database(
    world: World, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    metrics.watch_store(world.store)
    world.settle()
    world.store.ping()
    metrics.edgelb_response("GET", "/ping", 200, 0.01)
    # Something else wrecks the schema behind the controller's back.
    with contextlib.closing(sqlite3.connect(world.db)) as conn:
        conn.execute("DROP TABLE pools")
    with pytest.raises(OperationalError, match="no such table"):
        world.store.ping()
    with caplog.at_level(logging.WARNING, logger="dklb.metrics"):
        # The database families are skipped; the rest of /metrics is still served.
        assert samples(metrics, "dklb_bindings") == {}
        assert value(metrics, "dklb_edgelb_requests_total", method="GET", route="/ping", code="200") == 1
    assert "could not count bindings" in caplog.text


# ---- the transition counter ---------------------------------------------------------------------


def test_transitions_are_counted_with_from_to_and_trigger(world: World, metrics: Metrics) -> None:
    world.reconciler.on_transition = metrics.transition
    world.settle()

    counted = samples(metrics, "dklb_transitions_total")
    by_edge: collections.Counter[tuple[str, str]] = collections.Counter()
    for labels, n in counted.items():
        by_edge[(dict(labels)["from"], dict(labels)["to"])] += int(n)
    # The metric and the reconciler's own counter saw the same transitions.
    assert dict(by_edge) == world.reconciler.transitions
    assert (
        value(metrics, "dklb_transitions_total", **{"from": "", "to": "Pending", "trigger": "observed"}) == 5
    )
    assert value(
        metrics, "dklb_transitions_total", **{"from": "Pending", "to": "Provisioning", "trigger": "accept"}
    )
    assert (
        value(metrics, "dklb_transitions_total", **{"from": "Pending", "to": "Rejected", "trigger": "reject"})
        == 1
    )
    assert (
        value(metrics, "dklb_transitions_total", **{"from": "Pending", "to": "Paused", "trigger": "pause"})
        == 1
    )
    ready = sum(v for labels, v in counted.items() if dict(labels)["to"] == "Ready")
    assert ready == 3

    assert world.lifecycle.final not in {dict(labels)["to"] for labels in counted}
    world.kube.delete("default/a")
    world.settle()
    after = {dict(labels)["to"] for labels in samples(metrics, "dklb_transitions_total")}
    assert {"Deleting", world.lifecycle.final} <= after


def test_a_failing_transition_hook_does_not_fail_the_reconcile(world: World) -> None:
    def broken(source: str | None, dest: str, trigger: str) -> None:
        raise RuntimeError("metrics are down")

    world.reconciler.on_transition = broken
    world.settle()
    assert world.states()["default/a"] == "Ready"


# ---- the EdgeLB and Kubernetes request hooks ----------------------------------------------------


@pytest.fixture
def local_edgelb(tmp_path: Path) -> Iterator[str]:
    edgelb = LocalEdgeLB(state_dir=tmp_path / "edgelb", dataplane=NullDataplane())
    host, port = edgelb.serve("127.0.0.1", 0)
    try:
        yield f"http://{host}:{port}"
    finally:
        edgelb.shutdown()


def test_the_edgelb_client_hook_counts_method_route_and_code(
    tmp_path: Path, local_edgelb: str, metrics: Metrics
) -> None:
    client = EdgeLBClient(local_edgelb, read_timeout=TIMEOUT, on_response=metrics.edgelb_response)
    world = World(tmp_path / "world", edgelb=client)  # type: ignore[arg-type]  # the real client for the fake: no fake-only call
    try:
        world.reconciler.on_transition = metrics.transition
        world.kube.apply(make_service("redis", config="name: dklb-redis\n"))
        world.settle()
        assert world.states() == {"default/redis": "Ready"}
    finally:
        world.store.close()
        client.close()

    assert value(metrics, "dklb_edgelb_requests_total", method="POST", route="/v2/pools", code="200") == 1
    assert value(
        metrics, "dklb_edgelb_requests_total", method="GET", route="/v2/pools/{name}/metadata", code="200"
    )
    requests_by_route: collections.Counter[tuple[str, str]] = collections.Counter()
    for labels, n in samples(metrics, "dklb_edgelb_requests_total").items():
        label = dict(labels)
        # Templates only: a pool name in a label would make one time series per pool.
        assert "dklb-redis" not in label["route"]
        requests_by_route[(label["method"], label["route"])] += int(n)
    for (method, route), n in requests_by_route.items():
        observed = value(metrics, "dklb_edgelb_request_duration_seconds_count", method=method, route=route)
        assert observed == n, f"one duration per request of {method} {route}"


def test_an_edgelb_request_without_answer_is_counted_as_error(metrics: Metrics) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        client = EdgeLBClient(f"http://127.0.0.1:{port}", on_response=metrics.edgelb_response)
        with pytest.raises(Unavailable):
            client.get_pool("dklb-redis")
    assert (
        value(metrics, "dklb_edgelb_requests_total", method="GET", route="/v2/pools/{name}", code=NO_ANSWER)
        == 1
    )


def test_the_request_hooks_called_directly() -> None:
    metrics = Metrics()
    metrics.edgelb_response("PUT", "/v2/pools/{name}", 409, 0.02)
    metrics.edgelb_response("PUT", "/v2/pools/{name}", 409, 0.03)
    metrics.edgelb_response("PUT", "/v2/pools/{name}", 0, 4.0)
    metrics.kubernetes_request("patch", "services/status", 200, 0.01)
    metrics.kubernetes_request("watch", "services", 0, 0.5)

    assert (
        value(metrics, "dklb_edgelb_requests_total", method="PUT", route="/v2/pools/{name}", code="409") == 2
    )
    assert (
        value(metrics, "dklb_edgelb_requests_total", method="PUT", route="/v2/pools/{name}", code="error")
        == 1
    )
    duration = value(
        metrics, "dklb_edgelb_request_duration_seconds_sum", method="PUT", route="/v2/pools/{name}"
    )
    assert duration == pytest.approx(4.05)
    assert (
        value(metrics, "dklb_kubernetes_requests_total", verb="patch", resource="services/status", code="200")
        == 1
    )
    assert (
        value(metrics, "dklb_kubernetes_requests_total", verb="watch", resource="services", code="error") == 1
    )
    assert (
        value(metrics, "dklb_kubernetes_request_duration_seconds_count", verb="watch", resource="services")
        == 1
    )


# ---- reconcile calls, work queue, leadership ----------------------------------------------------


class _StubReconciler:
    """Just enough of a Reconciler for the Controller (over an empty store): ``ns/bad`` raises,
    ``ns/fenced`` meets the database's leadership fence, anything else works."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache = ServiceCache()

    def verify(self, keys: set[str]) -> None:
        pass

    def reconcile(self, key: str) -> float | None:
        if key == "ns/bad":
            raise RuntimeError("boom")
        if key == "ns/fenced":
            raise Fenced("another replica claimed term 2")
        return None


def test_reconcile_duration_and_errors_are_observed_by_the_controller_workers(
    tmp_path: Path, metrics: Metrics
) -> None:
    store = migrate.open_store(str(tmp_path / "dklb.db"))
    # A stub: Controller is typed for the concrete Reconciler, of which it uses only these methods.
    controller = Controller(_StubReconciler(store), workers=2, on_reconcile=metrics.reconciled)  # type: ignore[arg-type]
    metrics.watch_queue(lambda: len(controller.queue))
    controller.enqueue("ns/a")
    controller.enqueue("ns/bad")
    controller.enqueue("ns/fenced")
    controller.enqueue("ns/b")
    # Not synced yet: workers wait, the keys wait in the queue.
    assert value(metrics, "dklb_workqueue_depth") == 4
    controller.start()
    try:
        controller.mark_synced()
        wait_for(
            lambda: (value(metrics, "dklb_reconcile_duration_seconds_count") or 0) >= 4,
            timeout=10,
            what="four reconcile calls observed",
        )
        # A fenced reconcile is dropped like a lost Lease: no error, no retry of this replica's.
        assert value(metrics, "dklb_reconcile_errors_total") == 1
        assert value(metrics, "dklb_workqueue_depth") == 0
    finally:
        controller.stop()
        store.close()


def test_the_leader_gauge_follows_leadership(metrics: Metrics) -> None:
    leading = threading.Event()
    metrics.watch_leader(leading.is_set)
    assert value(metrics, "dklb_leader") == 0
    leading.set()
    assert value(metrics, "dklb_leader") == 1


def test_the_database_outage_gauge_follows_the_gate(metrics: Metrics) -> None:
    outage = threading.Event()
    metrics.watch_database_outage(outage.is_set)
    assert value(metrics, "dklb_database_outage") == 0
    outage.set()
    assert value(metrics, "dklb_database_outage") == 1


# ---- the HTTP server ----------------------------------------------------------------------------


class Parts:
    """What the probes look at, switched by the tests."""

    def __init__(self, database: Any) -> None:
        self.release = threading.Event()
        self.worker = threading.Thread(target=self.release.wait, name="dklb-worker-0", daemon=True)
        self.worker.start()
        self.stopping = False
        self.synced = False
        self.leader = False
        self.database = database

    def probes(self) -> Probes:
        return Probes(
            threads=lambda: [self.worker],
            stopping=lambda: self.stopping,
            synced=lambda: self.synced,
            database=lambda: self.database(),
            leader=lambda: self.leader,
        )


@pytest.fixture
def served(world: World, metrics: Metrics) -> Iterator[tuple[HealthServer, Parts]]:
    metrics.watch_store(world.store, states=["Ready"])
    parts = Parts(world.store.ping)
    server = HealthServer("127.0.0.1", 0, registry=metrics.registry, probes=parts.probes()).start()
    try:
        yield server, parts
    finally:
        server.stop()
        parts.release.set()


def get(server: HealthServer, path: str) -> requests.Response:
    return requests.get(server.url + path, timeout=TIMEOUT)


def test_the_bound_port_is_logged(world: World, metrics: Metrics, caplog: pytest.LogCaptureFixture) -> None:
    parts = Parts(lambda: None)
    with caplog.at_level(logging.INFO, logger="dklb.http"):
        server = HealthServer("127.0.0.1", 0, registry=metrics.registry, probes=parts.probes()).start()
    try:
        host, port = server.address
        assert host == "127.0.0.1" and port != 0, "port 0: the kernel picked one"
        assert f"http listening on http://127.0.0.1:{port}" in caplog.text
    finally:
        server.stop()
        parts.release.set()


def test_healthz_fails_when_a_checked_thread_is_dead(served: tuple[HealthServer, Parts]) -> None:
    server, parts = served
    ok = get(server, "/healthz")
    assert (ok.status_code, ok.json()) == (200, {"alive": True})

    parts.release.set()
    parts.worker.join(TIMEOUT)
    dead = get(server, "/healthz")
    assert dead.status_code == 500
    assert dead.json()["dead"] == ["dklb-worker-0"]
    assert "dklb-worker-0" in dead.json()["reason"]


def test_healthz_fails_while_stopping(served: tuple[HealthServer, Parts]) -> None:
    server, parts = served
    parts.stopping = True
    answer = get(server, "/healthz")
    assert answer.status_code == 500
    assert answer.json()["stopping"] is True


def test_readyz_waits_for_the_cache_and_the_database(served: tuple[HealthServer, Parts]) -> None:
    server, parts = served
    before = get(server, "/readyz")
    assert before.status_code == 503
    assert before.json() == {
        "ready": False,
        "leader": False,
        "reason": "the Service cache has not synced yet",
    }

    parts.synced = True
    after = get(server, "/readyz")
    # A standby is ready (it answers probes and takes over at once) but says it does not lead.
    assert (after.status_code, after.json()) == (200, {"ready": True, "leader": False})
    parts.leader = True
    assert get(server, "/readyz").json() == {"ready": True, "leader": True}

    def broken() -> None:
        raise OSError("disk gone")

    parts.database = broken
    failing = get(server, "/readyz")
    assert failing.status_code == 503
    assert failing.json()["reason"] == "the database does not answer: OSError: disk gone"


def test_metrics_are_served_in_the_prometheus_text_format(
    world: World, metrics: Metrics, served: tuple[HealthServer, Parts]
) -> None:
    server, _ = served
    world.reconciler.on_transition = metrics.transition
    world.settle()
    metrics.edgelb_response("POST", "/v2/pools", 200, 0.1)

    answer = get(server, "/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert {
        "dklb_bindings",
        "dklb_pools",
        "dklb_transitions",
        "dklb_edgelb_requests",
        "dklb_edgelb_request_duration_seconds",
        "dklb_kubernetes_requests",
        "dklb_kubernetes_request_duration_seconds",
        "dklb_reconcile_duration_seconds",
        "dklb_reconcile_errors",
        "dklb_workqueue_depth",
        "dklb_leader",
    } <= set(families)
    ready = [s for s in families["dklb_bindings"].samples if s.labels == {"state": "Ready"}]
    assert [s.value for s in ready] == [3.0]
    assert families["dklb_pools"].samples[0].value == 2.0


def test_an_unknown_path_is_404(served: tuple[HealthServer, Parts]) -> None:
    server, _ = served
    answer = get(server, "/nope")
    assert answer.status_code == 404
    assert "/metrics" in answer.json()["error"]


# ---- the flag -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:0", ("127.0.0.1", 0)), ("0.0.0.0:9420", ("0.0.0.0", 9420)), ("[::1]:9420", ("::1", 9420))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9420", ":9420", "host:", "host:http", "host:70000"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(text)


def test_the_http_listen_flag_and_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*argv: str) -> argparse.Namespace:
        # Built anew each time: the environment is read when the parser is built.
        return cli.build_parser(["run"]).parse_args(["run", *argv])

    monkeypatch.delenv("DKLB_HTTP_LISTEN", raising=False)
    assert parse().http_listen is None, "unset: the default address, whose bind failure only warns"
    assert parse("--http-listen", "127.0.0.1:0").http_listen == ("127.0.0.1", 0)
    monkeypatch.setenv("DKLB_HTTP_LISTEN", "[::1]:9999")
    assert parse().http_listen == ("::1", 9999)
    with pytest.raises(SystemExit):
        parse("--http-listen", "nowhere")


def test_json_is_what_the_health_endpoints_answer(served: tuple[HealthServer, Parts]) -> None:
    server, _ = served
    for path in ("/healthz", "/readyz"):
        answer = get(server, path)
        assert answer.headers["Content-Type"] == "application/json"
        assert isinstance(json.loads(answer.text), dict)


# ---- `dklb run` when the address is taken -------------------------------------------------------

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: nobody, user: {token: unused}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
"""


def dklb_run(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`dklb run` in JSON mode against an API server and an EdgeLB that are not there: enough to
    get through start-up, which is all these tests look at."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    log_path = tmp_path / "run.log"
    args = [
        *("--kubeconfig", str(kubeconfig), "--edgelb-url", "http://127.0.0.1:1"),
        *("--database", str(tmp_path / "dklb.db"), "--leader-elect", "false", "--log-format", "json"),
        *extra,
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", *args],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith(("DKLB_", "KUBERNETES_"))},
        )
    return proc, log_path


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) for e in entries), "every line is a JSON object"
    return entries


@contextlib.contextmanager
def occupied(host: str, port: int) -> Iterator[None]:
    """``host:port`` listened on by this test for the duration. Someone else holding it now (a
    controller another test run started) may let it go at any moment: wait until it is ours."""
    with socket.socket() as sock:

        def bound() -> bool:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                return False
            return True

        wait_for(bound, timeout=120, what=f"{host}:{port} free for this test to hold")
        sock.listen()
        yield


def test_an_explicit_address_in_use_stops_dklb_run_at_once(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc, log_path = dklb_run(tmp_path, "--http-listen", f"127.0.0.1:{port}")
        assert proc.wait(timeout=300) == 1
    errors = [e["message"] for e in json_lines(log_path) if e["level"] == "error"]
    assert errors == [f"cannot listen on 127.0.0.1:{port} for --http-listen: Address already in use"]


def test_the_default_address_in_use_only_warns(tmp_path: Path) -> None:
    with occupied("127.0.0.1", HTTP_PORT):
        proc, log_path = dklb_run(tmp_path)
        try:
            wait_for(lambda: "dklb running" in log_path.read_text(), timeout=300, what="dklb running")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0
    warnings = [e["message"] for e in json_lines(log_path) if e["level"] == "warning"]
    expected = f"cannot listen on 127.0.0.1:{HTTP_PORT} (Address already in use)"
    assert any(w.startswith(expected) for w in warnings), warnings


# ---- S3: bounds and --metrics-listen ------------------------------------------------------------


def test_the_metrics_port_takes_no_body(served: tuple[HealthServer, Parts]) -> None:
    """S3 (security review): the metrics port read whatever it was sent; it is GET only now, and a
    body is refused by its Content-Length before a byte of it is read."""
    server, _ = served
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 413 ")
    assert requests.post(server.url + "/metrics", timeout=TIMEOUT).status_code == 405
    assert get(server, "/healthz").status_code == 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_listen_serves_metrics_apart_from_the_probes(world: World, metrics: Metrics) -> None:
    """S3 (security review): /metrics can be bound to localhost while the kubelet's probes stay on
    the Pod's address."""
    parts = Parts(lambda: None)
    server = HealthServer(
        "127.0.0.1", 0, registry=metrics.registry, probes=parts.probes(), metrics=("127.0.0.1", 0)
    ).start()
    try:
        assert server.metrics_address != server.address
        probes_url, metrics_url = server.url, f"http://127.0.0.1:{server.metrics_address[1]}"
        assert requests.get(probes_url + "/healthz", timeout=TIMEOUT).status_code == 200
        assert "ready" in requests.get(probes_url + "/readyz", timeout=TIMEOUT).json()
        moved = requests.get(probes_url + "/metrics", timeout=TIMEOUT)
        assert moved.status_code == 404 and "--metrics-listen" in moved.json()["error"]
        scraped = requests.get(metrics_url + "/metrics", timeout=TIMEOUT)
        assert scraped.status_code == 200 and "dklb_" in scraped.text
        assert requests.get(metrics_url + "/healthz", timeout=TIMEOUT).status_code == 404
    finally:
        server.stop()
        parts.release.set()


def test_dklb_run_serves_metrics_on_metrics_listen(tmp_path: Path) -> None:
    http, scrape = free_port(), free_port()
    proc, log_path = dklb_run(
        tmp_path, "--http-listen", f"127.0.0.1:{http}", "--metrics-listen", f"127.0.0.1:{scrape}"
    )
    try:
        wait_for(lambda: "dklb running" in log_path.read_text(), timeout=300, what="dklb running")
        assert requests.get(f"http://127.0.0.1:{http}/healthz", timeout=TIMEOUT).status_code == 200
        assert requests.get(f"http://127.0.0.1:{http}/metrics", timeout=TIMEOUT).status_code == 404
        assert requests.get(f"http://127.0.0.1:{scrape}/metrics", timeout=TIMEOUT).status_code == 200
        # dklb run counts what its servers refuse, on either listener (S3): one body, one count.
        with socket.create_connection(("127.0.0.1", http), timeout=TIMEOUT) as sock:
            sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
        scraped = requests.get(f"http://127.0.0.1:{scrape}/metrics", timeout=TIMEOUT).text
        assert 'dklb_http_refused_total{reason="body_too_large",server="http"} 1.0' in scraped
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_a_metrics_listen_address_in_use_stops_dklb_run(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc, log_path = dklb_run(
            tmp_path, "--http-listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}"
        )
        assert proc.wait(timeout=300) == 1
    errors = [e["message"] for e in json_lines(log_path) if e["level"] == "error"]
    assert errors == [f"cannot listen on 127.0.0.1:{port} for --metrics-listen: Address already in use"]
