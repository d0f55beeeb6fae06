"""The benchmark's measurements (``bench.measure``): parsing, diffing and percentiles, table-driven.

Pure functions get fixed text: ``/proc`` files as the kernel writes them, ``/_local/requests`` JSON,
Prometheus text produced by dklb's own ``engine.telemetry.metrics`` and lines as the local kube-apiserver
(v1.20) serves them. The readers run once each over real HTTP against in-process servers on
127.0.0.1 port 0 (a local EdgeLB, a prometheus_client exporter) and against this test's own process
in ``/proc``. ``bench.store_bench`` gets a smoke run on a few transitions. No waits but polls with
deadlines.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from bench import measure, store_bench
from bench.measure import ProcessSample, Sampler
from edgelb_local.dataplane import NullDataplane
from edgelb_local.server import LocalEdgeLB
from engine.telemetry.metrics import Metrics

TICK = os.sysconf("SC_CLK_TCK")

# -- /proc ----------------------------------------------------------------------------------------

STAT_TAIL = (
    "S 1 2 3 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 4 0 12345 1000000 500 18446744073709551615"
)


@pytest.mark.parametrize(
    ("comm", "utime", "stime", "ticks"),
    [
        ("python", 150, 50, 200),
        ("dklb run", 0, 0, 0),  # a space in the command name
        ("a) b (c", 7, 3, 10),  # parentheses in it: fields start after the LAST ')'
        ("", 1, 0, 1),
    ],
)
def test_parse_stat_adds_utime_and_stime(comm: str, utime: int, stime: int, ticks: int) -> None:
    text = f"4242 ({comm}) " + STAT_TAIL.format(utime=utime, stime=stime) + "\n"
    assert measure.parse_stat(text) == ticks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Name:\tpython\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t4\n",
            (10240 * 1024, 20480 * 1024),
        ),
        ("Name:\tz\nState:\tZ (zombie)\nThreads:\t1\n", (0, 0)),  # a zombie has no memory lines
        ("VmRSS:\t1 kB\n", (1024, 0)),
    ],
)
def test_parse_status_reads_rss_and_peak_in_bytes(text: str, expected: tuple[int, int]) -> None:
    assert measure.parse_status(text) == expected


def test_process_sample_from_a_proc_directory(tmp_path: Path) -> None:
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "stat").write_text("77 (x) " + STAT_TAIL.format(utime=3 * TICK, stime=TICK))
    (tmp_path / "77" / "status").write_text("VmHWM:\t 300 kB\nVmRSS:\t 200 kB\n")
    sample = measure.process_sample(77, proc=tmp_path)
    assert (sample.pid, sample.cpu_seconds, sample.rss, sample.peak_rss) == (
        77,
        4.0,
        200 * 1024,
        300 * 1024,
    )
    with pytest.raises(FileNotFoundError):
        measure.process_sample(78, proc=tmp_path)


TREE_STAT = (
    "{pid} (postgres) S {ppid} 2 3 0 -1 4194560 100 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 4 0 1"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TREE_STAT.format(pid=10, ppid=1, utime=5, stime=2, cutime=30, cstime=4), (1, 7, 34)),
        (TREE_STAT.format(pid=11, ppid=10, utime=0, stime=0, cutime=0, cstime=0), (10, 0, 0)),
        ("12 (a) b) S 7 2 3 0 -1 4194560 100 0 0 0 1 1 1 1 20 0 4 0 1", (7, 2, 2)),  # ')' in the name
    ],
)
def test_parse_stat_tree_reads_ppid_own_and_waited_for_cpu(text: str, expected: tuple[int, int, int]) -> None:
    assert measure.parse_stat_tree(text) == expected


def test_tree_cpu_counts_the_server_its_live_children_and_the_ones_it_waited_for(tmp_path: Path) -> None:
    def process(pid: int, ppid: int, utime: int, cutime: int = 0) -> None:
        (tmp_path / str(pid)).mkdir()
        stat = TREE_STAT.format(pid=pid, ppid=ppid, utime=utime, stime=0, cutime=cutime, cstime=0)
        (tmp_path / str(pid) / "stat").write_text(stat)

    process(10, 1, utime=2 * TICK, cutime=3 * TICK)  # the postmaster; sessions gone: 3 s
    process(11, 10, utime=TICK)  # a live session
    process(12, 10, utime=TICK)
    process(13, 1, utime=50 * TICK)  # not its child: not counted
    process(14, 11, utime=50 * TICK)  # a grandchild (PostgreSQL has none): not counted
    (tmp_path / "self").mkdir()  # not a PID
    assert measure.tree_cpu_seconds(10, proc=tmp_path) == 2 + 3 + 1 + 1
    assert measure.tree_cpu_seconds(99, proc=tmp_path) == 0.0  # gone


def test_process_sample_of_this_process() -> None:
    before = measure.process_sample(os.getpid())
    deadline = time.monotonic() + 5
    while measure.process_sample(os.getpid()).cpu_seconds <= before.cpu_seconds:  # burn CPU until it shows
        assert time.monotonic() < deadline, "CPU time did not advance"
    assert 0 < before.rss <= before.peak_rss


def sample(pid: int, cpu: float, rss: int, peak: int | None = None) -> ProcessSample:
    return ProcessSample(pid, cpu, rss, rss if peak is None else peak, 0.0)


class ScriptedProc:
    """Stands in for ``measure.process_sample``: poll N sees ``polls[N]`` (pid -> sample; absent = gone)."""

    def __init__(self, polls: list[dict[int, ProcessSample]]) -> None:
        self.polls = polls
        self.index = 0

    def advance(self) -> None:
        self.index += 1

    def read(self, pid: int) -> ProcessSample:
        current = self.polls[min(self.index, len(self.polls) - 1)]
        if pid not in current:
            raise FileNotFoundError(pid)
        return current[pid]


@pytest.mark.parametrize(
    ("name", "polls", "cpu", "peak"),
    [
        (
            "one process",
            [{1: sample(1, 10.0, 100)}, {1: sample(1, 12.5, 300)}, {1: sample(1, 13.0, 200)}],
            3.0,
            300,
        ),
        (
            "the kernel's peak beats the polls",
            [{1: sample(1, 1.0, 100, 900)}, {1: sample(1, 1.0, 100, 900)}],
            0.0,
            900,
        ),
        (
            "restarted under a new PID: the new one counts from 0, the old keeps its last sample",
            [
                {1: sample(1, 5.0, 400)},
                {1: sample(1, 6.0, 500)},
                {2: sample(2, 0.5, 100)},
                {2: sample(2, 1.5, 150)},
            ],
            1.0 + 1.5,
            500,
        ),
        (
            "two at once: the peak is the largest sum at one poll",
            [
                {1: sample(1, 0.0, 100), 2: sample(2, 0.0, 100)},
                {1: sample(1, 1.0, 300), 2: sample(2, 2.0, 250)},
            ],
            3.0,
            550,
        ),
        ("nothing running yet", [{}, {}, {3: sample(3, 2.0, 50)}], 2.0, 50),
    ],
)
def test_sampler_cpu_and_peak(
    monkeypatch: pytest.MonkeyPatch, name: str, polls: list[dict[int, ProcessSample]], cpu: float, peak: int
) -> None:
    proc = ScriptedProc(polls)
    monkeypatch.setattr(measure, "process_sample", proc.read)
    sampler = Sampler(lambda: sorted({pid for poll in polls for pid in poll}))
    # Polled by hand (no thread): each poll sees the next scripted state.
    for _ in polls:
        sampler.poll()
        proc.advance()
    assert sampler.usage.cpu_seconds == pytest.approx(cpu), name
    assert sampler.usage.peak_rss == peak, name
    assert sampler.usage.samples == len(polls)


def test_sampler_thread_polls_until_stopped() -> None:
    with Sampler([os.getpid()], interval=0.01) as sampler:
        assert sampler.running
        deadline = time.monotonic() + 5
        while sampler.usage.samples < 5:
            assert time.monotonic() < deadline, "the sampler did not poll"
            time.sleep(0.01)
    assert not sampler.running
    usage = sampler.usage
    assert usage.peak_rss >= usage.last[os.getpid()].rss > 0
    assert usage.cpu_seconds >= 0


# -- counters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({}, {"a": 2}, {"a": 2}),
        ({"a": 2}, {"a": 5, "b": 1}, {"a": 3, "b": 1}),
        ({"a": 2}, {"a": 2}, {}),  # unchanged keys are left out
        ({"a": 5}, {"a": 3}, {}),  # a counter that went down (restarted) never counts negative
    ],
)
def test_diff(before: dict[str, float], after: dict[str, float], expected: dict[str, float]) -> None:
    assert measure.diff(before, after) == Counter(expected)


def edgelb_json(*rows: tuple[str, str, str, int]) -> dict[str, Any]:
    return {"requests": [{"method": m, "route": r, "code": c, "count": n} for m, r, c, n in rows]}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ([], [], {"GET": 0, "POST": 0, "PUT": 0, "DELETE": 0}),
        (
            [("GET", "/v2/pools/{name}", "200", 3)],
            [
                ("GET", "/v2/pools/{name}", "200", 5),
                ("GET", "/v2/pools/{name}", "404", 1),
                ("POST", "/v2/pools", "200", 1),
                ("PUT", "/v2/pools/{name}", "reset", 1),
            ],
            {"GET": 3, "POST": 1, "PUT": 1, "DELETE": 0},
        ),
        ([], [("PATCH", "other", "405", 2)], {"GET": 0, "POST": 0, "PUT": 0, "DELETE": 0, "PATCH": 2}),
    ],
)
def test_edgelb_requests_by_method(
    before: list[tuple[str, str, str, int]], after: list[tuple[str, str, str, int]], expected: dict[str, int]
) -> None:
    counts = measure.edgelb_requests_by_method(
        measure.parse_edgelb_requests(edgelb_json(*before)),
        measure.parse_edgelb_requests(edgelb_json(*after)),
    )
    assert counts == expected


@pytest.fixture
def edgelb(tmp_path: Path) -> Iterator[str]:
    server = LocalEdgeLB(state_dir=tmp_path, dataplane=NullDataplane())
    server.serve("127.0.0.1", 0)
    try:
        yield server.url
    finally:
        server.shutdown()


def test_edgelb_requests_reads_the_local_edgelb(edgelb: str) -> None:
    before = measure.edgelb_requests(edgelb)
    assert before == Counter()
    requests.get(edgelb + "/v2/pools/a", timeout=5)
    requests.get(edgelb + "/v2/pools/b", timeout=5)
    requests.delete(edgelb + "/v2/pools/b", timeout=5)
    after = measure.edgelb_requests(edgelb)
    assert after == Counter({("GET", "/v2/pools/{name}", "404"): 2, ("DELETE", "/v2/pools/{name}", "404"): 1})
    assert measure.edgelb_requests_by_method(before, after) == {"GET": 2, "POST": 0, "PUT": 0, "DELETE": 1}


# -- Prometheus text ------------------------------------------------------------------------------


def dklb_metrics_text() -> str:
    metrics = Metrics()
    metrics.transition(None, "Pending", "observed")
    metrics.transition("Pending", "Provisioning", "accept")
    metrics.transition("Pending", "Provisioning", "accept")
    metrics.edgelb_response("GET", "/v2/pools/{name}", 404, 0.01)
    metrics.edgelb_response("POST", "/v2/pools", 200, 0.02)
    metrics.edgelb_response("GET", "/v2/pools/{name}/metadata", 504, 0.01)
    metrics.edgelb_response("GET", "/v2/pools/{name}/metadata", 0, 0.01)
    metrics.kubernetes_request("PATCH", "services", 200, 0.01)
    metrics.kubernetes_request("PUT", "services/status", 200, 0.01)
    metrics.kubernetes_request("POST", "events", 201, 0.01)
    metrics.kubernetes_request("LIST", "services", 200, 0.01)
    return generate_latest(metrics.registry).decode()


@pytest.mark.parametrize(
    ("name", "labels", "match", "expected"),
    [
        ("dklb_transitions_total", ("to",), {}, {("Pending",): 1, ("Provisioning",): 2}),
        ("dklb_transitions_total", ("from", "trigger"), {"to": "Provisioning"}, {("Pending", "accept"): 2}),
        ("dklb_edgelb_requests_total", ("method",), {}, {("GET",): 3, ("POST",): 1}),
        (
            "dklb_edgelb_requests_total",
            ("code",),
            {"route": "/v2/pools/{name}/metadata"},
            {("504",): 1, ("error",): 1},
        ),
        ("dklb_kubernetes_requests_total", ("verb", "resource"), {"code": "201"}, {("POST", "events"): 1}),
        ("dklb_edgelb_request_duration_seconds_count", ("route",), {"method": "POST"}, {("/v2/pools",): 1}),
        ("dklb_no_such_metric_total", ("x",), {}, {}),
    ],
)
def test_scrape_by_labels(
    name: str, labels: tuple[str, ...], match: dict[str, str], expected: dict[tuple[str, ...], float]
) -> None:
    assert measure.parse_metrics(dklb_metrics_text()).by(name, *labels, **match) == Counter(expected)


def test_scrape_total() -> None:
    scrape = measure.parse_metrics(dklb_metrics_text())
    assert scrape.total("dklb_transitions_total") == 3
    assert scrape.total("dklb_kubernetes_requests_total", verb="PUT") == 1
    assert scrape.total("dklb_reconcile_errors_total") == 0
    assert scrape.total("nothing") == 0
    assert measure.metric_sum(scrape, "dklb_edgelb_requests_total", method="GET") == 3


def test_controller_metrics_over_http() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.transition("Pending", "Provisioning", "accept")
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        for target in (url, url + "/metrics"):
            scrape = measure.controller_metrics(target)
            assert scrape.by("dklb_transitions_total", "trigger") == Counter({("accept",): 1})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def apiserver_line(verb: str, resource: str, subresource: str, code: str, value: int, **labels: str) -> str:
    """One ``apiserver_request_total`` line with the full label set of kube-apiserver v1.20, in its
    order (as captured from the local cluster)."""
    values = {
        "code": code,
        "component": "apiserver" if resource else "",
        "contentType": "application/json",
        "dry_run": "",
        "group": "",
        "resource": resource,
        "scope": "resource" if resource else "",
        "subresource": subresource,
        "verb": verb,
        "version": "v1" if resource else "",
        **labels,
    }
    return "apiserver_request_total{" + ",".join(f'{k}="{v}"' for k, v in values.items()) + f"}} {value}"


APISERVER_METRICS = "\n".join(
    [
        "# HELP apiserver_request_total [ALPHA] Counter of apiserver requests broken out for each verb, "
        "dry run value, group, version, resource, scope, component, and HTTP response contentType and code.",
        "# TYPE apiserver_request_total counter",
        apiserver_line("GET", "", "/readyz", "200", 3, contentType="text/plain;charset=utf-8"),
        apiserver_line("LIST", "services", "", "200", 1, scope="namespace"),
        apiserver_line(
            "LIST",
            "services",
            "",
            "200",
            5,
            scope="cluster",
            contentType="application/vnd.kubernetes.protobuf",
        ),
        apiserver_line("PATCH", "services", "", "200", 1),
        apiserver_line("PUT", "services", "status", "200", 1),
        apiserver_line("POST", "services", "", "201", 1),
        apiserver_line("POST", "services", "", "409", 2),
        apiserver_line("DELETE", "services", "", "200", 1),
        apiserver_line("POST", "events", "", "201", 4),
        "# HELP apiserver_longrunning_gauge [ALPHA] Gauge of all active long-running apiserver requests.",
        "# TYPE apiserver_longrunning_gauge gauge",
        'apiserver_longrunning_gauge{component="apiserver",group="",resource="services",scope="cluster",'
        'subresource="",verb="WATCH",version="v1"} 1',
        "",
    ]
)


def test_sum_apiserver_requests_by_verb_and_resource() -> None:
    assert measure.sum_apiserver_requests(APISERVER_METRICS) == Counter(
        {
            ("GET", "/readyz"): 3,
            ("LIST", "services"): 6,
            ("PATCH", "services"): 1,
            ("PUT", "services/status"): 1,
            ("POST", "services"): 3,
            ("DELETE", "services"): 1,
            ("POST", "events"): 4,
        }
    )


@pytest.mark.parametrize(
    ("before", "after", "resources", "expected"),
    [
        ({}, {("GET", "services"): 9, ("LIST", "services"): 2, ("WATCH", "services"): 1}, None, 0),
        (
            {("POST", "events"): 1, ("PATCH", "services"): 2},
            {
                ("POST", "events"): 4,
                ("PATCH", "services"): 3,
                ("PUT", "services/status"): 2,
                ("DELETE", "services"): 1,
                ("APPLY", "services"): 1,
                ("DELETECOLLECTION", "events"): 1,
                ("GET", "services"): 50,
            },
            None,
            3 + 1 + 2 + 1 + 1 + 1,
        ),
        (
            {},
            {("POST", "events"): 4, ("PATCH", "services"): 3, ("PUT", "services/status"): 2},
            ["services", "services/status"],
            5,
        ),
    ],
)
def test_writes_between(
    before: dict[tuple[str, str], float],
    after: dict[tuple[str, str], float],
    resources: list[str] | None,
    expected: int,
) -> None:
    assert measure.writes_between(before, after, resources=resources) == expected
    if not before:
        assert measure.write_requests(after, resources=resources) == expected


# -- percentiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([3.0, 1.0, 2.0], 50, 2.0),  # unsorted input
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),  # nearest rank: ceil(0.5 * 4) = 2nd, no interpolation
        ([1.0, 2.0, 3.0, 4.0], 51, 3.0),
        ([float(i) for i in range(1, 11)], 90, 9.0),
        ([float(i) for i in range(1, 11)], 99, 10.0),
        ([float(i) for i in range(1, 101)], 7, 7.0),  # q * n exact: 7/100*100 in floats is 7.000000000000001
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
        ([float(i) for i in range(1, 1001)], 99.9, 999.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert measure.percentile(values, q) == expected


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], 0), ([1.0], 101), ([1.0], -5)])
def test_percentile_refuses(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        measure.percentile(values, q)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], {}),
        ([0.2], {"p50": 0.2, "p90": 0.2, "p99": 0.2}),
        ([float(i) for i in range(100, 0, -1)], {"p50": 50.0, "p90": 90.0, "p99": 99.0}),
    ],
)
def test_percentiles(values: list[float], expected: dict[str, float]) -> None:
    assert measure.percentiles(values) == expected


# -- bench.store_bench (a smoke run: the figures themselves are the benchmark's business) -----------


def test_store_bench_runs_both_sides_with_the_stores_pragmas(tmp_path: Path) -> None:
    result = store_bench.run(tmp_path / "new", transitions=12, bindings=3, repeats=2)
    assert result["pragmas"] == {
        "journal_mode": "wal",
        "synchronous": 1,
        "foreign_keys": 1,
        "busy_timeout": 30000,
    }
    # Every measured transition is one write transaction of the store (warm-up not counted).
    assert result["store_write_transactions"] == 12 * 2
    assert result["ref_counts_consistent"] is True
    assert len(result["store_runs_tps"]) == len(result["raw_runs_tps"]) == 2
    assert result["ratio"] == pytest.approx(result["store_tps"] / result["raw_tps"])
    assert list((tmp_path / "new").iterdir()) == []  # created if missing; its working directory removed
    assert "ratio store/raw" in store_bench.report(result)


def test_store_bench_command_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dir", str(tmp_path), "--transitions", "4", "--bindings", "2", "--repeats", "1", "--json"]
    assert store_bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"store_tps", "raw_tps", "ratio"} <= set(result)


def test_store_bench_runs_both_sides_on_postgresql(postgres_url: str) -> None:
    result = store_bench.run_postgresql(postgres_url, transitions=12, bindings=3, repeats=2)
    assert result["store_write_transactions"] == 12 * 2
    assert result["ref_counts_consistent"] is True
    assert len(result["store_runs_tps"]) == len(result["raw_runs_tps"]) == 2
    assert result["ratio"] == pytest.approx(result["store_tps"] / result["raw_tps"])
    shown = store_bench.report(result)
    assert "raw psycopg 3" in shown and "ratio store/raw" in shown
    assert postgres_url.split(":")[2].split("@")[0] not in shown, "never the password"
