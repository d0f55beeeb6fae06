"""After an EdgeLB outage, the bindings it left waiting on a retry run as soon as EdgeLB answers.

Where it sits in the data flow: beside the controller, fed by the EdgeLB client. Every HTTP
request to EdgeLB ends in the client's ``on_response(method, route, status, seconds)`` hook;
``dklb run`` hands it to ``observe`` (as it hands it to the metrics). A request without an answer,
a 5xx or a 429 starts a failure; any other answer ends it. During an outage every binding that
needs EdgeLB fails and backs off (``states/lifecycle.yaml``: up to 5 minutes), so when EdgeLB is
back nothing may ask it anything for minutes. Hence, while it fails, a thread of its own asks
``GET /ping`` every ``interval`` seconds, and once EdgeLB answers (the probe or any regular
request) after failing for at least ``outage_after`` seconds, ``wake`` runs every binding waiting
on a retry now (``Controller.retry_now``: the work queue and the workers bound how many at once).

Shorter failures wake nothing: a flaky EdgeLB (a 503 now and then between answers) is what
backoff is for, and waking every retrying binding at each answer would defeat it; the backoff
such a short failure grows is about as short as the failure itself.

While EdgeLB answers, the thread waits on a condition: no probe, no timer, and ``observe`` takes
no lock. Only the leader probes and wakes (``may_act``: ``dklb run`` says "leading and synced");
a follower makes no EdgeLB request, so it never sees a failure to begin with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("dklb.recovery")

# Seconds between two probes while EdgeLB fails: how late, at most, the end of an outage is seen.
PROBE_INTERVAL = 2.0
# Seconds of failures without any answer before their end wakes the retrying bindings.
OUTAGE_AFTER = 10.0
# EdgeLB answers 504 for a pool's metadata while the pool is not deployed yet: not an outage.
_METADATA_ROUTE = "/v2/pools/{name}/metadata"


def answered(route: str, status: int) -> bool | None:
    """Whether EdgeLB answered a request (True), failed to (False), or the answer says neither (None).

    ``status`` is 0 when no answer came (refused, reset, timed out).
    """
    if status == 504 and route == _METADATA_ROUTE:
        return None
    return not (status == 0 or status == 429 or status >= 500)


class EdgeLBRecovery:
    """Notices EdgeLB failing, probes it meanwhile, and wakes the retrying bindings once it answers.

    ``observe`` is the client's hook; ``step`` is one round of the thread (``start``/``stop``),
    callable directly by tests, which then drive the clock themselves.
    """

    def __init__(
        self,
        *,
        ping: Callable[[], object],
        wake: Callable[[], int],
        may_act: Callable[[], bool] = lambda: True,
        interval: float = PROBE_INTERVAL,
        outage_after: float = OUTAGE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self._wake = wake
        self._may_act = may_act
        self.interval = interval
        self.outage_after = outage_after
        self._clock = clock
        self._cond = threading.Condition()
        # When the failures began (clock time), None while EdgeLB answers.
        self._failing_since: float | None = None
        self._announced = False
        # An outage ended: the retrying bindings are to be woken (by the thread, not in the hook).
        self._wake_due = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    # ---- inputs --------------------------------------------------------------------------------

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """The EdgeLB client's ``on_response`` hook: called after every request, from any thread."""
        verdict = answered(route, status)
        if verdict is None:
            return
        if verdict:
            # The hot path while EdgeLB is healthy: one attribute read, no lock.
            if self._failing_since is not None:
                self.answer()
        else:
            self.failure()

    def failure(self) -> None:
        """A request to EdgeLB got no answer (or a 5xx, a 429)."""
        with self._cond:
            if self._failing_since is not None or self._stopped:
                return
            self._failing_since = self._clock()
            self._announced = False
            # The thread starts probing.
            self._cond.notify_all()
        log.debug("an EdgeLB request failed: probing GET /ping every %gs until EdgeLB answers", self.interval)

    def answer(self) -> None:
        """EdgeLB answered a request: the failure, if any, is over."""
        with self._cond:
            if self._failing_since is None:
                return
            lasted = self._clock() - self._failing_since
            self._failing_since = None
            outage = lasted >= self.outage_after
            if outage:
                self._wake_due = True
                self._cond.notify_all()
        if outage:
            log.info("EdgeLB answers again after %.0fs of failures: the retrying bindings run now", lasted)
        else:
            log.debug("EdgeLB answers again after %.1fs: too short an outage to wake anything", lasted)

    # ---- state ---------------------------------------------------------------------------------

    @property
    def failing(self) -> bool:
        """EdgeLB's last word was a failure: it is probed."""
        return self._failing_since is not None

    @property
    def outage(self) -> bool:
        """EdgeLB has failed for ``outage_after`` seconds or more (the ``dklb_edgelb_outage`` gauge)."""
        since = self._failing_since
        return since is not None and self._clock() - since >= self.outage_after

    # ---- one round -----------------------------------------------------------------------------

    def step(self) -> bool:
        """Wake the retrying bindings if an outage ended, else probe EdgeLB if it is failing.

        False when nothing could be done now (not leading, the wake failed): the thread then
        waits an interval before the next round instead of trying again at once.
        """
        if not self._may_act():
            return False
        with self._cond:
            wake, self._wake_due = self._wake_due, False
        if wake:
            return self._run_wake()
        if self.failing:
            self.probe()
        return True

    def probe(self) -> bool:
        """One ``GET /ping``; whether EdgeLB answered (which ends the failure)."""
        self._announce()
        try:
            self._ping()
        except Exception as exc:
            # The client reports the failure through ``observe`` too; this covers any other ping.
            log.debug("EdgeLB probe failed: %s", exc)
            self.failure()
            return False
        self.answer()
        return True

    def _announce(self) -> None:
        # Once per outage, when it becomes one: a single failed request is not worth a warning.
        with self._cond:
            since = self._failing_since
            if self._announced or since is None or self._clock() - since < self.outage_after:
                return
            self._announced = True
            lasted = self._clock() - since
        log.warning(
            "EdgeLB has not answered for %.0fs: probing it (GET /ping) every %gs until it does",
            lasted,
            self.interval,
        )

    def _run_wake(self) -> bool:
        try:
            woken = self._wake()
        except Exception:
            log.warning("waking the bindings waiting on a retry failed; trying again", exc_info=True)
            with self._cond:
                self._wake_due = True
            return False
        log.info("bindings waiting on a retry queued to run now that EdgeLB answers again: %d", woken)
        return True

    # ---- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="dklb-edgelb-recovery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread; waits for a probe in flight (bounded by the client's timeouts)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _needed(self) -> bool:
        return self._stopped or self._wake_due or self._failing_since is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                # EdgeLB answers: nothing to do, no timer, until a failure or stop notifies.
                self._cond.wait_for(self._needed)
                if self._stopped:
                    return
                if not self._wake_due:
                    # Between probes; an answer from regular work (or stop) cuts the wait short.
                    self._cond.wait(self.interval)
                    if self._stopped:
                        return
            if not self.step():
                with self._cond:
                    if not self._stopped:
                        self._cond.wait(self.interval)
