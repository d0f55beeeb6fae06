"""S3 (security review): the webhook and /metrics stay up under 8 MiB bodies and slow clients.

The real servers (``tests/integration/endpoints_server.py``: ``AdmissionServer`` over TLS and
``HealthServer``, with ``dklb run``'s limits) run in a process of their own on loopback. Against
EACH of them at once, from one attacker process each (``tests/integration/endpoint_attack.py``):

- 50 clients send an 8 MiB body (Content-Length 8 MiB), each at most once a second, for as long
  as the attack lasts;
- 50 slow clients: one third send one byte a second of a request (after the TLS handshake on the
  webhook), one third connect and say nothing (no TLS hello), one third finish the handshake and
  then say nothing (plain connect-and-wait on /metrics). Each one, once cut, starts again.

Meanwhile the API server's part (a normal AdmissionReview on a new TLS connection) and the
kubelet's (``GET /healthz``) are timed. The review found 755 MB of peak RSS after 10 such bodies
and slow clients holding a thread each, forever.

Asserted: the server process's peak RSS (VmHWM) stays under 150 MB; every normal review and probe
answers within 1 s; every 8 MiB body is refused (413 or a closed connection) without the server
reading it; every slow client is cut within the server's deadline (10 s webhook, 5 s /metrics)
plus SLACK; and ``dklb_http_refused_total`` on ``/metrics`` counted both kinds on both servers
(``body_too_large``, ``deadline``), so an operator sees the attack without debug logging.

Figures measured on the shared 2-core development machine (load average 4.5-8, CPU pressure up
to 90%), over 6 runs: peak RSS 60-81 MB (baseline 40 MB; the review measured 755 MB); normal
reviews under attack median 7-56 ms, max 114-601 ms (one 1.7 s outlier at load 8 when the reviews
ran back to back, before the pacing); probes max 9-272 ms; slow clients cut 10.00-10.41 s
(webhook) and 5.00-5.18 s (/metrics) after connecting, 1.0 s late at worst at load 8; every 8 MiB
body refused with a 413 or a reset, never read. Ten parallel maximal (3 MiB) bodies: 131-134 MB.
The test prints its figures (run with ``-s``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from engine.admission.server import LIMITS as ADMISSION_LIMITS
from engine.telemetry.health import LIMITS as HTTP_LIMITS
from tests.integration.endpoint_attack import BIG, CLIENTS
from tests.processes import scrape, total
from tests.unit.test_admission_server import admission_review

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
RSS_BUDGET_MB = 150
ANSWER_BOUND = 1.0
# How late past the server's deadline a cut may be seen by the client: the server's timer fires on
# time (asyncio), but on a loaded 2-core machine the server, the attackers and the test share the
# CPU. Measured: 0.05-0.4 s late at load average ~5, 1.0 s at ~8 (CPU pressure 90%).
SLACK = 3.0
# Between two normal reviews (and probes) during the attack.
PACE = 0.3
# How long the normal traffic runs under attack: past the webhook's deadline, so that the slow
# clients' first round has been cut and the second one is under way.
ATTACK = ADMISSION_LIMITS.deadline + 2.0


@dataclass
class Endpoint:
    name: str
    port: int
    tls: ssl.SSLContext | None
    deadline: float


@dataclass
class Served:
    pid: int
    cafile: Path
    admission: Endpoint
    http: Endpoint


def vm_hwm_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def read_line(stream: IO[bytes], timeout: float, what: str) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"{what}: nothing within {timeout:.0f} s"
    return stream.readline()


def start(module: str, arg: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module, arg],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        **kwargs,
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    proc = start("tests.integration.endpoints_server", str(tmp_path / "certs"))
    try:
        assert proc.stdout is not None
        info = json.loads(read_line(proc.stdout, 60, "the endpoint server's ports"))
        cafile = tmp_path / "certs" / "ca.crt"
        context = ssl.create_default_context(cafile=str(cafile))
        yield Served(
            pid=info["pid"],
            cafile=cafile,
            admission=Endpoint("webhook", info["admission"], context, ADMISSION_LIMITS.deadline),
            http=Endpoint("/metrics", info["http"], None, HTTP_LIMITS.deadline),
        )
    finally:
        kill(proc)


def attack(served: Served, endpoint: Endpoint) -> subprocess.Popen[bytes]:
    path = "/validate" if endpoint.tls is not None else "/metrics"
    config = {
        "port": endpoint.port,
        "cafile": str(served.cafile) if endpoint.tls is not None else None,
        "deadline": endpoint.deadline,
        "give_up": endpoint.deadline + SLACK,
        "big_request": f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BIG}\r\n\r\n",
        "slow_request": f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}",
    }
    return start("tests.integration.endpoint_attack", json.dumps(config), stdin=subprocess.PIPE)


def exchange(endpoint: Endpoint, request: bytes) -> bytes:
    """One request on a new connection (a handshake each time, as after an idle close); the answer
    once its Content-Length is in, as the API server reads it (not the connection's close)."""
    with socket.create_connection((HOST, endpoint.port), timeout=ANSWER_BOUND * 5) as raw:
        sock = endpoint.tls.wrap_socket(raw, server_hostname=HOST) if endpoint.tls else raw
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < content_length(answer):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed before the whole answer: {answer[:100]!r}"
            answer += chunk
    return answer


def content_length(answer: bytes) -> int:
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    return int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])


def timed_review(endpoint: Endpoint, uid: str) -> float:
    body = json.dumps(admission_review(uid)).encode()
    started = time.monotonic()
    answer = exchange(
        endpoint,
        b"POST /validate?timeout=10s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    elapsed = time.monotonic() - started
    review = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert review["response"]["uid"] == uid and review["response"]["allowed"] is True
    return elapsed


def timed_probe(endpoint: Endpoint, path: str) -> float:
    started = time.monotonic()
    answer = exchange(endpoint, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    return time.monotonic() - started


def test_the_endpoints_stay_up_under_big_bodies_and_slow_clients(served: Served) -> None:
    """S3 (security review): 50 concurrent 8 MiB bodies and 50 slow clients against each endpoint."""
    timed_review(served.admission, "warm-up")
    timed_probe(served.http, "/metrics")
    baseline = vm_hwm_mb(served.pid)
    attackers = {e.name: attack(served, e) for e in (served.admission, served.http)}
    try:
        for proc in attackers.values():
            assert proc.stdout is not None
            assert read_line(proc.stdout, 60, "the slow clients connecting") == b"connected\n"
        reviews: list[float] = []
        probes: list[float] = []
        attack_ends = time.monotonic() + ATTACK
        while time.monotonic() < attack_ends:
            reviews.append(timed_review(served.admission, f"u-{len(reviews)}"))
            probes.append(timed_probe(served.http, ("/healthz", "/readyz", "/metrics")[len(probes) % 3]))
            # Pacing, not synchronization: normal traffic at a few requests a second all through
            # the attack, as an API server and a kubelet send it.
            select.select([], [], [], PACE)
        results = {}
        for name, proc in attackers.items():
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()  # the attack stops; the slow rounds under way run to their cut
            results[name] = json.loads(read_line(proc.stdout, ADMISSION_LIMITS.deadline + SLACK + 60, name))
    finally:
        for proc in attackers.values():
            kill(proc)
    peak = vm_hwm_mb(served.pid)

    report = [
        f"peak RSS {peak:.0f} MB (baseline {baseline:.0f} MB)",
        f"{len(reviews)} reviews under attack: median {sorted(reviews)[len(reviews) // 2] * 1000:.0f} ms, "
        f"max {max(reviews) * 1000:.0f} ms; {len(probes)} probes: max {max(probes) * 1000:.0f} ms",
    ]
    for endpoint in (served.admission, served.http):
        r = results[endpoint.name]
        cuts, big = r["cuts"], r["big"]
        report.append(
            f"{endpoint.name}: {len(cuts)} slow rounds cut after {min(cuts):.2f}-{max(cuts):.2f} s "
            f"(deadline {endpoint.deadline:.0f} s); {len(big)} 8 MiB bodies refused in at most "
            f"{max(s for s, _ in big) * 1000:.0f} ms ({', '.join(sorted({o for _, o in big}))})"
        )
    print("\n".join(["", *report]))

    assert peak < RSS_BUDGET_MB, report
    assert max(reviews) < ANSWER_BOUND, report
    assert max(probes) < ANSWER_BOUND, report
    for endpoint in (served.admission, served.http):
        r = results[endpoint.name]
        assert not r["uncut"] and not r["threads_alive"], (endpoint.name, r["uncut"][:5])
        assert len(r["cuts"]) >= CLIENTS
        assert max(r["cuts"]) < endpoint.deadline + SLACK, report
        assert len(r["big"]) >= CLIENTS
        # Never read: refused by its Content-Length, answered 413 or cut before the body went in.
        assert all(outcome != "sent whole" for _, outcome in r["big"]), report
        # Refused at once, not cut by the deadline (the attacker's own clock, in a niced process).
        assert max(seconds for seconds, _ in r["big"]) < endpoint.deadline, report
    # Counted, by server and reason. How many is up to timing (a big body's connection may be cut
    # by the deadline before its head is in): only that each kind was seen.
    samples = scrape(f"http://{HOST}:{served.http.port}/metrics")
    refused = "dklb_http_refused_total"
    for server in ("webhook", "http"):
        for reason in ("body_too_large", "deadline"):
            assert total(samples, refused, server=server, reason=reason) > 0, (server, reason)
    assert total(samples, refused, reason="client_certificate") == 0


def post_raw(endpoint: Endpoint, body: bytes, outcomes: list[bytes]) -> None:
    answer = exchange(
        endpoint,
        b"POST /validate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body,
    )
    outcomes.append(answer.split(b"\r\n", 1)[0])


def test_maximal_bodies_in_parallel_stay_under_the_memory_budget(served: Served) -> None:
    """S3 (security review), the review's fix 4: N parallel maximal bodies stay under a fixed RSS
    budget. The worst body under the 3 MiB cap, ``[{},{},...]``, is 75 MB once parsed; 10 of them
    at once are read and parsed one at a time, on one thread (measured: 135 MB peak, 233 MB when
    the pool's 8 threads took turns and glibc kept a parse's memory in each thread's arena)."""
    timed_review(served.admission, "warm-up")
    body = b"[" + b"{}," * (ADMISSION_LIMITS.max_body // 3 - 2) + b"{}]"
    assert len(body) <= ADMISSION_LIMITS.max_body
    outcomes: list[bytes] = []
    threads = [threading.Thread(target=post_raw, args=(served.admission, body, outcomes)) for _ in range(10)]
    for thread in threads:
        thread.start()
    reviews = [timed_review(served.admission, f"beside-{i}") for i in range(5)]
    for thread in threads:
        thread.join(timeout=60)
    peak = vm_hwm_mb(served.pid)
    print(
        f"\npeak RSS {peak:.0f} MB after 10 parallel 3 MiB bodies; "
        f"reviews beside them: max {max(reviews) * 1000:.0f} ms"
    )
    assert outcomes == [b"HTTP/1.1 400 Bad Request"] * 10
    assert peak < RSS_BUDGET_MB
    # Small reviews are not queued behind the ten parses (~4 s): they wait at most for the GIL,
    # which one json.loads of 3 MiB holds for ~0.3 s (measured: 0.5 s at most beside them).
    assert max(reviews) < 2.0
