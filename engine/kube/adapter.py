"""The Kubernetes port (``engine.kube.port.Kube``) implemented against the API server.

State handlers call these writes through the reconciler's write-through wrapper; the Service
each write returns goes straight into the reconciler's ``ServiceCache`` (the watch event of the
same write comes later and is recognised as nothing new). Reads of the world come from the
``Watcher`` (``engine.kube.watch``), never from here.

Every write names the object by namespace/name *and* uid: a JSON patch ``test`` of
``/metadata/uid``, or ``metadata.uid`` inside a merge patch (the API server rejects a change of
the immutable uid with 422). So a handler acting on a deleted Service never touches a new one
that was created with the same name. A write that finds no such object (404, or another uid
after a conflict) returns None: the object is gone, and for the engine that means done.

Events are folded like client-go's recorder does (the same Event within ten minutes is counted
into one object); in ``dklb run`` they are posted by a ``BackgroundRecorder`` thread
(``engine.kube.recorder``), so a transition never waits for one.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kubernetes.client import ApiClient, ApiException

from engine.kube.api import client_of, request, response_json
from engine.kube.errors import kubernetes_unavailable
from engine.kube.port import Service
from engine.kube.recorder import BackgroundRecorder, capped_message
from engine.model.services import ANNOTATION, FINALIZER, config_text, json_pointer

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

log = logging.getLogger("dklb.kube")

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

# The paths of the hot writes, filled with the quoted namespace and name.
SERVICE = "/api/v1/namespaces/{}/services/{}"
SERVICE_STATUS = "/api/v1/namespaces/{}/services/{}/status"
EVENTS = "/api/v1/namespaces/{}/events"
EVENT = "/api/v1/namespaces/{}/events/{}"

# Writes that lost a race (a failed JSON-patch test, a 409) re-read the object and try again;
# more than a handful of lost races in a row means something fights us: surface it.
ATTEMPTS = 5

# client-go's recorder folds identical Events within this window into one, counting them.
EVENT_WINDOW = timedelta(minutes=10)
# Distinct recent Events remembered for that; the oldest are forgotten first (a forgotten one
# merely starts a new Event object).
EVENT_CACHE_SIZE = 4096

Body = dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True)
class _Pending:
    """An Event as the reconciler asked for it, at the time it asked."""

    service: Service
    type: str
    reason: str
    message: str
    at: datetime


@dataclass
class _Recent:
    """An Event object we created, for counting repetitions into it."""

    name: str
    namespace: str
    count: int
    last: datetime


class KubeAdapter:
    def __init__(
        self,
        api: ApiClient | CoreV1Api,
        *,
        component: str = "dklb",
        instance: str | None = None,
        timeout: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        event_window: timedelta = EVENT_WINDOW,
        event_cache_size: int = EVENT_CACHE_SIZE,
        background_events: bool = False,
    ) -> None:
        """``background_events``: Events are posted by a thread of their own (``dklb run``), so a
        transition never waits for one; otherwise before ``event`` returns."""
        self.api_client = client_of(api)
        self.component = component
        self.instance = instance if instance is not None else socket.gethostname()
        self.timeout = timeout
        self.clock = clock
        self.event_window = event_window
        self.event_cache_size = event_cache_size
        self._events_lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, str, str, str], _Recent] = OrderedDict()
        self._recorder = BackgroundRecorder(self._record) if background_events else None

    # ---- the port ------------------------------------------------------------------------------

    def add_finalizer(self, service: Service, *, annotation: str | None = None) -> Service | None:
        # ``annotation`` is derived from the annotation of ``service``. If the user has changed it
        # since, their change wins: writing ours would silently undo it, and the binding would
        # settle on the old configuration. Their version reaches the binding as a spec change.
        seen = config_text(service)

        def patch(current: Service) -> Body | None:
            meta = current["metadata"]
            finalizers = meta.get("finalizers") or []
            now = config_text(current)
            annotate = annotation is not None and now == seen and now != annotation
            finalize = FINALIZER not in finalizers
            if not (annotate or finalize):
                return None
            ops: list[dict[str, Any]] = [_test("/metadata/uid", meta["uid"])]
            if annotate or not finalizers:
                # Exactly the version we looked at: the annotation is still the one ours was
                # derived from, and an "add" of the whole finalizer list replaces no other list.
                ops.append(_test("/metadata/resourceVersion", meta["resourceVersion"]))
            elif finalize:
                # Appending to a list we have not seen could duplicate our entry (a stale copy).
                ops.append(_test("/metadata/finalizers", finalizers))
            if finalize and finalizers:
                ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
            elif finalize:
                ops.append({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
            if annotate and meta.get("annotations") is not None:
                path = json_pointer("metadata", "annotations", ANNOTATION)
                ops.append({"op": "add", "path": path, "value": annotation})
            elif annotate:
                ops.append({"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION: annotation}})
            return ops

        # A lost race is a failed test (422): re-read and derive the write again.
        return self._write(service, patch, content_type=JSON_PATCH, retry_invalid=True)

    def remove_finalizer(self, service: Service) -> Service | None:
        def patch(current: Service) -> Body | None:
            meta = current["metadata"]
            finalizers = meta.get("finalizers") or []
            if FINALIZER not in finalizers:
                return None
            index = finalizers.index(FINALIZER)
            return [
                _test("/metadata/uid", meta["uid"]),
                # Remove exactly our entry: if the list shifted since we read it, the test fails.
                _test(f"/metadata/finalizers/{index}", FINALIZER),
                {"op": "remove", "path": f"/metadata/finalizers/{index}"},
            ]

        start = service
        if FINALIZER not in (service["metadata"].get("finalizers") or []):
            # A finalizer left behind keeps a deleted Service Terminating forever, so do not
            # trust a copy that says there is nothing to remove: one GET settles it.
            fresh = self._get_same(service)
            if fresh is None:
                return None
            start = fresh
        after = self._write(start, patch, content_type=JSON_PATCH, retry_invalid=True)
        if after is not None and _deleted_by_finalizer_removal(after):
            # The API server deletes an object whose deletion was pending on its last
            # finalizer; the PATCH response is its final state.
            return None
        return after

    def set_ingress(self, service: Service, ingress: list[dict[str, str]]) -> Service | None:
        wanted = [dict(entry) for entry in ingress]

        def patch(current: Service) -> Body | None:
            load_balancer = (current.get("status") or {}).get("loadBalancer") or {}
            if _addresses(load_balancer.get("ingress") or []) == _addresses(wanted):
                return None
            # In a merge patch an empty list would be kept as [] by some servers and null is
            # the documented way to delete a field: clear with null.
            return {
                "metadata": {"uid": current["metadata"]["uid"]},
                "status": {"loadBalancer": {"ingress": wanted or None}},
            }

        return self._write(service, patch, content_type=MERGE_PATCH, retry_invalid=False, status=True)

    def event(self, service: Service, *, type: str, reason: str, message: str) -> None:
        event = _Pending(service, type, reason, capped_message(message), self.clock())
        if self._recorder is None:
            self._record(event)
        else:
            self._recorder.record(event)

    def flush_events(self, timeout: float) -> bool:
        """Wait until the Events recorded so far are posted; False when ``timeout`` passed first."""
        return True if self._recorder is None else self._recorder.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Post the Events still queued (up to ``timeout``); later ones are ignored."""
        if self._recorder is not None:
            self._recorder.stop(timeout)

    def _record(self, event: _Pending) -> None:
        service, type, reason = event.service, event.type, event.reason
        try:
            self._event(service, type=type, reason=reason, message=event.message, now=event.at)
        except Exception as exc:
            # An Event is a courtesy to the user; losing one must never fail a transition. An API
            # server that does not answer is one line, not a traceback per Event.
            meta = service.get("metadata") or {}
            unavailable = kubernetes_unavailable(exc)
            log.warning(
                "could not record %s Event %s on Service %s/%s%s",
                type,
                reason,
                meta.get("namespace"),
                meta.get("name"),
                f": {unavailable}" if unavailable else "",
                exc_info=unavailable is None,
            )

    # ---- reads ---------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Service | None:
        """The Service as stored now, or None."""
        try:
            response = request(
                self.api_client, "GET", SERVICE, timeout=self.timeout, path_params=(namespace, name)
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return response_json(response)

    # ---- internals -----------------------------------------------------------------------------

    def _get_same(self, service: Service) -> Service | None:
        """The stored version of this very object (same uid), or None when it is gone."""
        meta = service["metadata"]
        current = self.get(meta["namespace"], meta["name"])
        if current is None:
            return None
        if meta.get("uid") and current["metadata"].get("uid") != meta["uid"]:
            return None
        return current

    def _write(
        self,
        service: Service,
        make_patch: Callable[[Service], Body | None],
        *,
        content_type: str,
        retry_invalid: bool,
        status: bool = False,
    ) -> Service | None:
        """Patch ``service`` (the body ``make_patch`` derives from the latest known version),
        re-reading and retrying when the write lost a race; no request when nothing changes.

        ``retry_invalid``: a 422 means a failed JSON-patch test (a race) rather than bad data.
        """
        meta = service["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        current: Service | None = service
        if not meta.get("uid"):
            # Without a uid the dict names no particular object: take the one stored now.
            current = self.get(namespace, name)
        for attempt in range(ATTEMPTS):
            if current is None:
                return None
            body = make_patch(current)
            if body is None:
                return current
            try:
                return self._patch(namespace, name, body, content_type=content_type, status=status)
            except ApiException as e:
                if e.status == 404:
                    return None
                if e.status not in (409, 422) or attempt == ATTEMPTS - 1:
                    raise
                current = self._get_same(current)
                if current is not None and e.status == 422 and not retry_invalid:
                    # Same object, still rejected: the data is invalid, not stale.
                    raise
                log.debug("write to Service %s/%s lost a race (%s); retrying", namespace, name, e.status)
        raise AssertionError("unreachable")

    def _patch(self, namespace: str, name: str, body: Body, *, content_type: str, status: bool) -> Service:
        path = SERVICE_STATUS if status else SERVICE
        return self._request("PATCH", path, body, content_type=content_type, path_params=(namespace, name))

    def _request(
        self, method: str, path: str, body: Any, *, content_type: str, path_params: tuple[str, ...]
    ) -> dict[str, Any]:
        # Every request skips the generated methods (``engine.kube.api.request``): CPU and ~20 MB of RSS.
        response = request(
            self.api_client,
            method,
            path,
            body,
            content_type=content_type,
            timeout=self.timeout,
            path_params=path_params,
        )
        return response_json(response)

    def _event(self, service: Service, *, type: str, reason: str, message: str, now: datetime) -> None:
        meta = service["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        key = (uid, type, reason, message)
        with self._events_lock:
            recent = self._recent.get(key)
            if recent is not None and now - recent.last <= self.event_window:
                recent.count += 1
                recent.last = now
                count = recent.count
                self._recent.move_to_end(key)
            else:
                recent = None
        if recent is not None:
            try:
                self._request(
                    "PATCH",
                    EVENT,
                    {"count": count, "lastTimestamp": _timestamp(now)},
                    content_type=MERGE_PATCH,
                    path_params=(recent.namespace, recent.name),
                )
                return
            except ApiException as e:
                if e.status != 404:
                    raise
                # The API server expired the Event (its TTL is an hour): start a new one.
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            # client-go's naming: unique per Event object, readable next to the object's name.
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": service.get("apiVersion", "v1"),
                "kind": service.get("kind", "Service"),
                "namespace": namespace,
                "name": name,
                "uid": uid,
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": _timestamp(now),
            "lastTimestamp": _timestamp(now),
            "count": 1,
        }
        created = self._request("POST", EVENTS, event, content_type=JSON, path_params=(namespace,))
        with self._events_lock:
            self._recent[key] = _Recent(
                name=created["metadata"]["name"], namespace=namespace, count=1, last=now
            )
            self._recent.move_to_end(key)
            while len(self._recent) > self.event_cache_size:
                self._recent.popitem(last=False)


def _test(path: str, value: Any) -> dict[str, Any]:
    return {"op": "test", "path": path, "value": value}


def _addresses(ingress: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """What an ingress list says, without fields newer API servers fill in (ipMode, ports)."""
    return [(entry.get("hostname") or "", entry.get("ip") or "") for entry in ingress]


def _deleted_by_finalizer_removal(service: Service) -> bool:
    meta = service.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")


def _timestamp(moment: datetime) -> str:
    # metav1.Time: RFC 3339 in UTC with second precision.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
