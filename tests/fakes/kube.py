"""An in-memory Kubernetes for engine tests: Services, finalizers, annotations, status, Events.

Implements ``engine.kube.port.Kube`` over a dict of Service JSON objects, with the API server's
behaviours that matter to dklb: ``resourceVersion`` bumps on every write, a delete of a Service
that carries finalizers only sets ``deletionTimestamp``, and removing the last finalizer of such
a Service deletes it. ``path`` persists everything to a JSON file (atomically) so a test can
SIGKILL a process that uses it and continue in a new one.
"""

from __future__ import annotations

import builtins
import copy
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgelb_local.state import atomic_write_text
from engine.model.services import ANNOTATION, FINALIZER, SHARED_POOL_KEY_ANNOTATION
from engine.runtime.crashpoints import checkpoint

Service = dict[str, Any]


def make_service(
    name: str,
    *,
    namespace: str = "default",
    ports: Sequence[tuple[int, int] | tuple[int, int, str]] = ((6379, 32213),),
    config: str | None = None,
    type: str = "LoadBalancer",
    annotations: dict[str, str] | None = None,
    shared_pool_key: str | None = None,
) -> Service:
    notes = dict(annotations or {})
    if config is not None:
        notes[ANNOTATION] = config
    if shared_pool_key is not None:
        notes[SHARED_POOL_KEY_ANNOTATION] = shared_pool_key
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": notes},
        "spec": {
            "type": type,
            "ports": [
                {"port": p[0], "nodePort": p[1], "protocol": p[2] if len(p) > 2 else "TCP"} for p in ports
            ],
        },
        "status": {},
    }


class FakeKube:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._lock = threading.RLock()
        self.path = Path(path) if path is not None else None
        self.services: dict[str, Service] = {}
        self.events: list[dict[str, str]] = []
        self.writes = 0
        self._next_uid = 1
        self._next_node_port = 31000
        self._version = 1
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            self.services = data["services"]
            self.events = data["events"]
            self.writes = data["writes"]
            self._next_uid = data["next_uid"]
            self._next_node_port = data.get("next_node_port", self._next_node_port)
            self._version = data["version"]

    # ---- what a user does ----------------------------------------------------------------------

    def apply(self, service: Service) -> Service:
        """Create or replace (keeping uid, finalizers and status, as kubectl apply does)."""
        with self._lock:
            service = copy.deepcopy(service)
            meta = service["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            existing = self.services.get(key)
            if existing is None:
                meta["uid"] = f"uid-{self._next_uid}"
                self._next_uid += 1
                meta.setdefault("finalizers", [])
            else:
                meta["uid"] = existing["metadata"]["uid"]
                meta["finalizers"] = existing["metadata"].get("finalizers", [])
                if existing["metadata"].get("deletionTimestamp"):
                    meta["deletionTimestamp"] = existing["metadata"]["deletionTimestamp"]
                service["status"] = existing.get("status", {})
            self._allocate_node_ports(service, existing)
            self._store(key, service)
            return copy.deepcopy(service)

    def _allocate_node_ports(self, service: Service, existing: Service | None) -> None:
        # As the API server does: a LoadBalancer Service's port without nodePort gets one (the one
        # it had, on an update), unless spec.allocateLoadBalancerNodePorts is false.
        spec = service.get("spec") or {}
        if spec.get("type") != "LoadBalancer" or spec.get("allocateLoadBalancerNodePorts") is False:
            return
        had = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in ((existing or {}).get("spec") or {}).get("ports") or []
            if isinstance(p, dict)
        }
        for port in spec.get("ports") or []:
            if isinstance(port, dict) and not port.get("nodePort"):
                kept = had.get((port.get("port"), port.get("protocol", "TCP")))
                if kept is None:
                    kept = self._next_node_port
                    self._next_node_port += 1
                port["nodePort"] = kept

    def delete(self, key: str) -> None:
        with self._lock:
            service = self.services.get(key)
            if service is None:
                return
            if service["metadata"].get("finalizers"):
                service["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"
                self._store(key, service)
            else:
                del self.services[key]
                self._save()

    def get(self, key: str) -> Service | None:
        with self._lock:
            service = self.services.get(key)
            return copy.deepcopy(service) if service is not None else None

    def list(self) -> list[Service]:
        with self._lock:
            return [copy.deepcopy(s) for s in self.services.values()]

    def events_for(self, key: str, *, type: str | None = None) -> builtins.list[dict[str, str]]:
        with self._lock:
            return [e for e in self.events if e["key"] == key and (type is None or e["type"] == type)]

    # ---- the port ------------------------------------------------------------------------------

    def add_finalizer(self, service: Service, *, annotation: str | None = None) -> Service | None:
        seen = (service["metadata"].get("annotations") or {}).get(ANNOTATION)

        def write(s: Service) -> bool:
            added = _add(s["metadata"].setdefault("finalizers", []), FINALIZER)
            notes = s["metadata"].setdefault("annotations", {})
            if annotation is None or notes.get(ANNOTATION) != seen or seen == annotation:
                return added
            notes[ANNOTATION] = annotation
            return True

        return self._mutate(service, write)

    def remove_finalizer(self, service: Service) -> Service | None:
        key = _key(service)
        with self._lock:
            current = self.services.get(key)
            if current is None:
                return None
            if FINALIZER not in current["metadata"].get("finalizers", []):
                return copy.deepcopy(current)
            current["metadata"]["finalizers"].remove(FINALIZER)
            self.writes += 1
            if current["metadata"].get("deletionTimestamp") and not current["metadata"]["finalizers"]:
                del self.services[key]
                self._save()
                result = None
            else:
                self._store(key, current)
                result = copy.deepcopy(current)
        checkpoint("kube-remove-finalizer")
        return result

    def set_ingress(self, service: Service, ingress: builtins.list[dict[str, str]]) -> Service | None:
        def write(s: Service) -> bool:
            current = s.setdefault("status", {}).get("loadBalancer", {}).get("ingress", [])
            if current == ingress:
                return False
            s["status"]["loadBalancer"] = {"ingress": list(ingress)} if ingress else {}
            return True

        return self._mutate(service, write)

    def event(self, service: Service, *, type: str, reason: str, message: str) -> None:
        with self._lock:
            self.events.append({"key": _key(service), "type": type, "reason": reason, "message": message})
            self._save()

    # ---- internals -----------------------------------------------------------------------------

    def _mutate(self, service: Service, change: Any) -> Service | None:
        key = _key(service)
        with self._lock:
            current = self.services.get(key)
            if current is None or current["metadata"].get("uid") != service["metadata"].get("uid"):
                return None
            if change(current) is False:
                return copy.deepcopy(current)
            self.writes += 1
            self._store(key, current)
            result = copy.deepcopy(current)
        checkpoint("kube-write")
        return result

    def _store(self, key: str, service: Service) -> None:
        self._version += 1
        service["metadata"]["resourceVersion"] = str(self._version)
        self.services[key] = service
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        data = {
            "services": self.services,
            "events": self.events,
            "writes": self.writes,
            "next_uid": self._next_uid,
            "next_node_port": self._next_node_port,
            "version": self._version,
        }
        atomic_write_text(self.path, json.dumps(data))


def _key(service: Service) -> str:
    return f"{service['metadata']['namespace']}/{service['metadata']['name']}"


def _add(items: list[str], item: str) -> bool:
    if item in items:
        return False
    items.append(item)
    return True
