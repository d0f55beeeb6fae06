"""The Nodes of the cluster, for the "address" backend mode (``--backend-mode address``).

Where it sits in the data flow: a second ``Watcher`` (``resource="nodes"``) feeds ``upsert`` and
``delete``; the reconciler reads ``addresses()`` (the Ready Nodes' InternalIPs) for every
binding's backends and fingerprint, and ``on_change`` (``Controller.enqueue_all``) re-queues
every binding when the set of addresses changes, so backends follow the Nodes. An InternalIP
that is not a usable address (``node_address_problem``: not an IP, loopback, link-local, outside
``--node-address-cidr``...) is skipped, with one WARNING per Node and value.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

log = logging.getLogger("dklb.kube.nodes")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NodeNetworks = Sequence[Network]

# "This network": the kernel reads 0.0.0.0/8 as this host or refuses it; no Node listens there.
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
BROADCAST = ipaddress.ip_address("255.255.255.255")


def _special(address: Address) -> tuple[str, str] | None:
    """What kind of address, other than an ordinary unicast one, ``address`` is, and the
    well-known network of that kind to name in ``--node-address-cidr`` to allow it (None: an
    ordinary address). An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is what it maps to:
    a socket connecting there reaches the IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        found = _special(address.ipv4_mapped)
        if found is None:
            return None
        kind, network = found
        # Written as people read it (::ffff:127.0.0.0/104), not canonically (::ffff:7f00:0/104).
        address_text, prefix = network.split("/")
        return f"{kind} (IPv4-mapped)", f"::ffff:{address_text}/{96 + int(prefix)}"
    v4 = address.version == 4
    if address.is_loopback:
        return "loopback", "127.0.0.0/8" if v4 else "::1/128"
    if address.is_link_local:
        return "link-local", "169.254.0.0/16" if v4 else "fe80::/10"
    if address.is_reserved:
        return "reserved", str(ipaddress.ip_network(address))
    return None


def _only(kind: str, network: Network) -> bool:
    """Whether ``network`` holds addresses of ``kind`` alone: ``127.0.0.0/8`` allows loopback
    Nodes, ``0.0.0.0/0`` (which an operator may give to mean "any Node") does not allow the
    metadata service at 169.254.169.254. Each kind is a block of whole prefixes, so both ends
    of a network being of the kind means all of it is."""
    ends = (_special(network.network_address), _special(network.broadcast_address))
    return all(end is not None and end[0] == kind for end in ends)


def node_address_problem(text: Any, networks: NodeNetworks = ()) -> str | None:
    """Why a Node's InternalIP must not become a backend of every pool (None: it may).

    A Node object is written by a kubelet, and a rogue one must not point every load balancer
    wherever it likes. Only a plain IP address passes (``ipaddress.ip_address``: no host name,
    no IPv6 zone, nothing EdgeLB's HAProxy could read as more than an address), never an
    unspecified, broadcast or multicast one, and inside ``networks`` (``--node-address-cidr``)
    when any are given. Loopback, link-local (169.254.169.254: a cloud's metadata service) and
    reserved addresses, and their IPv4-mapped IPv6 forms, pass only inside a given network made
    of them alone (``--node-address-cidr 127.0.0.0/8`` for a local test cluster's Nodes)."""
    if not isinstance(text, str):
        return "not a string"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return "an IPv6 address with a zone"
    plain: Address = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        plain = address.ipv4_mapped
    if plain.is_unspecified or plain.is_multicast or plain in THIS_NETWORK or plain == BROADCAST:
        return "not a host address (unspecified, 0.0.0.0/8, broadcast or multicast)"
    inside = [n for n in networks if address.version == n.version and address in n]
    special = _special(address)
    if special is not None:
        kind, allow = special
        if not any(_only(kind, n) for n in inside):
            return f"{kind}; allow it with --node-address-cidr {allow}"
    elif networks and not inside:
        return "outside --node-address-cidr"
    return None


def node_address_candidates(nodes: Iterable[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """(Node name, InternalIP value) of every Ready Node, unchecked."""
    for node in nodes:
        status = node.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if not ready:
            continue
        name = (node.get("metadata") or {}).get("name", "?")
        for entry in status.get("addresses") or []:
            if entry.get("type") == "InternalIP" and entry.get("address"):
                yield name, entry["address"]


def node_addresses(nodes: Iterable[dict[str, Any]], networks: NodeNetworks = ()) -> tuple[str, ...]:
    """The sorted InternalIP addresses of the Ready Nodes (the ``address`` backend mode), in
    canonical form, keeping only those ``node_address_problem`` finds nothing wrong with."""
    return tuple(
        sorted(
            {
                str(ipaddress.ip_address(value))
                for _, value in node_address_candidates(nodes)
                if node_address_problem(value, networks) is None
            }
        )
    )


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
