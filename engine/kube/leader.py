"""Leader election between dklb replicas on a ``coordination.k8s.io/v1`` Lease.

Where it sits in the data flow: ``dklb run`` starts one ``LeaderElector`` next to the
``Controller``. Only the replica holding the Lease may write (to EdgeLB, to Kubernetes, to the
store): ``is_leader`` feeds ``engine.runtime.fence.Fence``, which every write passes through, and the
callbacks tell the Controller to run or pause its workers. The elector itself writes nothing but
its Lease.

The semantics are client-go's ``leaderelection`` package:

* acquire when the Lease does not exist (create), has no holder (released), is ours, or is
  expired; "expired" is judged by when THIS replica last saw the record change plus its
  ``leaseDurationSeconds``, never by comparing ``renewTime`` with our wall clock, so replicas
  need no synchronized clocks (only clocks that tick at about the same rate);
* the leader renews every ``retry_period``; every write carries the ``resourceVersion`` it read,
  so two replicas racing for an expired Lease cannot both win: the loser gets a 409;
* ``leaseTransitions`` grows by one each time a different replica takes the Lease;
* the leader considers itself leader only while its last successful renew (timed from when the
  request was SENT) is younger than ``renew_deadline``. Others wait ``lease_duration`` from when
  they SAW that renew, which is later, and ``renew_deadline < lease_duration``: a leader cut off
  from the API server stops writing before anyone else can start.

The Lease is read and written as raw JSON through the ``ApiClient``: the v37 client's models
serialize ``renewTime``/``acquireTime`` (``MicroTime``) with ``datetime.isoformat``, which drops
the fraction when the microsecond is 0 and the API server then refuses the object (400); a
dict body is coerced into the same model by the generated methods' argument validation.
"""

from __future__ import annotations

import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("dklb.leader")

Lease = dict[str, Any]

_COLLECTION = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_OBJECT = _COLLECTION + "/{name}"

# A request never gets less than this to complete: a timeout shorter than a round trip would turn
# a healthy API server into a failure.
_MIN_REQUEST_TIMEOUT = 0.05
# Followers retry after retry_period * uniform(1, 1 + _JITTER), as client-go does, so that replicas
# started together do not hit the API server in lockstep.
_JITTER = 0.2


def default_identity() -> str:
    """``hostname_<random>``: unique per process, so a restarted pod never mistakes the Lease of
    its previous incarnation for its own (it must wait for it to expire like everyone else)."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:10]}"


def micro_time(moment: datetime | None = None) -> str:
    """A ``metav1.MicroTime`` as the API server parses it: always six fractional digits, UTC."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseAPI:
    """One Lease as raw JSON: ``get`` (None when absent), ``create``, ``replace``.

    Errors are the client's ``ApiException`` (``status`` 404, 409, ...) or whatever the HTTP
    layer raises (urllib3 errors on timeouts and refused connections).
    """

    def __init__(self, api_client: ApiClient, *, namespace: str, name: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.name = name

    def get(self, *, timeout: float) -> Lease | None:
        try:
            return self._call("GET", _OBJECT, None, timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, lease: Lease, *, timeout: float) -> Lease:
        return self._call("POST", _COLLECTION, lease, timeout)

    def replace(self, lease: Lease, *, timeout: float) -> Lease:
        """PUT with the ``metadata.resourceVersion`` of ``lease``: 409 if the Lease changed since."""
        return self._call("PUT", _OBJECT, lease, timeout)

    def _call(self, method: str, path: str, body: Lease | None, timeout: float) -> Lease:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        method, url, headers, serialized, post = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            path_params={"namespace": self.namespace, "name": self.name},
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method, url, header_params=headers, body=serialized, post_params=post, _request_timeout=timeout
        )
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(data)


class LeaderElector:
    """Campaigns for the Lease ``namespace/name`` in daemon threads; see the module docstring.

    Two threads: the campaign thread acquires and renews; a watchdog ends leadership the moment
    the renew deadline passes, even while the campaign thread is stuck in a request (urllib3
    retries a timed-out connection, so a request can outlast its own timeout several times).

    ``on_started_leading`` / ``on_stopped_leading`` are called from those threads (or from the
    thread calling ``stop``), exactly once per transition and strictly alternating (started,
    stopped, started, ...). They must return quickly (set a flag, wake a thread): renewing waits
    for them. ``stop`` called from a callback returns without joining (it would wait for itself).
    ``on_stopped_leading`` runs BEFORE ``stop(release=True)`` gives the Lease away, so a callback
    that waits for in-flight writes to finish makes the hand-over clean.
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        namespace: str,
        name: str = "dklb",
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        may_lead: Callable[[], bool] = lambda: True,
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        # The safety margin: a leader gives up at renew_deadline after its last renew, the others
        # take over at lease_duration after they saw it. Without the margin both would write.
        if not lease_duration > renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        # The leader gets several tries to renew before its deadline.
        if not renew_deadline > retry_period * (1 + _JITTER):
            raise ValueError("renew_deadline must be greater than retry_period * 1.2")
        if retry_period <= 0:
            raise ValueError("retry_period must be positive")
        self.leases = LeaseAPI(api_client, namespace=namespace, name=name)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.clock = clock
        # False while this replica cannot do a leader's work (its database is unreachable): it
        # neither acquires nor renews, so the Lease expires and a replica that can takes over.
        self.may_lead = may_lead
        self._abstaining = False
        # _lock guards the fields below for short reads and writes; _transition serializes each
        # change of _leading together with its callback, so callbacks from the campaign thread
        # and from the watchdog cannot overtake each other.
        self._lock = threading.Lock()
        self._transition = threading.RLock()
        self._leading = False
        # clock() when the last successful acquire/renew was SENT; meaningful while _leading.
        self._renewed_at = 0.0
        self._last_renew: float | None = None
        # The record as last seen and clock() when it was first seen in that form: the basis of
        # the expiry judgment ("unchanged for leaseDurationSeconds").
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._release_on_stop = True
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._rng = random.Random()

    # ---- public API --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("LeaderElector already started")
        self._thread = threading.Thread(target=self._run, name=f"dklb-leader-{self.name}", daemon=True)
        self._watchdog = threading.Thread(
            target=self._watch, name=f"dklb-leader-{self.name}-watchdog", daemon=True
        )
        self._thread.start()
        self._watchdog.start()

    def stop(self, release: bool = True) -> None:
        """Stop campaigning: ``is_leader()`` is False from now on and ``on_stopped_leading`` is
        called (here, if leading); then, with ``release``, the Lease is given away (holder
        cleared) so the others need not wait for it to expire. Without ``release`` it behaves,
        for the others, like a crash.

        Blocks until the threads end: within the request in flight (bounded by
        ``renew_deadline``) plus the release request.
        """
        self._release_on_stop = release
        self._stop.set()
        ours = (self._thread, self._watchdog)
        if threading.current_thread() in ours:
            return  # from a callback: joining would wait for ourselves; _run's finally demotes
        with self._transition:
            self._demote("stopped")
        for thread in ours:
            if thread is not None:
                thread.join()

    def is_leader(self) -> bool:
        """True only while the last successful renew is younger than ``renew_deadline``.

        Computed from the clock on every call, not from the thread's last verdict: a thread stuck
        in a slow request must not leave a stale True behind.
        """
        if self._stop.is_set():
            return False
        with self._lock:
            return self._leading and self.clock() - self._renewed_at < self.renew_deadline

    @property
    def last_renew(self) -> float | None:
        """``clock()`` when the last successful acquire/renew was sent, None before the first
        (health checks and metrics: "seconds since the last renew"). Kept after leadership ends."""
        with self._lock:
            return self._last_renew

    @property
    def holder(self) -> str:
        """The holder in the record as last observed ("" for none or not yet observed)."""
        with self._lock:
            return (self._observed or {}).get("holderIdentity") or ""

    # ---- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = self.clock()
                self._attempt(started)
                self._stop.wait(self._pause(started))
        finally:
            # Stop writing first, then hand the Lease over: the other way round there would be
            # a moment with two writers.
            with self._transition:
                self._demote("stopped")
            if self._release_on_stop:
                self._release()

    def _watch(self) -> None:
        """Ends leadership at the renew deadline, whatever the campaign thread is doing."""
        while True:
            with self._transition:
                self._demote_if_expired()
            with self._lock:
                leading, deadline = self._leading, self._renewed_at + self.renew_deadline
            # Asleep until the deadline as it stands now; a renew in between only moves it later,
            # and waking at the old one just finds it renewed and sleeps again.
            wait = max(0.0, deadline - self.clock()) if leading else self.retry_period
            if self._stop.wait(wait + 0.001):
                return

    def _attempt(self, sent: float) -> None:
        """One try to acquire or renew, then the consequences for our leadership."""
        if not self._may_lead():
            # Not a verdict on who leads either: the watchdog ends our leadership at the deadline.
            won: bool | None = None
        else:
            won = self._try_or_none(sent)
        self._conclude(won, sent)

    def _may_lead(self) -> bool:
        try:
            may = bool(self.may_lead())
        except Exception:
            log.exception("lease %s/%s: may_lead failed; not campaigning", self.namespace, self.name)
            may = False
        if may == self._abstaining:
            self._abstaining = not may
            if may:
                log.info("lease %s/%s: campaigning again", self.namespace, self.name)
            else:
                log.warning(
                    "lease %s/%s: this replica cannot lead now (its database is unreachable): "
                    "not acquiring or renewing the Lease",
                    self.namespace,
                    self.name,
                )
        return may

    def _try_or_none(self, sent: float) -> bool | None:
        try:
            return self._try_acquire_or_renew(sent)
        except Exception as exc:
            # Network errors, 5xx, timeouts: not a verdict on who leads. Keep leading until the
            # deadline says otherwise.
            log.warning("lease %s/%s: acquire/renew failed: %s", self.namespace, self.name, _brief(exc))
            return None

    def _conclude(self, won: bool | None, sent: float) -> None:
        with self._transition:
            # A deadline that passed before this answer came (is_leader() has said False since:
            # the callbacks must say so too, even if this very renew then succeeded).
            self._demote_if_expired()
            if won is False:
                # A 409 or another valid holder: someone else leads, stop at once.
                self._demote("lease held by another replica")
            # Not after stop(): a renew that was in flight when it was called must not revive us.
            if won and not self._stop.is_set() and self.clock() - sent < self.renew_deadline:
                with self._lock:
                    self._renewed_at = self._last_renew = sent
                    promote = not self._leading
                    self._leading = True
                if promote:
                    log.info("lease %s/%s: %s is now the leader", self.namespace, self.name, self.identity)
                    self._callback(self.on_started_leading)

    def _pause(self, started: float) -> float:
        """Seconds until the next attempt: ``retry_period`` after the start of this one, jittered
        for followers (the watchdog, not this pause, notices a missed deadline)."""
        with self._lock:
            leading = self._leading
        period = self.retry_period if leading else self.retry_period * self._rng.uniform(1.0, 1.0 + _JITTER)
        return max(0.0, started + period - self.clock())

    def _try_acquire_or_renew(self, sent: float) -> bool:
        """client-go's ``tryAcquireOrRenew``: True when we hold the Lease now, False when another
        replica does (or won the race); API errors propagate."""
        lease = self.leases.get(timeout=self._timeout(sent))
        if lease is None:
            spec = self._spec(previous=None)
            try:
                created = self.leases.create(
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": spec,
                    },
                    timeout=self._timeout(sent),
                )
            except ApiException as exc:
                if exc.status == 409:  # someone created it between our GET and our POST
                    return False
                raise
            self._observe(created.get("spec") or {}, self.clock())
            return True

        record = lease.get("spec") or {}
        now = self.clock()
        self._observe(record, now)
        holder = record.get("holderIdentity") or ""
        if holder and holder != self.identity:
            with self._lock:
                observed_at = self._observed_at
            # The holder's own duration, not ours: it is the one that promised to stop writing
            # within it. Missing (not written by an elector) → ours.
            duration = record.get("leaseDurationSeconds") or self.lease_duration
            if now < observed_at + duration:
                return False

        lease["spec"] = self._spec(previous=record)
        try:
            replaced = self.leases.replace(lease, timeout=self._timeout(sent))
        except ApiException as exc:
            if exc.status == 409:  # resourceVersion moved: someone else wrote first
                return False
            raise
        self._observe(replaced.get("spec") or {}, self.clock())
        return True

    def _spec(self, *, previous: dict[str, Any] | None) -> dict[str, Any]:
        stamp = micro_time()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            # Whole seconds in the object: round UP, a shorter promise would be unsafe.
            "leaseDurationSeconds": math.ceil(self.lease_duration),
            "renewTime": stamp,
        }
        if previous is not None and previous.get("holderIdentity") == self.identity:
            spec["acquireTime"] = previous.get("acquireTime") or stamp
            spec["leaseTransitions"] = previous.get("leaseTransitions") or 0
        else:
            spec["acquireTime"] = stamp
            # A new Lease starts at 0; taking it from someone (or from nobody after a release)
            # is a transition.
            spec["leaseTransitions"] = 0 if previous is None else (previous.get("leaseTransitions") or 0) + 1
        return spec

    def _observe(self, record: dict[str, Any], now: float) -> None:
        with self._lock:
            if record != self._observed:
                self._observed = dict(record)
                self._observed_at = now

    def _timeout(self, sent: float) -> float:
        """What is left of this attempt's deadline: a renew that completes later than the renew
        deadline is useless, and a hung request must not keep the thread from noticing that."""
        with self._lock:
            base = self._renewed_at if self._leading else sent
        return max(_MIN_REQUEST_TIMEOUT, base + self.renew_deadline - self.clock())

    # ---- transitions -------------------------------------------------------------------------

    def _demote_if_expired(self) -> None:
        """Call with ``_transition`` held."""
        with self._lock:
            expired = self._leading and self.clock() - self._renewed_at >= self.renew_deadline
        if expired:
            self._demote("renew deadline passed")

    def _demote(self, why: str) -> None:
        """Call with ``_transition`` held."""
        with self._lock:
            was = self._leading
            self._leading = False
        if was:
            log.warning("lease %s/%s: %s stopped leading: %s", self.namespace, self.name, self.identity, why)
            self._callback(self.on_stopped_leading)

    def _callback(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("leader election callback %r failed", callback)

    def _release(self) -> None:
        """Clear the holder if it is still us, as client-go's ``release``: others acquire at once
        (an empty holder is free), ``leaseTransitions`` unchanged (the next holder counts it)."""
        try:
            timeout = self.renew_deadline
            lease = self.leases.get(timeout=timeout)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            stamp = micro_time()
            spec = lease["spec"]
            lease["spec"] = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": spec.get("leaseTransitions") or 0,
            }
            released = self.leases.replace(lease, timeout=timeout)
            self._observe(released.get("spec") or {}, self.clock())
            log.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)
        except Exception as exc:
            # Not fatal: the others take over after lease_duration instead of at once.
            log.warning("lease %s/%s: release failed: %s", self.namespace, self.name, _brief(exc))


def _brief(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
