"""The reconciler: ``reconcile(key) -> seconds until the next wake-up``.

Keys come from the work queue (a watch event, a due wake-up, ``dklb retry``). For one key the
reconciler loads the binding from the store and the Service from the observed cache
(``engine.runtime.cache``), fires the external trigger the world implies (the function the
lifecycle declares as ``external``), runs the handler of the current state (``states/``), and
commits the outcome as ONE transaction (``store.Change``): state, pool reference counts,
history, next wake-up. Then it posts the Events. It loops while the binding moves to a state
that has work to do now, and returns when the binding waits. Which states, triggers and
reasons exist is the lifecycle's business: nothing here names one.

Work for one key is sequential (the work queue never hands a key to two workers); work on one
pool is serialized by ``PoolLocks`` for the states declared ``serialize: pool`` and for the
guards of a transition, which run under the lock of the pool they judge, right before the
commit.

A handler that raises is a retry with backoff, never a crash: ``KubernetesUnavailable`` (one
WARNING line, no Event) when the Kubernetes API server did not answer or answered 5xx/429
(``kubernetes_unavailable``), ``HandlerError`` for anything else (a bug), its traceback logged
once per binding and error type. Messages that reach an Event or a log line are cut to 1 KiB
(``capped_message``).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from engine.contract import Context, Event, Fire, Outcome, Poll, Retry, Stay, warning
from engine.edgelb.port import EdgeLB
from engine.kube.errors import KUBERNETES_UNAVAILABLE, kubernetes_unavailable
from engine.kube.port import Kube
from engine.kube.recorder import capped_message
from engine.model.services import foreign, split_key
from engine.model.settings import Settings
from engine.runtime.cache import PoolLocks, ServiceCache, WriteThrough
from engine.runtime.crashpoints import checkpoint
from engine.runtime.fence import NotLeader
from engine.runtime.lifecycle import Lifecycle, StateSpec
from engine.store import Binding, Change, StaleBinding, Store, utcnow

log = logging.getLogger("dklb.reconciler")

# A binding walks at most Pending → Provisioning → AwaitingMetadata → Ready in one call; a few
# more steps absorb an external trigger. Past that something is looping: requeue, do not spin.
MAX_STEPS = 8
# Bindings x error types whose traceback is remembered as logged; the oldest are forgotten first.
MAX_REMEMBERED_TRACEBACKS = 10_000


class Reconciler:
    def __init__(
        self,
        *,
        store: Store,
        lifecycle: Lifecycle,
        edgelb: EdgeLB,
        kube: Kube,
        settings: Settings,
        cache: ServiceCache | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        node_addresses: Callable[[], tuple[str, ...]] = tuple,
        may_write: Callable[[], bool] = lambda: True,
        on_transition: Callable[[str | None, str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.edgelb = edgelb
        self.kube = kube
        self.settings = settings
        self.cache = cache or ServiceCache()
        self._kube = WriteThrough(kube, self.cache)
        self.clock = clock
        self.rng = rng or random.Random()
        self.node_addresses = node_addresses
        self.may_write = may_write
        self.locks = PoolLocks()
        # Transitions committed, by (from, to); read by tests.
        self.transitions: dict[tuple[str, str], int] = {}
        self._counter_lock = threading.Lock()
        # Told (from or None, to, trigger) after each committed transition: the metrics hook.
        self.on_transition = on_transition
        # Keys whose handler runs at their next reconcile even if their wake-up is later: after a
        # start, nothing seen before the crash is trusted until checked again (``verify``).
        self._unverified: set[str] = set()
        # (binding key, exception type) whose traceback was logged: a retry logs one line.
        self._tracebacks: OrderedDict[tuple[str, str], None] = OrderedDict()

    # ---- the contract ------------------------------------------------------------------------

    def verify(self, keys: set[str]) -> None:
        """Run the handler of each of ``keys`` at its next reconcile, whatever its wake-up says."""
        with self._counter_lock:
            self._unverified |= keys

    def _take_unverified(self, key: str) -> bool:
        with self._counter_lock:
            if key in self._unverified:
                self._unverified.discard(key)
                return True
            return False

    def quiet(self, key: str, binding: Binding | None, *, nodes: tuple[str, ...] | None = None) -> bool:
        """True when reconciling ``key`` now would change nothing and run no handler: the world
        fires no trigger on ``binding`` (as the Service cache says), its handler is not due and
        it is not to be verified. ``binding`` may lack its configuration and objects
        (``Store.brief_bindings``): the triggers are judged on its state, uid and fingerprint.
        The start-up pass leaves such keys out of the queue (``Controller.enqueue_all``)."""
        if binding is not None:
            wakeup = binding.next_wakeup
            handler = self.lifecycle.states[binding.state].handler
            if handler is not None and wakeup is not None and wakeup <= self.clock():
                return False
            with self._counter_lock:
                if key in self._unverified:
                    return False
        return self._observed(key, binding, nodes=nodes)[1] is None

    def _observed(
        self, key: str, binding: Binding | None, *, nodes: tuple[str, ...] | None = None
    ) -> tuple[dict[str, Any] | None, Fire | None]:
        """The Service as the cache holds it (None: gone, or another controller's) and the
        external trigger it fires on ``binding``."""
        service = self.cache.get(key)
        if service is not None and foreign(service, self.settings.load_balancer_class):
            # Another controller's (spec.loadBalancerClass): for the lifecycle it does not exist.
            service = None
        fire = self.lifecycle.external(
            binding,
            service,
            nodes=self.node_addresses() if nodes is None else nodes,
            policy=self.settings.policy_digest,
        )
        return service, fire

    def reconcile(self, key: str) -> float | None:
        """Drive one binding as far as it can go now; seconds until it wants to run again."""
        # Each step goes on from the binding its commit returned: the row as stored, no re-read.
        binding = self.store.get(key)
        for _ in range(MAX_STEPS):
            now = self.clock()
            service, fire = self._observed(key, binding)
            try:
                if binding is None:
                    if fire is None:
                        return None
                    assert service is not None
                    binding = self._create(key, service, fire, now)
                    continue
                if fire is not None:
                    change, events = self._fire_change(binding, fire, now)
                    binding = self._commit(binding, change, events, service)
                    continue
                spec = self.lifecycle.states[binding.state]
                if spec.handler is None or binding.next_wakeup is None:
                    return None
                if binding.next_wakeup > now and not self._take_unverified(key):
                    return (binding.next_wakeup - now).total_seconds()
                after = self._run_handler(binding, spec, service, now)
            except StaleBinding:
                # Someone committed first; start over from what is stored now.
                binding = self.store.get(key)
                continue
            if after is None:
                return None
            if after.state == binding.state:
                return (
                    None
                    if after.next_wakeup is None
                    else max(0.0, (after.next_wakeup - self.clock()).total_seconds())
                )
            if self.lifecycle.states[after.state].first_run == "queued":
                return 0.0
            binding = after
        return 0.0

    # ---- steps -------------------------------------------------------------------------------

    def _create(self, key: str, service: dict[str, Any], fire: Fire, now: datetime) -> Binding:
        namespace, name = split_key(key)
        if not self.may_write():
            raise NotLeader("this replica does not lead: no binding is created")
        binding = self.store.create(
            namespace=namespace,
            name=name,
            uid=(service.get("metadata") or {}).get("uid", ""),
            state=self.lifecycle.initial,
            trigger=fire.trigger,
            reason=fire.reason,
            message=fire.message,
            objects=fire.updates.get("objects"),
            now=now,
        )
        self._count(None, self.lifecycle.initial, fire.trigger)
        checkpoint("after-create")
        return binding

    def _run_handler(
        self, binding: Binding, spec: StateSpec, service: dict[str, Any] | None, now: datetime
    ) -> Binding | None:
        locked_pool = binding.pool if spec.serialize == "pool" else None
        with self.locks.hold(locked_pool):
            ctx = Context(
                binding=binding,
                service=service,
                edgelb=self.edgelb,
                kube=self._kube,
                store=self.store,
                settings=self.settings,
                rng=self.rng,
                now=now,
                node_addresses=self.node_addresses(),
            )
            assert spec.handler is not None
            try:
                outcome: Outcome = spec.handler(ctx)
            except NotLeader:
                raise
            except Exception as exc:
                unavailable = kubernetes_unavailable(exc)
                if unavailable is not None:
                    # An outage, not a bug: one line per failure, the traceback only in debug.
                    log.warning("handler of %s for %s: %s; retrying", binding.state, binding.key, unavailable)
                    log.debug("handler of %s failed for %s", binding.state, binding.key, exc_info=True)
                    outcome = Retry(KUBERNETES_UNAVAILABLE, unavailable)
                else:
                    # A handler bug or an unexpected answer must not stop the controller: the
                    # binding records it and retries with backoff, visible in inspect and history.
                    message = capped_message(" ".join(f"{type(exc).__name__}: {exc}".split()))
                    self._log_handler_error(binding, exc, message)
                    outcome = Retry("HandlerError", message)
            checkpoint(f"after-handler-{binding.state}")
            if isinstance(outcome, Fire):
                transition = self.lifecycle.transition(binding.state, outcome.trigger)
                guard_pool = outcome.updates.get("pool", binding.pool)
                if transition.guards and guard_pool != locked_pool:
                    with self.locks.hold(guard_pool):
                        outcome = self._guarded(ctx, outcome)
                        change, events = self._fire_change(binding, outcome, now)
                        return self._commit(binding, change, events, service)
                outcome = self._guarded(ctx, outcome)
                change, events = self._fire_change(binding, outcome, now)
            else:
                change, events = self._wait_change(binding, spec, outcome, now)
            return self._commit(binding, change, events, service)

    def _log_handler_error(self, binding: Binding, exc: Exception, message: str) -> None:
        """The traceback once per binding and error type; each retry after it is one line."""
        seen = (binding.key, type(exc).__qualname__)
        with self._counter_lock:
            first = seen not in self._tracebacks
            self._tracebacks[seen] = None
            self._tracebacks.move_to_end(seen)
            while len(self._tracebacks) > MAX_REMEMBERED_TRACEBACKS:
                self._tracebacks.popitem(last=False)
        if first:
            log.exception("handler of %s failed for %s", binding.state, binding.key)
        else:
            log.warning(
                "handler of %s failed for %s again: %s (traceback logged the first time)",
                binding.state,
                binding.key,
                message,
            )

    def _guarded(self, ctx: Context, fire: Fire) -> Fire:
        transition = self.lifecycle.transition(ctx.binding.state, fire.trigger)
        for guard in transition.guards:
            objection = guard(ctx, fire)
            if objection is not None:
                assert transition.otherwise is not None
                trigger, reason = transition.otherwise
                return Fire(
                    trigger,
                    reason=reason,
                    message=objection,
                    events=(warning(reason, objection),),
                    updates={k: v for k, v in fire.updates.items() if k == "fingerprint"},
                )
        return fire

    # ---- outcome → change --------------------------------------------------------------------

    def _fire_change(self, binding: Binding, fire: Fire, now: datetime) -> tuple[Change, list[Event]]:
        transition = self.lifecycle.transition(binding.state, fire.trigger)
        dest = transition.dest
        final = dest == self.lifecycle.final
        wakeup = None if final else self._first_wakeup(self.lifecycle.states[dest], now)
        change = Change(
            binding_id=binding.id,
            expected_state=binding.state,
            to_state=dest,
            remove=final,
            trigger=fire.trigger,
            reason=fire.reason,
            message=fire.message,
            attempts=0,
            next_wakeup=wakeup,
            last_error=fire.message if fire.trigger in self.lifecycle.failure_triggers else None,
            pool_created_by_dklb=fire.pool_created_by_dklb,
            pool_served=fire.pool_served,
            pool_pre_existing=fire.pool_pre_existing,
            pool_namespace=fire.pool_namespace,
            pool_shared_pool_key=fire.pool_shared_pool_key,
            **{k: v for k, v in fire.updates.items() if k in _BINDING_FIELDS},
        )
        events = list(fire.events)
        if transition.event is not None:
            pool = fire.updates.get("pool", binding.pool) or ""
            events.insert(
                0,
                Event(
                    transition.event.type,
                    transition.event.reason,
                    transition.event.message.format(pool=pool, message=fire.message),
                ),
            )
        return change, events

    def _wait_change(
        self, binding: Binding, spec: StateSpec, outcome: Retry | Poll | Stay, now: datetime
    ) -> tuple[Change, list[Event]]:
        # A wait stays in the state: the binding, the state it is in and the one it stays in.
        common: dict[str, Any] = {
            "binding_id": binding.id,
            "expected_state": binding.state,
            "to_state": binding.state,
        }
        if isinstance(outcome, Retry):
            attempt = binding.attempts + 1
            backoff = spec.retry or spec.poll
            delay = backoff.delay(attempt, self.rng) if backoff else 60.0
            events = list(outcome.events)
            # No Event about the API server not answering, posted to that API server: history,
            # last_error and the log say it.
            if not events and outcome.reason != KUBERNETES_UNAVAILABLE:
                events = [warning(outcome.reason, outcome.message)]
            change = Change(
                **common,
                trigger="failed",
                reason=outcome.reason,
                message=outcome.message,
                attempts=attempt,
                next_wakeup=now + timedelta(seconds=delay),
                last_error=outcome.message,
            )
            return change, events
        if isinstance(outcome, Poll):
            attempt = binding.attempts + 1
            backoff = spec.poll or spec.retry
            delay = backoff.delay(attempt, self.rng) if backoff else 5.0
            change = Change(
                **common,
                trigger="poll",
                reason=outcome.reason,
                message=outcome.message,
                record=False,
                attempts=attempt,
                next_wakeup=now + timedelta(seconds=delay),
            )
            return change, list(outcome.events)
        resync = self._resync(spec)
        change = Change(
            **common,
            trigger="resync",
            record=False,
            attempts=0,
            last_error=None,
            next_wakeup=None if resync is None else now + timedelta(seconds=self._jittered(resync)),
            **{k: v for k, v in outcome.updates.items() if k in _BINDING_FIELDS},
        )
        return change, list(outcome.events)

    def _first_wakeup(self, spec: StateSpec, now: datetime) -> datetime | None:
        if spec.handler is None:
            return None
        if spec.first_run == "resync":
            resync = self._resync(spec)
            return None if resync is None else now + timedelta(seconds=self._jittered(resync))
        return now

    def _resync(self, spec: StateSpec) -> float | None:
        # The declared period only: --resync-period is how often the pool sweep
        # (engine.runtime.poolsweep) compares every settled binding, not a per-binding wake-up.
        return spec.resync

    def _jittered(self, seconds: float) -> float:
        # +/-10 %: thousands of bindings that became Ready together must not verify together.
        return seconds * self.rng.uniform(0.9, 1.1)

    # ---- commit ------------------------------------------------------------------------------

    def _commit(
        self, binding: Binding, change: Change, events: list[Event], service: dict[str, Any] | None
    ) -> Binding | None:
        if not self.may_write():
            raise NotLeader("this replica no longer leads: the transition is not committed")
        after = self.store.commit(change, now=self.clock())
        checkpoint(f"after-commit-{change.trigger}")
        if change.to_state != binding.state:
            self._count(binding.state, change.to_state, change.trigger)
            log.info(
                "%s: %s -> %s (%s) %s",
                binding.key,
                binding.state,
                change.to_state,
                change.trigger,
                capped_message(change.message or ""),
            )
        if service is not None:
            for event in events:
                try:
                    message = capped_message(event.message)
                    self._kube.event(service, type=event.type, reason=event.reason, message=message)
                except NotLeader:
                    break
                except Exception as exc:
                    unavailable = kubernetes_unavailable(exc)
                    if unavailable is None:
                        log.warning("could not post event %s on %s", event.reason, binding.key, exc_info=True)
                        continue
                    log.warning("could not post event %s on %s: %s", event.reason, binding.key, unavailable)
                    # The others would wait for the same API server.
                    break
        return after

    def _count(self, source: str | None, dest: str, trigger: str) -> None:
        with self._counter_lock:
            key = (source or "", dest)
            self.transitions[key] = self.transitions.get(key, 0) + 1
        if self.on_transition is not None:
            try:
                self.on_transition(source, dest, trigger)
            except Exception:
                # Runs after the commit: a metrics failure must not look like a failed transition.
                log.warning("on_transition hook failed for %s -> %s", source, dest, exc_info=True)


_BINDING_FIELDS = frozenset({"pool", "config", "objects", "fingerprint", "uid", "shared_pool_key"})
