"""EdgeLB V2 pool -> haproxy.cfg text (pure).

Where it sits in the data flow: the API server hands a pool to ``HAProxyDataplane.apply``
(``edgelb_local.haproxy``), which resolves the pool's ports (static ``bindPort`` or a remembered
dynamic one) and calls ``render`` here; the text is validated with ``haproxy -c``, swapped into the
pool's ``haproxy.cfg`` and loaded by that pool's HAProxy master. The same text is what
``GET /v2/pools/{name}/lbconfig`` returns.

Local stand-in rules (shared/DESIGN.md, "Local stand-ins"): every frontend binds on one loopback
address whatever its ``bindAddress`` says (there is one machine, not one agent per pool
instance), and Mesos task selectors resolve against a configured map of agent names to addresses
(``{"kube-node-0": "127.0.0.1"}``) instead of asking Mesos which tasks run where: those are the tasks
of one framework, the Kubernetes cluster's (``framework``, ``kubernetes-cluster`` by default), so a
selector naming another framework selects nothing.

Nothing here does I/O; every value that reaches the text is either sanitized (section and server
names) or checked (addresses, balance, raw strings), so a pool can never inject configuration lines.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.edgelb.schema import default_frontend_name

Pool = dict[str, Any]

# HAProxy proxy and server names: letters, digits, '-', '_', '.', ':' (anything else is refused by
# the parser, and a space would even split the line).
_NAME_OK = re.compile(r"^[A-Za-z0-9_.:-]+$")
_NAME_BAD_CHAR = re.compile(r"[^A-Za-z0-9_.:-]")
# `balance` arguments EdgeLB passes through: an algorithm, optionally with one argument in
# parentheses (hdr(Host), rdp-cookie(mstshash)). Whether HAProxy knows the algorithm is left to
# `haproxy -c`, so the caller gets HAProxy's own message.
_BALANCE_OK = re.compile(r"^[a-z][a-z0-9_-]*(\([A-Za-z0-9_.-]*\))?$")
# Server addresses (ADDRESS endpoints and agent addresses): IPv4, IPv6 or a host name.
_ADDRESS_OK = re.compile(r"^[A-Za-z0-9_.:-]+$")

_MESOS_IP_TYPES = ("AUTO_IP", "AGENT_IP", "CONTAINER_IP")
#: The framework whose tasks the agents map lists (dklb's default --kubernetes-cluster-framework-name).
DEFAULT_FRAMEWORK = "kubernetes-cluster"
STATS_URI = "/haproxy?stats"
HEALTH_URI = "/_haproxy_health_check"


class RenderError(ValueError):
    """The pool cannot be rendered (a value that would not be a single safe config token)."""


@dataclass(frozen=True)
class Server:
    name: str  # sanitized, unique within its backend
    address: str
    port: int
    check: bool


def section_name(name: str) -> str:
    """A valid HAProxy section name for an EdgeLB object name, deterministic and collision-free.

    Valid names are kept as they are (dklb's ``cluster:namespace:service:port`` names already are),
    so stats pages and logs show the EdgeLB name. Otherwise every invalid character becomes '_' and a
    short hash of the original is appended, so ``a/b`` and ``a_b`` cannot end up as one section.
    """
    if _NAME_OK.match(name):
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{_NAME_BAD_CHAR.sub('_', name)}-{digest}"


def frontend_name(frontend: Mapping[str, Any]) -> str:
    """The frontend's EdgeLB name, with EdgeLB's default when the pool leaves it out."""
    name = frontend.get("name")
    return str(name) if name else default_frontend_name(frontend)


def frontends_of(pool: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((pool.get("haproxy") or {}).get("frontends") or [])


def backends_of(pool: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((pool.get("haproxy") or {}).get("backends") or [])


def _single_line(value: Any, *, what: str) -> str:
    text = str(value)
    if not text.strip() or any(c in text for c in "\r\n\0"):
        raise RenderError(f"{what}: {text!r} must be a non-empty single line")
    return text.strip()


def _int(value: Any, *, default: int, what: str) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise RenderError(f"{what}: {value!r} is not an integer") from exc


def _address(value: Any, *, what: str) -> str:
    text = str(value or "")
    if not _ADDRESS_OK.match(text):
        raise RenderError(f"{what}: {text!r} is not an IP address or host name")
    return text


def _selects(mesos: Mapping[str, Any], *, task: str, framework: str) -> bool:
    """Whether the selector picks the task ``task`` of the framework ``framework``.

    As EdgeLB does it: each of task name, task ID, framework name and framework ID constrains the
    match when its pattern (searched, unanchored: the pattern carries its own ^...$) or else its exact
    value is set. IDs are not simulated here: a selector by ID selects nothing.
    """
    constraints = (
        ("taskName", task),
        ("taskID", None),
        ("frameworkName", framework),
        ("frameworkID", None),
    )
    for key, value in constraints:
        pattern, exact = mesos.get(f"{key}Pattern"), mesos.get(key)
        if pattern:
            try:
                if value is None or re.search(str(pattern), value) is None:
                    return False
            except re.error as exc:
                raise RenderError(f"mesos.{key}Pattern {pattern!r}: {exc}") from exc
        elif exact and value != exact:
            return False
    return True


def resolve_servers(
    backend: Mapping[str, Any], agents: Mapping[str, str], *, framework: str = DEFAULT_FRAMEWORK
) -> list[Server]:
    """The backend's servers: Mesos selectors against ``agents`` (the tasks of ``framework``),
    ADDRESS endpoints as given.

    Endpoints whose port is unknown (EdgeLB's default -1 means "the task's named port", which only
    Mesos knows) and Marathon selectors (no Marathon here) resolve to nothing. The same server name
    twice (one agent matched by two services) is kept once.
    """
    servers: list[Server] = []
    seen: set[str] = set()
    for index, service in enumerate(backend.get("services") or []):
        endpoint = service.get("endpoint") or {}
        port = _int(endpoint.get("port"), default=-1, what=f"services[{index}].endpoint.port")
        if not 0 < port <= 65535:
            continue
        check = bool((endpoint.get("check") or {}).get("enabled", True))
        kind = str(endpoint.get("type") or "AUTO_IP").upper()
        candidates: list[tuple[str, str]] = []  # (label, address)
        if kind == "ADDRESS":
            address = _address(endpoint.get("address"), what=f"services[{index}].endpoint.address")
            candidates.append((address, address))
        elif kind in _MESOS_IP_TYPES:
            mesos = service.get("mesos")
            marathon = service.get("marathon") or {}
            # A Marathon selector makes EdgeLB look for the service in the "marathon" framework.
            if mesos and not (marathon.get("serviceID") or marathon.get("serviceIDPattern")):
                for agent in sorted(agents):
                    if _selects(mesos, task=agent, framework=framework):
                        candidates.append((agent, _address(agents[agent], what=f"agent {agent}")))
        else:
            known = ", ".join(("ADDRESS", *_MESOS_IP_TYPES))
            raise RenderError(f"services[{index}].endpoint.type {kind!r} is not one of {known}")
        for label, address in candidates:
            name = section_name(f"{label}:{port}")
            if name in seen:
                continue
            seen.add(name)
            servers.append(Server(name=name, address=address, port=port, check=check))
    return servers


def _mode(protocol: Any) -> str:
    # HTTP is proxied as HTTP. HTTPS/TLS would need the pool's certificates, which do not exist
    # locally: they are passed through as TCP, which is what a TLS client needs to reach the backend.
    return "http" if str(protocol or "TCP").upper() == "HTTP" else "tcp"


def _misc(lines: Iterable[Any], *, what: str) -> list[str]:
    return [f"    {_single_line(line, what=what)}" for line in lines or []]


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def render(
    pool: Mapping[str, Any],
    *,
    ports: Mapping[str, int],
    stats_port: int,
    agents: Mapping[str, str],
    pid_file: str,
    socket_path: str,
    bind_address: str = "127.0.0.1",
    hard_stop_after: str = "1m",
    framework: str = DEFAULT_FRAMEWORK,
) -> str:
    """The haproxy.cfg for ``pool``.

    ``ports`` maps frontend names (EdgeLB names, as ``frontend_name`` gives them) to the port they
    bind; it must hold every frontend whose ``bindPort`` is 0 and may override static ones.
    ``socket_path`` is the admin socket in HAProxy syntax (``unix@admin.sock`` is relative to the
    process's working directory). Raises RenderError for values that cannot be rendered safely.
    """
    bind_address = _address(bind_address, what="bind address")
    name = pool.get("name", "?")
    frontends = frontends_of(pool)
    backends = backends_of(pool)
    fe_sections = [section_name(frontend_name(fe)) for fe in frontends]
    be_sections = [section_name(str(be.get("name") or "")) for be in backends if be.get("name")]
    # A `listen` section shares the namespace of frontends and backends.
    stats_section = "stats"
    while stats_section in fe_sections or stats_section in be_sections:
        stats_section += "_"

    out: list[str] = [
        f"# Rendered by the local EdgeLB for pool {_single_line(name, what='pool name')}. Do not edit.",
        "global",
        # No `daemon`: the master stays in the foreground as the child we supervise by PID; it is
        # started with -W (master-worker) so a SIGUSR2 makes it re-execute with the new file, fork
        # new workers and let the old ones finish their connections.
        f"    pidfile {_single_line(pid_file, what='pid file')}",
        # `expose-fd listeners` lets a new process take over the listening sockets (`-x`) instead of
        # binding them again, so no connection is refused while the old worker closes its sockets.
        # (The 2.6 master does the same through its internal socketpair on SIGUSR2.)
        f"    stats socket {_single_line(socket_path, what='socket path')} mode 600 level admin"
        " expose-fd listeners",
        # One small process per pool, possibly many pools on one machine: one thread and a bounded
        # connection table (otherwise HAProxy sizes it from `ulimit -n`).
        "    nbthread 1",
        "    noreuseport",
        "    maxconn 4096",
        # Old workers keep serving their established connections after a reload; long-lived ones
        # (redis clients) would keep them around forever.
        f"    hard-stop-after {_single_line(hard_stop_after, what='hard-stop-after')}",
        "",
        "defaults",
        "    mode tcp",
        "    option dontlognull",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 5s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check 5s",
        "",
        f"listen {stats_section}",
        "    mode http",
        f"    bind {_endpoint(bind_address, int(stats_port))}",
        "    stats enable",
        f"    stats uri {STATS_URI}",
        f"    monitor-uri {HEALTH_URI}",
    ]
    for fe, section in zip(frontends, fe_sections, strict=True):
        fe_name = frontend_name(fe)
        port = ports.get(fe_name) or _int(fe.get("bindPort"), default=0, what=f"frontend {fe_name} bindPort")
        if not 0 < port <= 65535:
            raise RenderError(f"frontend {fe_name}: no port resolved for bindPort {fe.get('bindPort')!r}")
        mode = _mode(fe.get("protocol"))
        bind = f"    bind {_endpoint(bind_address, port)}"
        if fe.get("bindModifier"):
            bind += " " + _single_line(fe["bindModifier"], what=f"frontend {fe_name} bindModifier")
        out += ["", f"frontend {section}", f"    mode {mode}", bind]
        out += _misc(fe.get("miscStrs") or [], what=f"frontend {fe_name} miscStrs")
        link = fe.get("linkBackend") or {}
        if mode == "http":
            out += _http_rules(link.get("map") or [], fe_name=fe_name)
        if link.get("defaultBackend"):
            out.append(f"    default_backend {section_name(str(link['defaultBackend']))}")
    for be in backends:
        be_name = str(be.get("name") or "")
        if not be_name:
            raise RenderError("backend without a name")
        out += ["", f"backend {section_name(be_name)}", f"    mode {_mode(be.get('protocol'))}"]
        balance = str(be.get("balance") or "roundrobin")
        if not _BALANCE_OK.match(balance):
            raise RenderError(f"backend {be_name}: balance {balance!r} is not an algorithm name")
        out.append(f"    balance {balance}")
        out += _misc(be.get("miscStrs") or [], what=f"backend {be_name} miscStrs")
        # No server at all is still a valid backend (connections to it are refused): the pool
        # stays valid while, e.g., no agent matches yet.
        try:
            servers = resolve_servers(be, agents, framework=framework)
        except RenderError as exc:
            raise RenderError(f"backend {be_name}: {exc}") from exc
        for server in servers:
            line = f"    server {server.name} {_endpoint(server.address, server.port)}"
            out.append(line + (" check" if server.check else ""))
    return "\n".join(out) + "\n"


def _http_rules(rules: Sequence[Mapping[str, Any]], *, fe_name: str) -> list[str]:
    """``linkBackend.map`` of an HTTP frontend as ``use_backend`` lines (first match wins, as in EdgeLB)."""
    tests = (
        ("hostEq", "hdr(host) -i"),
        ("hostReg", "hdr_reg(host)"),
        ("pathBeg", "path_beg"),
        ("pathEnd", "path_end"),
        ("pathReg", "path_reg"),
    )
    lines = []
    for i, rule in enumerate(rules):
        conditions = []
        for key, fetch in tests:
            if rule.get(key):
                value = _single_line(rule[key], what=f"frontend {fe_name} map[{i}].{key}")
                if "'" in value:
                    raise RenderError(f"frontend {fe_name} map[{i}].{key}: {value!r} contains a single quote")
                # Single quotes: HAProxy interprets nothing inside them (backslashes of regexes stay).
                conditions.append(f"{{ {fetch} '{value}' }}")
        if rule.get("backend") and conditions:
            lines.append(f"    use_backend {section_name(str(rule['backend']))} if {' '.join(conditions)}")
    return lines
