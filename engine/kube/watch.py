"""The eyes of the controller: LIST + WATCH of one resource, delivered as plain JSON dicts.

Watch events arrive here from the API server; ``on_upsert``/``on_delete`` hand them on, for
Services to ``Controller.observe`` / ``Controller.forget`` (which put them into the
reconciler's ``ServiceCache`` and the work queue), for Nodes to ``engine.kube.nodes.Nodes``, which
recomputes the ``address`` backends.

The loop is client-go's reflector in small: LIST (in pages of ``LIST_PAGE`` objects, one
consistent snapshot) → deliver everything (and, for objects known before the LIST but missing
from it, a delete: it happened while we were not watching) → ``on_synced`` once, after the first
complete LIST → WATCH from the LIST's resourceVersion, resuming from the last seen
resourceVersion whenever the server ends a watch normally. A 410 Gone (the resourceVersion is
too old) re-LISTs at once; any other failure re-LISTs after a capped, jittered backoff. Every
``resync_period`` all known objects are delivered again: the engine's periodic resync trigger.
All callbacks run on this one thread, in event order.

Memory: what the watcher last saw of each object (``known``, a ``Known``) is kept encoded, one
``bytes`` value per object, and decoded only when it is delivered again (resync, or a delete
found by a re-LIST); a LIST is held that way too while its pages arrive, so only one page is
ever decoded at once. Objects are delivered compact (``engine.kube.objects.compact``): without
``metadata.managedFields``, which nothing in dklb reads and which are half of a Service's size;
Services slimmer still (``engine.kube.objects.slim_service``: only the fields dklb reads).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kubernetes.client import ApiClient, ApiException

from engine.kube.api import client_of, request
from engine.kube.objects import compact, decode, encode, slim_service

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

log = logging.getLogger("dklb.kube.watch")

Object = dict[str, Any]

# The kind and apiVersion of each watchable resource: LIST responses leave them out of the
# items, watch events include them; consumers get them on every object either way.
RESOURCES = {"services": ("Service", "v1"), "nodes": ("Node", "v1")}
# Where each is listed and watched (every namespace).
PATHS = {"services": "/api/v1/services", "nodes": "/api/v1/nodes"}
# The generated methods' keyword arguments the watcher uses, and their query parameters, in the
# generated methods' order (the same URL, byte for byte).
QUERY = {
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "_continue": "continue",
    "limit": "limit",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "watch": "watch",
}
# What is kept of each object: of a Service only what dklb reads (there may be tens of
# thousands); a Node (a few, read by ``engine.kube.nodes``) compact.
SHAPES: dict[str, Callable[[Object], Object]] = {"services": slim_service, "nodes": compact}

LIST_PAGE = 500


class Gone(Exception):
    """The resourceVersion we asked for is no longer available (HTTP 410): re-LIST."""


def object_key(obj: Object) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


class Known(Mapping[str, Object]):
    """What a watcher last saw of each object, by ``object_key``: a read-only mapping whose
    values are kept encoded (``engine.kube.objects.encode``) and decoded on every access, so
    reading one gives a fresh dict. Built from any mapping of objects, or from another
    ``Known`` (without decoding it)."""

    def __init__(self, objects: Mapping[str, Object] | None = None) -> None:
        if isinstance(objects, Known):
            self._blobs: dict[str, bytes] = dict(objects._blobs)
        else:
            self._blobs = {key: encode(compact(obj)) for key, obj in (objects or {}).items()}

    @classmethod
    def _of(cls, blobs: dict[str, bytes]) -> Known:
        """The objects ``blobs`` holds encoded (taken as they are, not copied)."""
        known = cls()
        known._blobs = blobs
        return known

    def __getitem__(self, key: str) -> Object:
        return decode(self._blobs[key])

    def __contains__(self, key: object) -> bool:
        return key in self._blobs

    def __iter__(self) -> Iterator[str]:
        return iter(self._blobs)

    def __len__(self) -> int:
        return len(self._blobs)


class Watcher(threading.Thread):
    def __init__(
        self,
        api: ApiClient | CoreV1Api,
        *,
        resource: str,
        on_upsert: Callable[[Object], None],
        on_delete: Callable[[Object], None],
        on_synced: Callable[[], None] | None = None,
        resync_period: float = 300.0,
        watch_timeout: int = 300,
        known: Mapping[str, Object] | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        request_timeout: float = 30.0,
    ) -> None:
        """``known``: objects already delivered (by ``object_key``), e.g. from a previous
        watcher; the first LIST reports those that are gone through ``on_delete``."""
        if resource not in RESOURCES:
            raise ValueError(f"cannot watch {resource!r}; one of {sorted(RESOURCES)}")
        super().__init__(name=f"dklb-watch-{resource}", daemon=True)
        self.api_client = client_of(api)
        self.resource = resource
        self.on_upsert = on_upsert
        self.on_delete = on_delete
        self.on_synced = on_synced
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.request_timeout = request_timeout
        self.known = Known(known)
        self.resource_version: str | None = None
        # Set once the first LIST has been delivered (after on_synced ran).
        self.synced = threading.Event()
        # Counters, for metrics and tests.
        self.lists = 0
        self.watches = 0
        self._known_lock = threading.Lock()
        self._stopping = threading.Event()
        self._response_lock = threading.Lock()
        self._response: Any = None
        self._rng = random.Random()
        self._next_resync = 0.0
        self._failures = 0
        self._kind, self._api_version = RESOURCES[resource]
        self._shape = SHAPES[resource]

    # ---- control -------------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop: abort the request in flight and wait up to ``timeout`` seconds."""
        self._stopping.set()
        self._abort()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def objects(self) -> list[Object]:
        """A snapshot of the last known objects, fresh dicts (safe from any thread)."""
        with self._known_lock:
            blobs = list(self.known._blobs.values())
        return [decode(blob) for blob in blobs]

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._list()
                self._watch()
            except Gone:
                log.info("%s: resourceVersion %s is gone; re-listing", self.resource, self.resource_version)
            except Exception as e:
                if self._stopping.is_set():
                    break
                self._failures += 1
                delay = self._backoff(self._failures)
                log.warning(
                    "%s: list/watch failed (%s: %s); re-listing in %.1f s",
                    self.resource,
                    type(e).__name__,
                    e,
                    delay,
                )
                self._stopping.wait(delay)

    def _backoff(self, failures: int) -> float:
        # Full doubling, capped, with jitter so that replicas do not hammer a recovering server
        # in lockstep.
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** min(failures - 1, 30))
        return ceiling * self._rng.uniform(0.5, 1.0)

    def _list(self) -> None:
        listed, resource_version = self._list_all()
        with self._known_lock:
            vanished = [blob for key, blob in self.known._blobs.items() if key not in listed]
            self.known = Known._of(listed)
        self.resource_version = resource_version
        self.lists += 1
        for blob in listed.values():
            self._deliver(self.on_upsert, decode(blob))
        for blob in vanished:
            self._deliver(self.on_delete, decode(blob))
        self._next_resync = time.monotonic() + self.resync_period
        if not self.synced.is_set():
            if self.on_synced is not None:
                try:
                    self.on_synced()
                except Exception:
                    log.exception("%s: on_synced failed", self.resource)
            self.synced.set()

    def _watch(self) -> None:
        """Watch from ``resource_version`` until stopped; returns to re-list (raises) only on
        Gone or a failure. A watch the server ends normally is resumed where it stopped."""
        while not self._stopping.is_set():
            timeout = self.watch_timeout
            if self.resync_period > 0:
                until_resync = self._next_resync - time.monotonic()
                if until_resync <= 0:
                    self._resync()
                    continue
                # End the watch in time for the resync, so it happens on this thread.
                timeout = max(1, min(timeout, math.ceil(until_resync)))
            self.watches += 1
            events = self._stream(self.resource_version or "", timeout)
            try:
                for event in events:
                    if self._stopping.is_set():
                        return
                    self._handle(event)
                    # The backoff resets only once a watch works: a LIST that succeeds while
                    # every WATCH fails must not re-list in a tight loop.
                    self._failures = 0
                self._failures = 0
            finally:
                # Leaving early (Gone, stop): end the request now, not when garbage collected.
                close = getattr(events, "close", None)
                if close is not None:
                    close()

    def _resync(self) -> None:
        with self._known_lock:
            blobs = list(self.known._blobs.values())
        for blob in blobs:
            if self._stopping.is_set():
                return
            self._deliver(self.on_upsert, decode(blob))
        self._next_resync = time.monotonic() + self.resync_period

    def _handle(self, event: Object) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone(obj.get("message", ""))
            raise RuntimeError(f"watch error {code}: {obj.get('message', obj)}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            # Only the resourceVersion is meaningful: resume from there after a timeout.
            if version:
                self.resource_version = version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: ignoring watch event of type %r", self.resource, kind)
            return
        obj = self._compact(obj)
        key = object_key(obj)
        with self._known_lock:
            if kind == "DELETED":
                self.known._blobs.pop(key, None)
            else:
                self.known._blobs[key] = encode(obj)
        if version:
            self.resource_version = version
        self._deliver(self.on_delete if kind == "DELETED" else self.on_upsert, obj)

    def _deliver(self, callback: Callable[[Object], None], obj: Object) -> None:
        try:
            callback(obj)
        except Exception:
            # A consumer's bug must not stop the watch (nor make it re-list in a loop).
            log.exception("%s: callback failed for %s", self.resource, object_key(obj))

    def _compact(self, obj: Object) -> Object:
        """``obj`` shaped (``SHAPES``), with its kind and apiVersion (which LIST items lack)."""
        obj = self._shape(obj)
        obj.setdefault("kind", self._kind)
        obj.setdefault("apiVersion", self._api_version)
        return obj

    # ---- the API requests ----------------------------------------------------------------------

    def _call(self, *, _request_timeout: float | tuple[float, float], **kwargs: Any) -> Any:
        """One LIST or WATCH request, the raw response unread (``engine.kube.api.request``);
        ``kwargs`` as the generated ``list_*`` methods name them (``_preload_content`` is always
        False here)."""
        kwargs.pop("_preload_content", None)
        unknown = set(kwargs) - set(QUERY)
        if unknown:
            raise TypeError(f"no such list parameter: {sorted(unknown)}")
        query = {parameter: kwargs.get(name) for name, parameter in QUERY.items()}
        return request(self.api_client, "GET", PATHS[self.resource], timeout=_request_timeout, query=query)

    def _list_all(self) -> tuple[dict[str, bytes], str]:
        """Every object (compact, encoded, by ``object_key``, in the LIST's order) and the LIST's
        resourceVersion, in pages (a consistent snapshot): one page is decoded at a time."""
        listed: dict[str, bytes] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE}
            if token:
                kwargs["_continue"] = token
            try:
                response = self._open(**kwargs, _request_timeout=self.request_timeout)
            except ApiException as e:
                if e.status == 410 and token:
                    # The continue token expired mid-way: the snapshot is lost, start over.
                    listed, token = {}, None
                    continue
                raise
            try:
                page = json.loads(response.data)
            finally:
                self._release(response, complete=True)
            for item in page.get("items") or []:
                obj = self._compact(item)
                listed[object_key(obj)] = encode(obj)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return listed, (page.get("metadata") or {}).get("resourceVersion", "")

    def _stream(self, resource_version: str, timeout: int) -> Iterator[Object]:
        """The events of one watch request, decoded, until the server ends it."""
        try:
            response = self._open(
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=resource_version,
                timeout_seconds=timeout,
                # The server ends the watch after ``timeout``; the read timeout only guards
                # against a connection that died silently.
                _request_timeout=(self.request_timeout, timeout + self.request_timeout),
            )
        except ApiException as e:
            if e.status == 410:
                raise Gone(str(e.reason)) from e
            raise
        complete = False
        try:
            buffer = b""
            # One JSON event per line; a chunk may hold several lines or part of one.
            for chunk in response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
            complete = True
        finally:
            self._release(response, complete=complete)

    def _open(self, **kwargs: Any) -> Any:
        response = self._call(_preload_content=False, **kwargs)
        with self._response_lock:
            self._response = response
        if self._stopping.is_set():
            # stop() ran between the request and its registration: abort it here.
            self._abort()
        return response

    def _release(self, response: Any, *, complete: bool) -> None:
        with self._response_lock:
            if self._response is response:
                self._response = None
        if complete and not self._stopping.is_set():
            # Fully read: the connection can serve the next request.
            response.release_conn()
        else:
            # Unread bytes would corrupt the next request on this connection: drop it.
            response.close()

    def _abort(self) -> None:
        with self._response_lock:
            response = self._response
        if response is None:
            return
        # shutdown() unblocks a read in progress on the watcher thread (close() alone would
        # not); either may fail on a response that just ended, which is what we want anyway.
        with contextlib.suppress(Exception):
            response.shutdown()
        with contextlib.suppress(Exception):
            response.close()
