"""What the benchmarks measure, read from outside the controllers being compared.

Where it sits in the data flow: a benchmark run starts the servers (kube-apiserver, the local
EdgeLB) and a controller process (dklb, or the re-implementation of the Go dklb), drives Services,
and reads here, before and after each phase:

* the controller process itself, from ``/proc/PID`` (``process_sample``, ``Sampler``): CPU seconds
  (utime + stime) and resident memory (current, peak); a database server with its sessions'
  processes (``tree_cpu_seconds``);
* the local EdgeLB's own count of the requests it answered (``edgelb_requests``, from its
  local-only ``GET /_local/requests``), so both controllers are counted by the same server;
* the kube-apiserver's ``apiserver_request_total`` (``apiserver_requests``), summed by
  (verb, resource), and the write requests among them (``write_requests``, ``writes_between``);
* dklb's own ``/metrics`` (``controller_metrics``), for what only dklb reports (transitions, ...).

Counts are ``Counter``s keyed by label tuples; ``diff`` subtracts two scrapes. Parsing is kept in
pure functions (``parse_stat``, ``parse_status``, ``parse_edgelb_requests``, ``parse_metrics``,
``sum_apiserver_requests``, ``percentile``) that the unit tests drive with fixed text.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from prometheus_client.parser import text_string_to_metric_families
from urllib3.exceptions import InsecureRequestWarning

PROC = Path("/proc")
TIMEOUT = 10.0
# The verbs apiserver_request_total counts a write under. Checked against the local kube-apiserver
# v1.20: the HTTP method upper-cased (POST, PUT, PATCH, DELETE; a collection delete is DELETE too),
# APPLY for a server-side-apply PATCH; reads are GET, LIST, WATCH. CREATE/UPDATE are admission
# operations, never a verb here; DELETECOLLECTION is kept for API servers that spell it so.
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
METHODS = ("GET", "POST", "PUT", "DELETE")

_Key = TypeVar("_Key", bound=tuple[str, ...])

# -- one process, from /proc --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    """One look at a process: CPU used so far, resident memory now and at its peak."""

    pid: int
    cpu_seconds: float
    rss: int  # bytes
    peak_rss: int  # bytes: the larger of VmHWM and VmRSS
    at: float  # time.monotonic() of the look


def parse_stat(text: str) -> int:
    """utime + stime, in clock ticks, from the text of ``/proc/PID/stat``."""
    # The command name (field 2) is in parentheses and may itself hold spaces or ')': the fields
    # after it start behind the LAST ')'. There, field 3 (state) is index 0, so utime (field 14)
    # is index 11 and stime (field 15) index 12.
    rest = text[text.rindex(")") + 1 :].split()
    return int(rest[11]) + int(rest[12])


def parse_status(text: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes from the text of ``/proc/PID/status`` (0 for a zombie, which has neither)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in values:
            number, _, unit = value.strip().partition(" ")
            values[key] = int(number) * (1024 if unit.strip() == "kB" else 1)
    return values["VmRSS"], values["VmHWM"]


def process_sample(pid: int, *, proc: Path = PROC) -> ProcessSample:
    """The process now; ``FileNotFoundError``/``ProcessLookupError`` once it is gone."""
    stat = (proc / str(pid) / "stat").read_text()
    status = (proc / str(pid) / "status").read_text()
    rss, hwm = parse_status(status)
    return ProcessSample(
        pid=pid,
        cpu_seconds=parse_stat(stat) / os.sysconf("SC_CLK_TCK"),
        rss=rss,
        peak_rss=max(rss, hwm),
        at=time.monotonic(),
    )


def parse_stat_tree(text: str) -> tuple[int, int, int]:
    """(ppid, utime + stime, cutime + cstime) in clock ticks from the text of ``/proc/PID/stat``."""
    # After the last ')': ppid is index 1, utime/stime 11/12, cutime/cstime (the CPU of the
    # children it has waited for) 13/14.
    rest = text[text.rindex(")") + 1 :].split()
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def tree_cpu_seconds(pid: int, *, proc: Path = PROC) -> float:
    """CPU used so far by ``pid`` and its children, the ones gone included: a server that forks a
    process per session (PostgreSQL) does its work in them, and its exited children's CPU is in
    its cutime/cstime once it waited for them. 0.0 when ``pid`` is gone."""
    ticks = 0
    try:
        _, own, waited = parse_stat_tree((proc / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks += own + waited
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        try:
            ppid, child, _ = parse_stat_tree((entry / "stat").read_text())
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue  # gone between the listing and the read
        if ppid == pid:
            ticks += child
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    """What a ``Sampler`` saw: CPU used while it ran, the peak of resident memory, per-process detail."""

    cpu_seconds: float = 0.0
    peak_rss: int = 0  # bytes
    samples: int = 0
    first: dict[int, ProcessSample] = field(default_factory=dict)
    last: dict[int, ProcessSample] = field(default_factory=dict)


class Sampler:
    """Polls the processes ``pids()`` names every ``interval`` seconds, in a thread, until ``stop``.

    ``pids`` is called at each poll, so a controller restarted under a new PID is followed; a
    process that exits keeps the CPU it had at its last sample (up to ``interval`` short).

    * CPU: for each PID, last sample minus first sample; a PID first seen after the first poll
      counts from 0 (it started during the measurement).
    * Peak RSS: the largest sum of the PIDs' RSS at one poll, or a PID's own VmHWM if larger
      (the kernel's peak catches spikes between polls; per process, it does not survive a restart,
      which is why the polled value is kept too). VmHWM is the process's lifetime peak: start the
      sampler with the process, or its start-up peak counts.
    """

    def __init__(self, pids: Callable[[], Iterable[int]] | Iterable[int], *, interval: float = 0.1) -> None:
        if callable(pids):
            self._pids: Callable[[], Iterable[int]] = pids
        else:
            fixed = tuple(pids)
            self._pids = lambda: fixed
        self.interval = interval
        self.usage = Usage()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("already started")
        self.poll()  # the baseline, before start() returns
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Usage:
        """One last poll, then the usage seen."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.poll()
        return self.usage

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            first_poll = self._polls == 0
            self._polls += 1
            usage = self.usage
            total_rss = 0
            for pid in self._pids():
                try:
                    sample = process_sample(pid)
                except (FileNotFoundError, ProcessLookupError):
                    continue  # gone (or not started yet): its last sample stands
                if pid not in usage.first:
                    # Started during the measurement: all its CPU counts.
                    usage.first[pid] = sample if first_poll else _zero(sample)
                usage.last[pid] = sample
                total_rss += sample.rss
                usage.peak_rss = max(usage.peak_rss, sample.peak_rss)
            usage.peak_rss = max(usage.peak_rss, total_rss)
            usage.cpu_seconds = sum(
                usage.last[pid].cpu_seconds - usage.first[pid].cpu_seconds for pid in usage.last
            )
            usage.samples += 1


def _zero(sample: ProcessSample) -> ProcessSample:
    return ProcessSample(sample.pid, 0.0, 0, 0, sample.at)


# -- counters and scrapes ----------------------------------------------------------------------------


def diff(before: Mapping[Any, float], after: Mapping[Any, float]) -> Counter[Any]:
    """``after - before`` for counters scraped twice; keys that did not grow are left out."""
    grown: Counter[Any] = Counter()
    for key, value in after.items():
        delta = value - before.get(key, 0)
        if delta > 0:
            # typeshed says a Counter holds ints; it holds any number (floats here).
            grown[key] = delta  # type: ignore[assignment]
    return grown


def parse_edgelb_requests(data: Mapping[str, Any]) -> Counter[tuple[str, str, str]]:
    """The JSON of the local EdgeLB's ``/_local/requests`` as counts by (method, route, code)."""
    return Counter({(r["method"], r["route"], str(r["code"])): int(r["count"]) for r in data["requests"]})


def edgelb_requests(url: str) -> Counter[tuple[str, str, str]]:
    """Requests the local EdgeLB at ``url`` has answered, by (method, route template, code)."""
    response = requests.get(url.rstrip("/") + "/_local/requests", timeout=TIMEOUT)
    response.raise_for_status()
    return parse_edgelb_requests(response.json())


def by_method(counts: Mapping[_Key, float]) -> dict[str, int]:
    """Totals per method (the first element of each key): GET/POST/PUT/DELETE always present."""
    totals = dict.fromkeys(METHODS, 0)
    for key, n in counts.items():
        totals[key[0]] = totals.get(key[0], 0) + int(n)
    return totals


def edgelb_requests_by_method(
    before: Mapping[tuple[str, str, str], float], after: Mapping[tuple[str, str, str], float]
) -> dict[str, int]:
    """Requests per method answered between two reads of ``edgelb_requests``."""
    return by_method(diff(before, after))


@dataclass(frozen=True)
class Scrape:
    """A Prometheus text exposition: samples by sample name (``dklb_transitions_total``) as
    (labels, value) pairs."""

    samples: Mapping[str, Sequence[tuple[Mapping[str, str], float]]]

    def by(self, name: str, *labels: str, **match: str) -> Counter[tuple[str, ...]]:
        """Sum of ``name``'s samples whose labels equal ``match``, keyed by the values of ``labels``."""
        totals: Counter[tuple[str, ...]] = Counter()
        for sample_labels, value in self.samples.get(name, ()):
            if all(sample_labels.get(k, "") == v for k, v in match.items()):
                # typeshed says a Counter holds ints; it holds any number (floats here).
                totals[tuple(sample_labels.get(label, "") for label in labels)] += value  # type: ignore[assignment]
        return totals

    def total(self, name: str, **match: str) -> float:
        """Sum of ``name``'s samples whose labels equal ``match`` (0 when there is none)."""
        return sum(self.by(name, **match).values())


def parse_metrics(text: str) -> Scrape:
    """Prometheus text format (what prometheus_client and Kubernetes serve) into a ``Scrape``."""
    samples: dict[str, list[tuple[Mapping[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return Scrape(samples)


def metric_sum(scrape: Scrape, name: str, **match: str) -> float:
    """``scrape.total(name, **match)``: the sum of a sample name's values, 0 when absent."""
    return scrape.total(name, **match)


def controller_metrics(url: str) -> Scrape:
    """dklb's ``/metrics`` (``url`` is the health server's base URL or the /metrics URL itself).

    Names (``engine.telemetry.metrics``): ``dklb_transitions_total{from,to,trigger}``,
    ``dklb_edgelb_requests_total{method,route,code}``, ``dklb_kubernetes_requests_total{verb,resource,code}``,
    ``dklb_reconcile_errors_total``, ``dklb_store_write_transactions_total``, ``dklb_bindings{state}``, ...
    """
    target = url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"
    response = requests.get(target, timeout=TIMEOUT)
    response.raise_for_status()
    return parse_metrics(response.text)


def sum_apiserver_requests(text: str) -> Counter[tuple[str, str]]:
    """``apiserver_request_total`` summed by (verb, resource) over every other label.

    The resource is spelled as dklb's metrics spell it: ``services``, ``services/status``; a
    non-resource request (``/healthz``, ``/metrics``) has its path as resource (Kubernetes puts it in
    the subresource label).
    """
    totals: Counter[tuple[str, str]] = Counter()
    for labels, value in parse_metrics(text).samples.get("apiserver_request_total", ()):
        resource, subresource = labels.get("resource", ""), labels.get("subresource", "")
        name = f"{resource}/{subresource}" if resource and subresource else resource or subresource
        # typeshed says a Counter holds ints; it holds any number (floats here).
        totals[(labels.get("verb", ""), name)] += value  # type: ignore[assignment]
    return totals


def apiserver_requests(server: str, token: str) -> dict[tuple[str, str], float]:
    """Requests the kube-apiserver at ``server`` has served, by (verb, resource); see
    ``sum_apiserver_requests``. Includes the API server's own loopback requests (its controllers
    list and create a few objects at start-up) and every client's, not only the controller's."""
    with warnings.catch_warnings():
        # The local cluster's certificate is self-signed; this is a read of counters on loopback.
        warnings.simplefilter("ignore", InsecureRequestWarning)
        # verify=False per request: a session-level False loses to REQUESTS_CA_BUNDLE in the environment.
        response = requests.get(
            server.rstrip("/") + "/metrics",
            headers={"Authorization": f"Bearer {token}"},
            verify=False,
            timeout=TIMEOUT,
        )
    response.raise_for_status()
    return dict(sum_apiserver_requests(response.text))


def write_requests(counts: Mapping[tuple[str, str], float], *, resources: Iterable[str] | None = None) -> int:
    """Write requests (``WRITE_VERBS``) in one ``apiserver_requests`` scrape (or a ``diff`` of two),
    optionally only to ``resources`` (``services``, ``services/status``, ``events``...)."""
    wanted = None if resources is None else set(resources)
    return int(
        sum(
            n
            for (verb, resource), n in counts.items()
            if verb in WRITE_VERBS and (wanted is None or resource in wanted)
        )
    )


def writes_between(
    before: Mapping[tuple[str, str], float],
    after: Mapping[tuple[str, str], float],
    *,
    resources: Iterable[str] | None = None,
) -> int:
    """Write requests served between two ``apiserver_requests`` scrapes."""
    return write_requests(diff(before, after), resources=resources)


# -- latencies --------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100): the smallest value with at least q% of
    the values at or below it. Always one of the values; ``ValueError`` for none."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    # q * n first: exact for whole-number q, where q / 100 * n can land a hair above an integer.
    rank = math.ceil(q * len(ordered) / 100)
    return ordered[rank - 1]


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` by nearest rank; ``{}`` for no values."""
    ordered = sorted(values)
    if not ordered:
        return {}
    return {f"p{q:g}": percentile(ordered, q) for q in qs}


def quantiles(values: Iterable[float], points: int = 101) -> list[float]:
    """``points`` nearest-rank quantiles from the smallest value to the largest, evenly spaced in
    rank (the q-th of ``points - 1`` steps), rounded to the millisecond; ``[]`` for no values."""
    ordered = sorted(values)
    if not ordered:
        return []
    if points < 2:
        raise ValueError(f"quantiles need at least 2 points, not {points}")
    last = len(ordered) - 1
    return [round(ordered[round(i * last / (points - 1))], 3) for i in range(points)]
