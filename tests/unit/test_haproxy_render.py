"""edgelb_local.render: EdgeLB pool -> haproxy.cfg, table by table.

Every configuration rendered here is also fed to ``haproxy -c`` (skipped when HAProxy is not
installed): the renderer's job is text HAProxy accepts, not text that merely looks right.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgelb_local.render import RenderError, render, resolve_servers, section_name

HAPROXY = shutil.which("haproxy")
AGENTS = {
    "kube-node-0": "10.0.0.10",
    "kube-node-1": "10.0.0.11",
    "etcd-0": "10.0.0.20",
    "my-kube-node-9": "10.0.0.9",
}
NAME = "kubernetes-cluster:default:redis:6379"
VALID_SECTION = re.compile(r"^[A-Za-z0-9_.:-]+$")


def haproxy_check(text: str, tmp_path: Path) -> str:
    """``haproxy -c`` on the text; returns its output (warnings included), fails the test if refused."""
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (./dev installs it)")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, f"haproxy -c refused:\n{result.stderr}\n{text}"
    return result.stderr + result.stdout


def do_render(pool: dict[str, Any], tmp_path: Path, **kwargs: Any) -> str:
    args: dict[str, Any] = {
        "ports": {},
        "stats_port": 9090,
        "agents": AGENTS,
        "pid_file": str(tmp_path / "haproxy.pid"),
        "socket_path": "unix@admin.sock",
        **kwargs,
    }
    text = render(pool, **args)
    output = haproxy_check(text, tmp_path)
    assert "[WARNING]" not in output, output
    return text


def sections(text: str) -> dict[tuple[str, str], list[str]]:
    """``(kind, name) -> body lines`` of a rendered configuration."""
    found: dict[tuple[str, str], list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            kind, _, name = line.partition(" ")
            current = found.setdefault((kind, name), [])
        elif line.strip():
            current.append(line.strip())
    return found


def frontend(
    name: str = NAME, *, port: int = 16379, backend: str | None = NAME, **extra: Any
) -> dict[str, Any]:
    fe: dict[str, Any] = {
        "name": name,
        "bindAddress": "0.0.0.0",
        "bindPort": port,
        "protocol": "TCP",
        **extra,
    }
    if backend is not None and "linkBackend" not in extra:
        fe["linkBackend"] = {"defaultBackend": backend}
    return fe


def mesos_service(
    pattern: str | None = "^kube-node-.*$", *, port: int | str = 32213, **endpoint: Any
) -> dict[str, Any]:
    mesos: dict[str, Any] = {"frameworkName": "kubernetes-cluster"}
    if pattern is not None:
        mesos["taskNamePattern"] = pattern
    return {"mesos": mesos, "endpoint": {"type": "CONTAINER_IP", "port": port, **endpoint}}


def address_service(address: str, port: int = 8080, **endpoint: Any) -> dict[str, Any]:
    return {"endpoint": {"type": "ADDRESS", "address": address, "port": port, **endpoint}}


def backend(name: str = NAME, *services: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "protocol": "TCP", "services": list(services), **extra}


def pool(
    frontends: list[dict[str, Any]], backends: list[dict[str, Any]], name: str = "dklb-redis"
) -> dict[str, Any]:
    return {"name": name, "haproxy": {"stats": {"bindPort": 0}, "frontends": frontends, "backends": backends}}


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [NAME, ".dev.kubernetes01:kube-system:dns:53", "frontend_0.0.0.0_80", "a_b", "UPPER-case.1"],
)
def test_valid_names_are_kept(name: str) -> None:
    assert section_name(name) == name


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("a b", "a_b-"),
        ("a/b", "a_b-"),
        ("dev/kubernetes01:ns:svc:80", "dev_kubernetes01:ns:svc:80-"),
        ("naïve", "na_ve-"),
        ("", "-"),
        ("x#y{z}", "x_y_z_-"),
    ],
)
def test_invalid_names_are_sanitized_deterministically(name: str, prefix: str) -> None:
    sanitized = section_name(name)
    assert sanitized.startswith(prefix) and VALID_SECTION.match(sanitized)
    assert section_name(name) == sanitized  # deterministic
    assert sanitized != section_name(name + " ")  # a short hash keeps distinct names distinct


def test_sanitized_names_do_not_collide() -> None:
    names = ["a b", "a/b", "a_b", "a\tb", "a\nb"]
    assert len({section_name(n) for n in names}) == len(names)


def test_frontend_and_its_default_backend_use_the_same_sanitized_name(tmp_path: Path) -> None:
    odd = "dev/k8s:my ns:svc:80"
    text = do_render(
        pool([frontend(odd, port=8080, backend=odd)], [backend(odd, mesos_service())]),
        tmp_path,
    )
    found = sections(text)
    sanitized = section_name(odd)
    assert ("frontend", sanitized) in found and ("backend", sanitized) in found
    assert f"default_backend {sanitized}" in found[("frontend", sanitized)]
    assert odd not in text.replace("pool dklb-redis", "")


def test_dklb_names_render_as_they_are(tmp_path: Path) -> None:
    text = do_render(pool([frontend()], [backend(NAME, mesos_service())]), tmp_path)
    found = sections(text)
    assert found[("frontend", NAME)] == ["mode tcp", "bind 127.0.0.1:16379", f"default_backend {NAME}"]
    assert ("backend", NAME) in found


def test_a_pool_object_named_stats_moves_the_stats_section(tmp_path: Path) -> None:
    text = do_render(pool([frontend("stats", port=80, backend="stats")], [backend("stats")]), tmp_path)
    found = sections(text)
    assert ("frontend", "stats") in found and ("backend", "stats") in found
    assert "bind 127.0.0.1:9090" in found[("listen", "stats_")]


def test_frontend_without_a_name_gets_edgelbs_default(tmp_path: Path) -> None:
    fe = frontend(port=8080)
    del fe["name"]
    text = do_render(pool([fe], [backend()]), tmp_path)
    assert ("frontend", "frontend_0.0.0.0_8080") in sections(text)


# -- servers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mesos", "expected"),
    [
        ({"taskNamePattern": "^kube-node-.*$"}, ["kube-node-0", "kube-node-1"]),
        ({"taskNamePattern": "^kube-node-1$"}, ["kube-node-1"]),
        ({"taskNamePattern": "kube-node-"}, ["kube-node-0", "kube-node-1", "my-kube-node-9"]),  # Go: search
        ({"taskNamePattern": "^etcd-"}, ["etcd-0"]),
        ({"taskNamePattern": "^nothing$"}, []),
        ({"taskName": "kube-node-0"}, ["kube-node-0"]),
        ({"taskName": "kube-node"}, []),  # exact
        ({}, ["etcd-0", "kube-node-0", "kube-node-1", "my-kube-node-9"]),  # no task selector: every agent
    ],
)
def test_mesos_selectors_match_agents_by_task_name(mesos: dict[str, str], expected: list[str]) -> None:
    service = {"mesos": {"frameworkName": "kubernetes-cluster", **mesos}, "endpoint": {"port": 31000}}
    servers = resolve_servers(backend(NAME, service), AGENTS)
    assert [s.name for s in servers] == [f"{agent}:31000" for agent in expected]
    assert [s.address for s in servers] == [AGENTS[agent] for agent in expected]
    assert all(s.port == 31000 for s in servers)


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (mesos_service("^kube-node-0$", type="CONTAINER_IP"), [("kube-node-0:32213", "10.0.0.10", 32213)]),
        (mesos_service("^kube-node-0$", type="AGENT_IP"), [("kube-node-0:32213", "10.0.0.10", 32213)]),
        (mesos_service("^kube-node-0$", type="AUTO_IP"), [("kube-node-0:32213", "10.0.0.10", 32213)]),
        (
            {"mesos": {"taskNamePattern": "^kube-node-0$"}, "endpoint": {"port": 80}},
            [("kube-node-0:80", "10.0.0.10", 80)],
        ),
        (address_service("192.168.1.5", 30000), [("192.168.1.5:30000", "192.168.1.5", 30000)]),
        (address_service("node.example.com", 443), [("node.example.com:443", "node.example.com", 443)]),
        # ADDRESS wins over a selector: the address is used as given.
        (
            {**mesos_service(), "endpoint": {"type": "ADDRESS", "address": "10.9.9.9", "port": 1}},
            [("10.9.9.9:1", "10.9.9.9", 1)],
        ),
        (mesos_service(port=-1), []),  # "the task's named port": unknown here
        (
            {"mesos": {"taskNamePattern": ".*"}, "endpoint": {"type": "CONTAINER_IP"}},
            [],
        ),  # port defaults to -1
        ({"marathon": {"serviceID": "/app"}, "endpoint": {"type": "AUTO_IP", "port": 80}}, []),  # no Marathon
    ],
)
def test_endpoint_types(service: dict[str, Any], expected: list[tuple[str, str, int]]) -> None:
    servers = resolve_servers(backend(NAME, service), AGENTS)
    assert [(s.name, s.address, s.port) for s in servers] == expected


def test_one_agent_matched_twice_is_one_server() -> None:
    servers = resolve_servers(backend(NAME, mesos_service("^kube-node-0$"), mesos_service("node-0")), AGENTS)
    assert [s.name for s in servers] == ["kube-node-0:32213"]


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (address_service("1.2.3.4 check"), "not an IP address"),
        (address_service(""), "not an IP address"),
        ({"endpoint": {"type": "ADDRESS", "port": 80}}, "not an IP address"),
        ({"endpoint": {"type": "VIP", "port": 80}}, "endpoint.type 'VIP'"),
        (mesos_service("^kube-node-(["), "taskNamePattern"),
        (mesos_service(port="eighty"), "not an integer"),
    ],
)
def test_unrenderable_services_are_refused(service: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        resolve_servers(backend(NAME, service), AGENTS)


@pytest.mark.parametrize(
    ("check", "suffix"),
    [({"enabled": True}, " check"), ({"enabled": False}, ""), (None, " check")],  # EdgeLB default: on
)
def test_check(check: dict[str, bool] | None, suffix: str, tmp_path: Path) -> None:
    service = mesos_service("^kube-node-0$")
    if check is not None:
        service["endpoint"]["check"] = check
    text = do_render(pool([frontend()], [backend(NAME, service)]), tmp_path)
    assert sections(text)[("backend", NAME)][-1] == f"server kube-node-0:32213 10.0.0.10:32213{suffix}"


def test_servers_in_the_backend(tmp_path: Path) -> None:
    services = [mesos_service(), address_service("192.168.1.5", 30000, check={"enabled": False})]
    text = do_render(pool([frontend()], [backend(NAME, *services, balance="leastconn")]), tmp_path)
    assert sections(text)[("backend", NAME)] == [
        "mode tcp",
        "balance leastconn",
        "server kube-node-0:32213 10.0.0.10:32213 check",
        "server kube-node-1:32213 10.0.0.11:32213 check",
        "server 192.168.1.5:30000 192.168.1.5:30000",
    ]


def test_a_backend_without_servers_still_renders(tmp_path: Path) -> None:
    text = do_render(pool([frontend()], [backend(NAME, mesos_service("^nothing$"))]), tmp_path)
    assert sections(text)[("backend", NAME)] == ["mode tcp", "balance roundrobin"]


def test_ipv6_addresses_are_bracketed(tmp_path: Path) -> None:
    text = do_render(pool([frontend()], [backend(NAME, address_service("::1", 6379))]), tmp_path)
    assert "server ::1:6379 [::1]:6379 check" in sections(text)[("backend", NAME)]


# -- balance ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "line"),
    [
        (None, "balance roundrobin"),
        ("roundrobin", "balance roundrobin"),
        ("leastconn", "balance leastconn"),
        ("static-rr", "balance static-rr"),
        ("source", "balance source"),
        ("first", "balance first"),
        ("random", "balance random"),
    ],
)
def test_balance(balance: str | None, line: str, tmp_path: Path) -> None:
    be = backend(NAME, mesos_service())
    if balance is not None:
        be["balance"] = balance
    text = do_render(pool([frontend()], [be]), tmp_path)
    assert sections(text)[("backend", NAME)][1] == line


def test_http_balance_with_an_argument(tmp_path: Path) -> None:
    fe = frontend(protocol="HTTP")
    be = backend(NAME, mesos_service(), protocol="HTTP", balance="hdr(host)")
    text = do_render(pool([fe], [be]), tmp_path)
    assert sections(text)[("backend", NAME)][:2] == ["mode http", "balance hdr(host)"]


@pytest.mark.parametrize("balance", ["roundrobin\n    bind :1", "leastconn check", "a;b", "hdr(host) x"])
def test_unsafe_balance_is_refused(balance: str) -> None:
    with pytest.raises(RenderError, match="balance"):
        render(
            pool([frontend()], [backend(NAME, balance=balance)]),
            ports={},
            stats_port=9090,
            agents=AGENTS,
            pid_file="/tmp/p",
            socket_path="unix@a.sock",
        )


# -- ports and binds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind_port", "ports", "bound"),
    [
        (16379, {}, 16379),  # static
        (0, {NAME: 40123}, 40123),  # dynamic, resolved by the dataplane
        (16379, {NAME: 40124}, 40124),  # `ports` wins
    ],
)
def test_frontend_ports(bind_port: int, ports: dict[str, int], bound: int, tmp_path: Path) -> None:
    text = do_render(pool([frontend(port=bind_port)], [backend()]), tmp_path, ports=ports)
    assert f"bind 127.0.0.1:{bound}" in sections(text)[("frontend", NAME)]


def test_a_dynamic_port_must_be_resolved() -> None:
    with pytest.raises(RenderError, match=f"frontend {NAME}: no port resolved"):
        render(
            pool([frontend(port=0)], [backend()]),
            ports={},
            stats_port=9090,
            agents=AGENTS,
            pid_file="/tmp/p",
            socket_path="unix@a.sock",
        )


def test_every_frontend_binds_the_local_address_whatever_its_bind_address(tmp_path: Path) -> None:
    fes = [
        frontend("a", port=8001, backend=NAME),
        frontend("b", port=8002, backend=NAME, bindAddress="10.1.1.1"),
    ]
    text = do_render(pool(fes, [backend()]), tmp_path, bind_address="127.0.0.2", stats_port=8000)
    found = sections(text)
    assert "bind 127.0.0.2:8001" in found[("frontend", "a")]
    assert "bind 127.0.0.2:8002" in found[("frontend", "b")]
    assert "bind 127.0.0.2:8000" in found[("listen", "stats")]


def test_global_stats_and_defaults(tmp_path: Path) -> None:
    text = do_render(pool([frontend()], [backend()]), tmp_path, stats_port=20000, hard_stop_after="30s")
    found = sections(text)
    assert f"pidfile {tmp_path / 'haproxy.pid'}" in found[("global", "")]
    assert "stats socket unix@admin.sock mode 600 level admin expose-fd listeners" in found[("global", "")]
    assert "hard-stop-after 30s" in found[("global", "")]
    assert "daemon" not in found[("global", "")]  # the master is supervised in the foreground
    assert "mode tcp" in found[("defaults", "")]
    assert found[("listen", "stats")][:2] == ["mode http", "bind 127.0.0.1:20000"]
    assert "monitor-uri /_haproxy_health_check" in found[("listen", "stats")]


def test_empty_pool_is_a_valid_configuration(tmp_path: Path) -> None:
    text = do_render({"name": "empty", "haproxy": {}}, tmp_path)
    assert {kind for kind, _ in sections(text)} == {"global", "defaults", "listen"}


# -- HTTP and raw strings --------------------------------------------------------------------------


def test_http_frontend_with_routing_map(tmp_path: Path) -> None:
    fe = frontend(
        "web",
        port=80,
        backend="default",
        protocol="HTTP",
        linkBackend={
            "defaultBackend": "default",
            "map": [
                {"backend": "api", "hostEq": "api.example.com", "pathBeg": "/v1"},
                {"backend": "static", "pathReg": "\\.(css|js)$"},
                {"backend": "ignored"},  # no condition: nothing to render
            ],
        },
    )
    bes = [backend(n, mesos_service(), protocol="HTTP") for n in ("default", "api", "static")]
    text = do_render(pool([fe], bes), tmp_path)
    assert sections(text)[("frontend", "web")] == [
        "mode http",
        "bind 127.0.0.1:80",
        "use_backend api if { hdr(host) -i 'api.example.com' } { path_beg '/v1' }",
        "use_backend static if { path_reg '\\.(css|js)$' }",
        "default_backend default",
    ]


@pytest.mark.parametrize("protocol", ["TCP", "TLS", "HTTPS", None])
def test_non_http_protocols_are_tcp(protocol: str | None, tmp_path: Path) -> None:
    text = do_render(pool([frontend(protocol=protocol)], [backend(protocol=protocol)]), tmp_path)
    assert sections(text)[("frontend", NAME)][0] == "mode tcp"
    assert sections(text)[("backend", NAME)][0] == "mode tcp"


def test_misc_strings_and_bind_modifier(tmp_path: Path) -> None:
    fe = frontend(miscStrs=["timeout client 2m"], bindModifier="accept-proxy")
    be = backend(NAME, mesos_service(), miscStrs=["timeout server 30s"])
    found = sections(do_render(pool([fe], [be]), tmp_path))
    assert found[("frontend", NAME)][1:3] == ["bind 127.0.0.1:16379 accept-proxy", "timeout client 2m"]
    assert "timeout server 30s" in found[("backend", NAME)]


@pytest.mark.parametrize(
    "fe",
    [
        frontend(miscStrs=["option tcplog\nbind :1"]),
        frontend(bindModifier="accept-proxy\r\n"),
        frontend(protocol="HTTP", linkBackend={"map": [{"backend": "b", "pathBeg": "/a' b"}]}),
    ],
)
def test_raw_strings_cannot_inject_lines(fe: dict[str, Any]) -> None:
    with pytest.raises(RenderError):
        render(
            pool([fe], [backend()]),
            ports={},
            stats_port=9090,
            agents=AGENTS,
            pid_file="/tmp/p",
            socket_path="unix@a.sock",
        )


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    the_pool = pool([frontend(), frontend("b", port=0)], [backend(NAME, mesos_service())])
    shuffled_agents = dict(reversed(list(AGENTS.items())))
    first = do_render(the_pool, tmp_path, ports={"b": 30001})
    assert do_render(the_pool, tmp_path, ports={"b": 30001}, agents=shuffled_agents) == first
