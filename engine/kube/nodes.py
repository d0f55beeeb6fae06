"""The Nodes of the cluster, for the "address" backend mode (``--backend-mode address``).

Where it sits in the data flow: a second ``Watcher`` (``resource="nodes"``) feeds ``upsert`` and
``delete``; the reconciler reads ``addresses()`` (the Ready Nodes' InternalIPs) for every
binding's backends and fingerprint, and ``on_change`` (``Controller.enqueue_all``) re-queues
every binding when the set of addresses changes, so backends follow the Nodes. An InternalIP
that is not a usable address (``watch.node_address_problem``: not an IP, loopback, outside
``--node-address-cidr``...) is skipped, with one WARNING per Node and value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from engine.kube.watch import NodeNetworks, node_address_candidates, node_address_problem, node_addresses

log = logging.getLogger("dklb.kube.nodes")


class Nodes:
    """The Node objects seen by the node watcher, for the "address" backend mode."""

    def __init__(self, on_change: Callable[[], None], networks: NodeNetworks = ()) -> None:
        self._networks = tuple(networks)
        # (Node, value) pairs already warned about: a Node's status is re-sent often.
        self._warned: set[tuple[str, str]] = set()
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
            fresh = node_addresses(self._nodes.values(), self._networks)
            for name, value in node_address_candidates(self._nodes.values()):
                problem = node_address_problem(value, self._networks)
                if problem is not None and (name, repr(value)) not in self._warned:
                    if len(self._warned) >= 4096:
                        self._warned.clear()  # bounded, whatever the Nodes' churn
                    self._warned.add((name, repr(value)))
                    log.warning("Node %s: InternalIP %.64r skipped as a backend: %s", name, value, problem)
            changed = fresh != self._addresses
            self._addresses = fresh
        if changed:
            self._on_change()
