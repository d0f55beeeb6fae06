"""S12 (security review): Node InternalIPs become backends only when they are IP addresses of
ordinary hosts (and, with ``--node-address-cidr``, inside the operator's networks); loopback,
link-local and reserved ones only when a network made of them is named explicitly.

Where it sits: with ``--backend-mode address`` the Node watcher feeds ``engine.kube.nodes.Nodes``,
whose ``addresses()`` (``engine.kube.watch.node_addresses``) become every pool's backends. The
review's attack: a rogue or compromised Node object whose InternalIP is a non-IP string (sent to
EdgeLB as is) or an address of its choice (added to every load balancer): 127.0.0.1 (whatever
listens on the load balancer's own host) or 169.254.169.254 (a cloud's metadata service).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from typing import Any

import pytest

from engine import cli
from engine.cli.run import node_cidrs
from engine.kube.nodes import Nodes, node_address_problem, node_addresses


def node(name: str, *addresses: Any, ready: bool = True, kind: str = "InternalIP") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "addresses": [{"type": kind, "address": a} for a in addresses],
        },
    }


NETS = (ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("fd00::/64"))
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
ANY = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
NOT_A_HOST = "not a host address (unspecified, 0.0.0.0/8, broadcast or multicast)"
LO = "loopback; allow it with --node-address-cidr 127.0.0.0/8"
LINK = "link-local; allow it with --node-address-cidr 169.254.0.0/16"


@pytest.mark.parametrize(
    ("value", "networks", "problem"),
    [
        ("10.0.1.2", (), None),
        ("2001:db8::1", (), None),
        ("::ffff:10.0.1.2", (), None),  # an ordinary address, IPv4-mapped
        ("10.0.1.2", NETS, None),
        ("fd00::5", NETS, None),
        ("10.0.1.2", ANY, None),
        ("10.1.0.1", NETS, "outside --node-address-cidr"),
        ("::ffff:10.0.1.2", NETS, "outside --node-address-cidr"),  # IPv6, not in the IPv4 network
        # Loopback, link-local, reserved: only inside a network of them named explicitly.
        ("127.0.0.1", (), LO),
        ("127.0.0.1", NETS, LO),
        ("127.0.0.1", ANY, LO),  # "any Node" does not mean the load balancer's own host
        ("127.0.0.1", LOOPBACK, None),  # a local test cluster's Nodes
        ("127.0.0.1", (ipaddress.ip_network("127.0.0.1/32"),), None),
        ("127.5.6.7", LOOPBACK, None),
        ("127.0.0.1", (*NETS, *LOOPBACK), None),
        ("::1", (), "loopback; allow it with --node-address-cidr ::1/128"),
        ("::1", (ipaddress.ip_network("::1/128"),), None),
        ("::1", LOOPBACK, "loopback; allow it with --node-address-cidr ::1/128"),
        (
            "::ffff:127.0.0.1",
            (),
            "loopback (IPv4-mapped); allow it with --node-address-cidr ::ffff:127.0.0.0/104",
        ),
        (
            "::ffff:127.0.0.1",
            LOOPBACK,
            "loopback (IPv4-mapped); allow it with --node-address-cidr ::ffff:127.0.0.0/104",
        ),
        ("::ffff:127.0.0.1", (ipaddress.ip_network("::ffff:127.0.0.0/104"),), None),
        ("169.254.169.254", (), LINK),  # a cloud metadata service
        ("169.254.169.254", NETS, LINK),
        ("169.254.169.254", ANY, LINK),
        ("169.254.169.254", LOOPBACK, LINK),
        ("169.254.169.254", (ipaddress.ip_network("169.254.0.0/16"),), None),
        (
            "::ffff:169.254.169.254",
            ANY,
            "link-local (IPv4-mapped); allow it with --node-address-cidr ::ffff:169.254.0.0/112",
        ),
        ("fe80::1", (), "link-local; allow it with --node-address-cidr fe80::/10"),
        ("240.0.0.1", (), "reserved; allow it with --node-address-cidr 240.0.0.1/32"),
        ("240.0.0.1", (ipaddress.ip_network("240.0.0.0/4"),), None),
        ("100::1", (), "reserved; allow it with --node-address-cidr 100::1/128"),  # the discard prefix
        ("evil.example.com", (), "not an IP address"),
        ("10.0.0.1 check inter 1", (), "not an IP address"),  # an HAProxy keyword injection
        ("10.0.0.1\nbackend x", (), "not an IP address"),
        ("10.0.0.1:8080", (), "not an IP address"),
        ("010.0.0.1", (), "not an IP address"),  # leading zeros: octal to some parsers
        ("10.0.0.0/8", (), "not an IP address"),
        ("fe80::1%eth0", (), "an IPv6 address with a zone"),
        # Never a host, whatever the networks.
        ("0.0.0.0", (), NOT_A_HOST),
        ("0.0.0.0", ANY, NOT_A_HOST),
        ("0.1.2.3", ANY, NOT_A_HOST),
        ("::", (), NOT_A_HOST),
        ("::ffff:0.0.0.0", ANY, NOT_A_HOST),
        ("255.255.255.255", ANY, NOT_A_HOST),
        ("224.0.0.1", (), NOT_A_HOST),
        ("224.0.0.1", ANY, NOT_A_HOST),
        ("ff02::1", ANY, NOT_A_HOST),
        ("::ffff:224.0.0.1", (), NOT_A_HOST),
        (167772161, (), "not a string"),  # 10.0.0.1 as a number: JSON allows it
        (["10.0.0.1"], (), "not a string"),
    ],
)
def test_which_internal_ips_may_become_backends(
    value: Any, networks: tuple[Any, ...], problem: str | None
) -> None:
    """S12 (security review): every hostile value is refused with a reason, which says how to
    allow it when an operator may mean it."""
    assert node_address_problem(value, networks) == problem


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "::ffff:169.254.1.1", "fe80::1", "240.0.0.1"],
)
def test_the_advice_in_a_refusal_allows_the_address(value: str) -> None:
    """The network a refusal names, given to ``--node-address-cidr``, lets the address in."""
    problem = node_address_problem(value)
    assert problem is not None and "; allow it with --node-address-cidr " in problem
    flag = problem.rsplit(" ", 1)[1]
    networks = tuple(ipaddress.ip_network(n) for n in node_cidrs(flag))
    assert node_address_problem(value, networks) is None


def test_a_rogue_node_adds_nothing_but_ip_addresses_to_the_backends() -> None:
    """S12 (security review): the review's rogue Node; a good Node's address is kept, canonical."""
    nodes = [
        node("good", "10.0.1.2"),
        node("v6", "2001:DB8:0:0::1"),
        node("rogue", "evil.example.com", "10.0.0.1 backup", 42, "127.0.0.1", "169.254.169.254"),
        node("not-ready", "10.0.1.9", ready=False),
        node("external", "203.0.113.9", kind="ExternalIP"),
    ]
    assert node_addresses(nodes) == ("10.0.1.2", "2001:db8::1")


def test_node_address_cidr_keeps_the_backends_in_the_operators_networks() -> None:
    """S12 (security review): a compromised Node claiming an address elsewhere is left out."""
    nodes = [
        node("a", "10.0.1.2"),
        node("b", "10.0.1.3"),
        node("rogue", "192.168.7.7"),
        node("lo", "127.0.0.1"),
    ]
    assert node_addresses(nodes, NETS) == ("10.0.1.2", "10.0.1.3")
    assert node_addresses(nodes) == ("10.0.1.2", "10.0.1.3", "192.168.7.7")
    assert node_addresses(nodes, LOOPBACK) == ("127.0.0.1",)


def test_nodes_warn_once_per_node_and_value(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dklb.kube.nodes")
    changes: list[int] = []
    nodes = Nodes(on_change=lambda: changes.append(1), networks=NETS)
    for _ in range(3):  # a Node's status is re-sent again and again
        nodes.upsert(node("rogue", "evil.example.com", "192.168.7.7", "169.254.169.254"))
    nodes.upsert(node("good", "10.0.1.2"))
    assert nodes.addresses() == ("10.0.1.2",)
    assert len(changes) == 1
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert warnings == [
        "Node rogue: InternalIP '169.254.169.254' skipped as a backend: link-local; "
        "allow it with --node-address-cidr 169.254.0.0/16",
        "Node rogue: InternalIP '192.168.7.7' skipped as a backend: outside --node-address-cidr",
        "Node rogue: InternalIP 'evil.example.com' skipped as a backend: not an IP address",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.0/16", ("10.0.0.0/16",)),
        ("10.0.0.0/16, fd00::/64", ("10.0.0.0/16", "fd00::/64")),
        ("10.0.0.7/32,", ("10.0.0.7/32",)),
        ("10.0.0.7", ("10.0.0.7/32",)),
    ],
)
def test_node_address_cidr_values(text: str, expected: tuple[str, ...]) -> None:
    assert node_cidrs(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1/16", "'10.0.0.1/16' is not a network in CIDR notation"),  # host bits set
        ("nodes", "'nodes' is not a network in CIDR notation"),
        (" , ", "give at least one network"),
    ],
)
def test_bad_node_address_cidr_values_are_named(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        node_cidrs(text)


def test_the_flag_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DKLB_NODE_ADDRESS_CIDR", raising=False)
    parser = cli.build_parser(["run"])
    assert parser.parse_args(["run"]).node_address_cidr == ()
    args = parser.parse_args(["run", "--backend-mode", "address", "--node-address-cidr", "10.0.0.0/16"])
    assert args.node_address_cidr == ("10.0.0.0/16",)
