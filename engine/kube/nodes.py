"""The Nodes of the cluster, for the "address" backend mode (``--backend-mode address``).

Where it sits in the data flow: a second ``Watcher`` (``resource="nodes"``) feeds ``upsert`` and
``delete``; the reconciler reads ``addresses()`` (the Ready Nodes' InternalIPs) for every
binding's backends and fingerprint, and ``on_change`` (``Controller.enqueue_all``) re-queues
every binding when the set of addresses changes, so backends follow the Nodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from engine.kube.watch import node_addresses


class Nodes:
    """The Node objects seen by the node watcher, for the "address" backend mode."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._addresses: tuple[str, ...] = ()
        self._on_change = on_change

    def upsert(self, node: dict[str, Any]) -> None:
        with self._lock:
            self._nodes[node["metadata"]["name"]] = node
        self._refresh()

    def delete(self, node: dict[str, Any]) -> None:
        with self._lock:
            self._nodes.pop(node["metadata"]["name"], None)
        self._refresh()

    def addresses(self) -> tuple[str, ...]:
        with self._lock:
            return self._addresses

    def _refresh(self) -> None:
        with self._lock:
            fresh = node_addresses(self._nodes.values())
            changed = fresh != self._addresses
            self._addresses = fresh
        if changed:
            self._on_change()
