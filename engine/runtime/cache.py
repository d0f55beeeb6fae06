"""What the reconciler and the orphan sweeper share: the Service cache and the pool locks.

The watch (through ``Controller.observe``) and our own writes (through ``WriteThrough``, the
Kube port the handlers get) keep ``ServiceCache`` up to date; the reconciler reads a Service
from it for every step, and the orphan sweeper reads all of them. ``PoolLocks`` serialize work
on one pool: the states declared ``serialize: pool``, the guards of a transition, and the
sweeper's re-check before it deletes a pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.kube.objects import decode, encode, slim_service
from engine.kube.port import Kube
from engine.model import services


class PoolLocks:
    """One lock per pool name, created on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, pool: str | None) -> Iterator[None]:
        if pool is None:
            yield
            return
        with self._guard:
            lock = self._locks.setdefault(pool, threading.Lock())
        with lock:
            yield


class ServiceCache:
    """The Services as last observed, by ``namespace/name``; fed by the watch and by our own writes.

    Each Service is kept slim and encoded (``engine.kube.objects``: only the fields dklb reads,
    one ``bytes`` value instead of some dozens of small objects), beside its uid and
    resourceVersion: at thousands of Services this cache grows with every one. ``get`` decodes,
    so every call returns a fresh dict.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key -> (uid, resourceVersion, the Service encoded)
        self._services: dict[str, tuple[Any, Any, bytes]] = {}

    def put(self, service: dict[str, Any]) -> str:
        """Keep ``service`` unless the cache already holds this version of the same object or a newer one.

        Our own writes and the watch race: a watch event older than the response to our write
        must not roll the cache back. The same version again (the watch event of our own write,
        a resync) is the same object: the one held stays, and ``service`` is not encoded again.
        """
        meta = service["metadata"]
        key = services.key(service)
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        with self._lock:
            held = self._services.get(key)
            if held is not None and _covers(held, uid, version):
                return key
        blob = encode(slim_service(service))
        with self._lock:
            held = self._services.get(key)
            if held is None or not _covers(held, uid, version):
                self._services[key] = (uid, version, blob)
        return key

    def put_new(self, service: dict[str, Any]) -> str | None:
        """``put``; the key when ``service`` is news, None when the cache already held this
        version of the same object or a newer one (a resync's redelivery, the watch event of
        our own write): then nothing is left to reconcile for it."""
        meta = service["metadata"]
        with self._lock:
            held = self._services.get(services.key(service))
            if held is not None and _covers(held, meta.get("uid"), meta.get("resourceVersion")):
                return None
        return self.put(service)

    def remove(self, key: str) -> None:
        with self._lock:
            self._services.pop(key, None)

    def get(self, key: str) -> dict[str, Any] | None:
        """The Service as last observed (a fresh dict), or None."""
        with self._lock:
            held = self._services.get(key)
        return None if held is None else decode(held[2])

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._services)


class WriteThrough:
    """The Kube port as handlers see it: every Service a write returns refreshes the cache."""

    def __init__(self, kube: Kube, cache: ServiceCache) -> None:
        self._kube = kube
        self._cache = cache

    def add_finalizer(
        self, service: dict[str, Any], *, annotation: str | None = None
    ) -> dict[str, Any] | None:
        return self._keep(service, self._kube.add_finalizer(service, annotation=annotation))

    def remove_finalizer(self, service: dict[str, Any]) -> dict[str, Any] | None:
        return self._keep(service, self._kube.remove_finalizer(service))

    def set_ingress(self, service: dict[str, Any], ingress: list[dict[str, str]]) -> dict[str, Any] | None:
        return self._keep(service, self._kube.set_ingress(service, ingress))

    def event(self, service: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        self._kube.event(service, type=type, reason=reason, message=message)

    def _keep(self, before: dict[str, Any], after: dict[str, Any] | None) -> dict[str, Any] | None:
        if after is not None:
            self._cache.put(after)
        else:
            # The write found no such object: it is gone, and so is a finalizer-held Service
            # whose last finalizer we just removed.
            self._cache.remove(services.key(before))
        return after


def _covers(held: tuple[Any, Any, bytes], uid: Any, version: Any) -> bool:
    """True when ``held`` is the same version (``uid``, ``version``) of the same object, or a later one."""
    held_uid, held_version, _ = held
    if held_uid != uid:
        return False
    try:
        return int(held_version) >= int(version)
    except (TypeError, ValueError):
        # No resourceVersion (or not a number): nothing says which is newer; the new one wins.
        return False
