"""``engine.kube.leader.LeaderElector`` against a real kube-apiserver (the ``kube_cluster`` fixture).

Each test gets a fresh namespace and its own ApiClient per elector (a replica each). Durations are
short (lease 2 s, renew deadline 1.5 s, retry 0.2 s) so expiry is observable in seconds. Every
wait polls a condition against a deadline; the only fixed-length loops are observation windows
in which a property must hold throughout ("stays follower for longer than a lease").
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client import ApiClient

from engine.kube.leader import LeaderElector, LeaseAPI, default_identity
from tests.processes import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

LEASE = 2.0
DEADLINE = 1.5
RETRY = 0.2
# Thread scheduling and a loopback round trip: far below any duration under test.
SLACK = 0.3


def hold_for(condition: Callable[[], bool], *, seconds: float, interval: float = 0.02) -> None:
    """Assert ``condition`` stays True for ``seconds`` (an observation window, not a sync point)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert condition()
        time.sleep(interval)


class Recorder:
    """The callbacks of one elector: ("started" | "stopped", time.monotonic()) in call order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, float]] = []
        self.on_stopped: Callable[[], None] | None = None

    def started(self) -> None:
        with self._lock:
            self.calls.append(("started", time.monotonic()))

    def stopped(self) -> None:
        if self.on_stopped is not None:
            self.on_stopped()
        with self._lock:
            self.calls.append(("stopped", time.monotonic()))

    def kinds(self) -> list[str]:
        with self._lock:
            return [kind for kind, _ in self.calls]

    def at(self, kind: str, index: int = 0) -> float:
        with self._lock:
            return [t for k, t in self.calls if k == kind][index]


class Partition:
    """Cuts one replica off the API server: while ``cut``, every request of its ApiClient fails
    as a refused connection would."""

    def __init__(self, api_client: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cut = False
        real = api_client.call_api

        def call_api(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                # No pool, as urllib3's own Retry.increment raises it (with the same type: ignore).
                raise urllib3.exceptions.MaxRetryError(None, "/leases", "connection refused (test)")  # type: ignore[arg-type]
            return real(*args, **kwargs)

        monkeypatch.setattr(api_client, "call_api", call_api)


@pytest.fixture
def namespace(kube_cluster: Any) -> Iterator[str]:
    api_client = config.new_client_from_config(str(kube_cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    name = f"leader-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    # No namespace controller runs here: the namespace stays Terminating; nothing waits on it.
    core.delete_namespace(name)
    api_client.close()


Factory = Callable[..., tuple[LeaderElector, Recorder]]


@pytest.fixture
def elector(kube_cluster: Any, namespace: str) -> Iterator[Factory]:
    """Builds started electors (one ApiClient each) and stops those still running at the end."""
    made: list[tuple[LeaderElector, ApiClient]] = []

    def make(
        identity: str | None = None, *, start: bool = True, **overrides: Any
    ) -> tuple[LeaderElector, Recorder]:
        api_client = config.new_client_from_config(str(kube_cluster.kubeconfig))
        recorder = Recorder()
        options: dict[str, Any] = {
            "namespace": namespace,
            "identity": identity or default_identity(),
            "lease_duration": LEASE,
            "renew_deadline": DEADLINE,
            "retry_period": RETRY,
            "on_started_leading": recorder.started,
            "on_stopped_leading": recorder.stopped,
        }
        options.update(overrides)
        le = LeaderElector(api_client, **options)
        made.append((le, api_client))
        if start:
            le.start()
        return le, recorder

    yield make
    for le, api_client in made:
        le.stop(release=False)
        api_client.close()


def read_lease(kube_cluster: Any, namespace: str, name: str = "dklb") -> dict[str, Any] | None:
    api_client = config.new_client_from_config(str(kube_cluster.kubeconfig))
    try:
        return LeaseAPI(api_client, namespace=namespace, name=name).get(timeout=5.0)
    finally:
        api_client.close()


def parse_micro_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


# ---- construction ------------------------------------------------------------------------------


def test_default_identity_is_hostname_and_random_suffix() -> None:
    import socket

    one, two = default_identity(), default_identity()
    assert one.startswith(socket.gethostname() + "_")
    assert one != two


@pytest.mark.parametrize(
    ("lease", "deadline", "retry"),
    [(10.0, 10.0, 2.0), (5.0, 10.0, 2.0), (15.0, 2.0, 2.0)],
)
def test_unsafe_durations_are_refused(lease: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError):
        LeaderElector(
            None,  # type: ignore[arg-type]  # never used: the durations are refused first
            namespace="ns",
            identity="me",
            lease_duration=lease,
            renew_deadline=deadline,
            retry_period=retry,
            on_started_leading=lambda: None,
            on_stopped_leading=lambda: None,
        )


# ---- acquiring and holding ---------------------------------------------------------------------


def test_single_elector_acquires_and_renews_the_lease(
    kube_cluster: Any, namespace: str, elector: Factory
) -> None:
    a, rec = elector("replica-a")
    assert wait_for(a.is_leader, timeout=5.0)
    assert rec.kinds() == ["started"]

    lease = read_lease(kube_cluster, namespace)
    assert lease is not None
    spec = lease["spec"]
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseDurationSeconds"] == 2
    assert spec["leaseTransitions"] == 0
    acquired = parse_micro_time(spec["acquireTime"])
    first_renew = parse_micro_time(spec["renewTime"])
    assert first_renew >= acquired

    # Renewing moves renewTime (and the resourceVersion) but keeps acquireTime and the count.
    def renewed() -> bool:
        now = read_lease(kube_cluster, namespace)
        return now is not None and parse_micro_time(now["spec"]["renewTime"]) > first_renew

    assert wait_for(renewed, timeout=5 * RETRY + SLACK)
    later = read_lease(kube_cluster, namespace)
    assert later is not None
    assert later["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"]
    assert later["spec"]["acquireTime"] == spec["acquireTime"]
    assert later["spec"]["leaseTransitions"] == 0
    assert a.is_leader()
    assert rec.kinds() == ["started"]


def test_second_elector_stays_follower_while_the_first_renews(
    kube_cluster: Any, namespace: str, elector: Factory
) -> None:
    a, rec_a = elector("replica-a")
    assert wait_for(a.is_leader, timeout=5.0)
    b, rec_b = elector("replica-b")
    assert wait_for(lambda: b.holder == "replica-a", timeout=5.0)

    # Longer than a lease: were A's renewals not seen as renewals, B would take over in here.
    hold_for(lambda: a.is_leader() and not b.is_leader(), seconds=2 * LEASE)

    lease = read_lease(kube_cluster, namespace)
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-a"
    assert rec_a.kinds() == ["started"]
    assert rec_b.kinds() == []


def test_racing_for_a_missing_lease_elects_exactly_one(namespace: str, elector: Factory) -> None:
    # Both start against an absent Lease: both GET 404 and POST; the API server lets one create
    # it and answers the other 409, and then resourceVersion keeps the renewals apart.
    electors = [elector(f"replica-{i}", start=False) for i in range(3)]
    for le, _ in electors:
        le.start()
    assert wait_for(lambda: any(le.is_leader() for le, _ in electors), timeout=5.0)
    hold_for(lambda: sum(le.is_leader() for le, _ in electors) == 1, seconds=LEASE)
    assert sorted(len(rec.kinds()) for _, rec in electors) == [0, 0, 1]


# ---- handing over ------------------------------------------------------------------------------


def test_release_hands_over_at_once(kube_cluster: Any, namespace: str, elector: Factory) -> None:
    a, rec_a = elector("replica-a")
    assert wait_for(a.is_leader, timeout=5.0)
    b, rec_b = elector("replica-b")
    assert wait_for(lambda: b.holder == "replica-a", timeout=5.0)

    # A must stop writing BEFORE the Lease is given away: when its on_stopped_leading runs, the
    # Lease still names A.
    holder_when_stopped: list[str] = []
    rec_a.on_stopped = lambda: holder_when_stopped.append(
        (read_lease(kube_cluster, namespace) or {})["spec"]["holderIdentity"]
    )

    released = time.monotonic()
    a.stop(release=True)
    assert not a.is_leader()
    assert rec_a.kinds() == ["started", "stopped"]
    assert holder_when_stopped == ["replica-a"]

    assert wait_for(b.is_leader, timeout=LEASE)
    # B's next poll after the release, not an expiry: well within a lease.
    assert rec_b.at("started") - released < 2 * RETRY + SLACK < LEASE
    lease = read_lease(kube_cluster, namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert rec_b.kinds() == ["started"]


def test_crashed_leader_is_replaced_after_the_lease_duration_and_not_before(
    kube_cluster: Any, namespace: str, elector: Factory
) -> None:
    a, rec_a = elector("replica-a")
    assert wait_for(a.is_leader, timeout=5.0)
    b, rec_b = elector("replica-b")
    assert wait_for(lambda: b.holder == "replica-a", timeout=5.0)

    # SIGKILL: the renewals stop and nobody releases the Lease.
    a.stop(release=False)
    last_renew = a.last_renew
    assert last_renew is not None
    lease = read_lease(kube_cluster, namespace)
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-a"

    # Not before: B saw A's last renewal after A sent it, and waits a whole lease from then.
    while time.monotonic() < last_renew + LEASE - 0.05:
        assert not b.is_leader()
        time.sleep(0.02)
    assert wait_for(b.is_leader, timeout=2 * RETRY + SLACK + 1.0)
    took_over = rec_b.at("started")
    assert took_over >= last_renew + LEASE
    # ...and not much after: the next follower poll after the expiry.
    assert took_over <= last_renew + LEASE + 2 * RETRY + SLACK
    lease = read_lease(kube_cluster, namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert rec_a.kinds() == ["started", "stopped"]
    assert rec_b.kinds() == ["started"]


def test_leader_cut_off_from_the_api_server_steps_down_before_anyone_takes_over(
    namespace: str, elector: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, rec_a = elector("replica-a")
    partition = Partition(a.leases.api_client, monkeypatch)
    assert wait_for(a.is_leader, timeout=5.0)
    b, rec_b = elector("replica-b")
    assert wait_for(lambda: b.holder == "replica-a", timeout=5.0)

    partition.cut = True
    cut_at = time.monotonic()
    assert wait_for(lambda: rec_a.kinds() == ["started", "stopped"], timeout=DEADLINE + RETRY + SLACK)
    last_renew = a.last_renew
    assert last_renew is not None and last_renew <= cut_at
    stepped_down = rec_a.at("stopped")
    assert not a.is_leader()
    # Leader until renew_deadline after its last renew, and told so at once then.
    assert last_renew + DEADLINE <= stepped_down <= last_renew + DEADLINE + RETRY
    assert stepped_down - cut_at <= DEADLINE + RETRY

    # B acquires only after a whole lease, strictly after A stopped considering itself leader.
    assert wait_for(b.is_leader, timeout=LEASE + SLACK)
    assert rec_b.at("started") >= last_renew + LEASE > stepped_down

    # Back online, A finds B holding a valid Lease: it stays a follower, no more callbacks.
    partition.cut = False
    assert wait_for(lambda: a.holder == "replica-b", timeout=5.0)
    hold_for(lambda: b.is_leader() and not a.is_leader(), seconds=LEASE)
    assert rec_a.kinds() == ["started", "stopped"]
    assert rec_b.kinds() == ["started"]


def test_failing_lease_api_ends_leadership_within_the_renew_deadline(
    namespace: str, elector: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, rec = elector("replica-a")
    assert wait_for(a.is_leader, timeout=5.0)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise client.ApiException(status=503, reason="Service Unavailable")

    monkeypatch.setattr(a.leases, "get", refused)
    monkeypatch.setattr(a.leases, "replace", refused)
    failing_since = time.monotonic()
    assert wait_for(lambda: not a.is_leader(), timeout=DEADLINE + RETRY)
    assert wait_for(lambda: rec.kinds() == ["started", "stopped"], timeout=RETRY)
    assert rec.at("stopped") - failing_since <= DEADLINE + RETRY

    # The API answers again and the Lease still names A: A renews its own Lease and leads again,
    # each transition reported exactly once.
    monkeypatch.undo()
    assert wait_for(a.is_leader, timeout=5.0)
    hold_for(a.is_leader, seconds=3 * RETRY)
    assert rec.kinds() == ["started", "stopped", "started"]


def test_leader_stuck_in_a_hung_request_steps_down_at_the_deadline(
    namespace: str, elector: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API server stops answering (a black-holed connection): the campaign thread sits in a
    # request; the watchdog must still end leadership at the deadline, not when the request
    # gives up.
    a, rec = elector("replica-a")
    assert wait_for(a.is_leader, timeout=5.0)
    hang = threading.Event()
    real = a.leases.api_client.call_api

    def hung(*args: Any, **kwargs: Any) -> Any:
        hang.wait(timeout=30)
        # No pool, as urllib3 raises it where it has none (typed as if it always had one).
        raise urllib3.exceptions.ReadTimeoutError(None, "/leases", "read timed out (test)")  # type: ignore[arg-type]

    monkeypatch.setattr(a.leases.api_client, "call_api", hung)
    try:
        assert wait_for(lambda: rec.kinds() == ["started", "stopped"], timeout=DEADLINE + RETRY + SLACK)
        last_renew = a.last_renew
        assert last_renew is not None
        assert last_renew + DEADLINE <= rec.at("stopped") <= last_renew + DEADLINE + RETRY
        assert not a.is_leader()
    finally:
        hang.set()
        monkeypatch.setattr(a.leases.api_client, "call_api", real)
    # The request gives up; the Lease still names A, so A leads again: each transition once.
    assert wait_for(a.is_leader, timeout=5.0)
    assert rec.kinds() == ["started", "stopped", "started"]


# ---- bookkeeping -------------------------------------------------------------------------------


def test_lease_transitions_count_holder_changes(kube_cluster: Any, namespace: str, elector: Factory) -> None:
    def spec() -> dict[str, Any]:
        lease = read_lease(kube_cluster, namespace)
        assert lease is not None
        return lease["spec"]

    a, rec_a = elector("replica-a")
    assert wait_for(a.is_leader, timeout=5.0)
    first = spec()
    assert (first["holderIdentity"], first["leaseTransitions"]) == ("replica-a", 0)
    # Renewals by the same holder are not transitions.
    assert wait_for(lambda: spec()["renewTime"] != first["renewTime"], timeout=5 * RETRY + SLACK)
    assert spec()["leaseTransitions"] == 0

    b, rec_b = elector("replica-b")
    assert wait_for(lambda: b.holder == "replica-a", timeout=5.0)
    a.stop(release=True)
    released = spec()
    # A release clears the holder and leaves the count to the next holder.
    if released["holderIdentity"] == "":
        assert released["leaseTransitions"] == 0
    assert wait_for(b.is_leader, timeout=LEASE)
    second = spec()
    assert (second["holderIdentity"], second["leaseTransitions"]) == ("replica-b", 1)
    assert second["acquireTime"] != first["acquireTime"]

    c, rec_c = elector("replica-c")
    assert wait_for(lambda: c.holder == "replica-b", timeout=5.0)
    b.stop(release=False)
    assert wait_for(c.is_leader, timeout=LEASE + SLACK + 1.0)
    third = spec()
    assert (third["holderIdentity"], third["leaseTransitions"]) == ("replica-c", 2)

    assert rec_a.kinds() == ["started", "stopped"]
    assert rec_b.kinds() == ["started", "stopped"]
    assert rec_c.kinds() == ["started"]


def test_stop_without_leading_calls_no_callback_and_leaves_the_lease(
    kube_cluster: Any, namespace: str, elector: Factory
) -> None:
    a, _ = elector("replica-a")
    assert wait_for(a.is_leader, timeout=5.0)
    b, rec_b = elector("replica-b")
    assert wait_for(lambda: b.holder == "replica-a", timeout=5.0)
    b.stop(release=True)
    lease = read_lease(kube_cluster, namespace)
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-a"
    assert rec_b.kinds() == []
    assert a.is_leader()


def test_a_leader_that_may_not_lead_stops_renewing_and_another_takes_over(
    namespace: str, elector: Factory
) -> None:
    # may_lead False: what dklb says while its database is unreachable (engine.app).
    allowed = threading.Event()
    allowed.set()
    a, rec_a = elector("replica-a", may_lead=allowed.is_set)
    assert wait_for(a.is_leader, timeout=5.0)
    b, rec_b = elector("replica-b")
    assert wait_for(lambda: b.holder == "replica-a", timeout=5.0)

    allowed.clear()
    cut_at = time.monotonic()
    assert wait_for(lambda: rec_a.kinds() == ["started", "stopped"], timeout=DEADLINE + RETRY + SLACK)
    assert rec_a.at("stopped") - cut_at <= DEADLINE + RETRY
    assert wait_for(b.is_leader, timeout=LEASE + 2 * RETRY + SLACK + 1.0)
    # Abstaining, A does not even try to acquire: B's Lease stays B's while B renews.
    hold_for(lambda: b.is_leader() and not a.is_leader(), seconds=LEASE)

    # Allowed again, A campaigns: it sees B holding the Lease and stays a follower.
    allowed.set()
    assert wait_for(lambda: a.holder == "replica-b", timeout=5.0)
    assert rec_a.kinds() == ["started", "stopped"]
    assert rec_b.kinds() == ["started"]


def test_a_replica_that_may_not_lead_does_not_acquire_a_free_lease(
    kube_cluster: Any, namespace: str, elector: Factory
) -> None:
    allowed = threading.Event()
    a, rec_a = elector("replica-a", may_lead=allowed.is_set)
    hold_for(lambda: not a.is_leader(), seconds=LEASE)
    assert read_lease(kube_cluster, namespace) is None
    allowed.set()
    assert wait_for(a.is_leader, timeout=5.0)
    assert rec_a.kinds() == ["started"]
