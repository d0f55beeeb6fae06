"""The real dataplane of the local EdgeLB: one HAProxy master-worker process per pool.

Where it sits in the data flow: the API server (``edgelb_local.server``) calls ``apply`` before it
stores a POSTed/PUT pool. ``apply`` resolves the pool's ports (static ``bindPort`` or a dynamic one
remembered in ``ports.json``), renders the configuration (``edgelb_local.render``), validates it with
``haproxy -c``, swaps it into ``<state_dir>/haproxy/<pool>/haproxy.cfg`` and either starts the pool's
HAProxy master or hot-reloads it, then waits until the new configuration really serves. A refusal at
any step is a ``DataplaneError`` (the server's 400) and leaves the running pool as it was.

Per pool directory (``<state_dir>/haproxy/<pool>/``):

- ``haproxy.cfg``: the configuration being served (``lbconfig`` returns it);
- ``ports.json``: dynamic ports allocated once and kept, so a ``bindPort: 0`` frontend keeps its port
  across reloads and restarts of the server;
- ``state.json``: the ports and ``since`` of the configuration being served, for adoption;
- ``haproxy.pid`` (the master's PID), ``master.sock`` (master CLI), ``admin.sock`` (stats socket),
  ``haproxy.log`` (the master's and workers' stderr).

Why master-worker: the master owns the listening sockets across reloads. On SIGUSR2 it re-executes
itself on the new file; the new process receives the old worker's listening sockets over their
internal socketpair (what ``expose-fd listeners`` / ``-x`` provide) instead of binding them again, so
the kernel's accept queues are never closed and no connection is refused; the old worker then stops
accepting and finishes its established connections. The master's CLI (``show proc``) tells whether
the reload produced a new worker or failed (``[failed: N]``), which a signal alone cannot.

The masters run in their own session and are tracked by PID files, so they survive this process
being SIGKILLed; ``recover`` adopts them (checking ``/proc/<pid>/cmdline`` is really HAProxy on our
file) instead of restarting them. Processes are only ever signalled by PID.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgelb_local.dataplane import DataplaneError, Pool, Running
from edgelb_local.render import DEFAULT_FRAMEWORK, RenderError, frontend_name, frontends_of, render

log = logging.getLogger(__name__)

CFG = "haproxy.cfg"
PORTS = "ports.json"
STATE = "state.json"
PID = "haproxy.pid"
LOG = "haproxy.log"
# Relative names: HAProxy runs with the pool directory as its working directory, so the unix
# socket paths stay short whatever state_dir is (sun_path holds 107 bytes).
MASTER_SOCKET = "master.sock"
ADMIN_SOCKET = "admin.sock"

_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FAILED = re.compile(r"\[failed:\s*(\d+)\]")


@dataclass(frozen=True)
class _ProcInfo:
    """What the master CLI's ``show proc`` says."""

    master: int
    reloads: int
    failed: int
    workers: frozenset[int]  # current workers
    old_workers: frozenset[int]  # workers of previous configurations, finishing their connections


@dataclass
class _PoolState:
    name: str
    dir: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    proc: subprocess.Popen[bytes] | None = None  # when we started the master (to reap it)
    running: Running | None = None


class HAProxyDataplane:
    """One real HAProxy per pool; implements ``edgelb_local.dataplane.Dataplane``."""

    def __init__(
        self,
        *,
        state_dir: Path,
        agents: Mapping[str, str],
        framework: str = DEFAULT_FRAMEWORK,
        bind_address: str = "127.0.0.1",
        haproxy_bin: str = "haproxy",
        ready_timeout: float = 15.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._root = Path(state_dir).resolve() / "haproxy"
        self._agents = dict(agents)
        self._framework = framework
        self._bind_address = bind_address
        self._haproxy = shutil.which(haproxy_bin) or haproxy_bin
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._pools: dict[str, _PoolState] = {}
        self._pools_lock = threading.Lock()
        # Ports are claimed globally, check-and-claim under one lock: two pools applied at the same
        # time must not both find a port free, nor be handed the same dynamic port.
        self._ports_lock = threading.Lock()
        self._claims: dict[str, set[int]] = {}  # pool -> ports it binds (or is about to bind)

    # -- Dataplane ------------------------------------------------------------------------------

    def apply(self, pool: Pool) -> Running:
        state = self._state(str(pool.get("name") or ""))
        with state.lock:
            return self._apply(state, pool)

    def remove(self, name: str) -> None:
        if not _POOL_NAME.match(name):
            return  # no such pool can exist
        state = self._state(name)
        with state.lock:
            self._stop(state)
            shutil.rmtree(state.dir, ignore_errors=True)

    def status(self, name: str) -> Running | None:
        if not _POOL_NAME.match(name):
            return None
        state = self._state(name)
        with state.lock:
            if self._master(state) is None:
                return None
            return state.running

    def lbconfig(self, name: str) -> str:
        if _POOL_NAME.match(name):
            state = self._state(name)
            with state.lock, contextlib.suppress(FileNotFoundError):
                return (state.dir / CFG).read_text()
        return f"# pool {name}: no configuration\n"

    def recover(self, pools: Iterable[Pool]) -> None:
        wanted: set[str] = set()
        for pool in pools:
            name = str(pool.get("name") or "")
            wanted.add(name)
            try:
                state = self._state(name)
                with state.lock:
                    if self._master(state) is not None:
                        # Adopt: what it serves is recorded beside it; _apply then only reloads if
                        # the stored pool renders to something else.
                        state.running = self._read_running(state)
                    self._apply(state, pool)
            except DataplaneError as exc:
                log.warning("pool %s could not be recovered: %s", name, exc)
        if self._root.is_dir():
            for entry in sorted(self._root.iterdir()):
                if entry.is_dir() and entry.name not in wanted and _POOL_NAME.match(entry.name):
                    log.info("stopping HAProxy of pool %s: not a known pool", entry.name)
                    self.remove(entry.name)

    def stop_all(self) -> None:
        with self._pools_lock:
            names = set(self._pools)
        if self._root.is_dir():
            names |= {p.name for p in self._root.iterdir() if p.is_dir() and _POOL_NAME.match(p.name)}
        for name in sorted(names):
            state = self._state(name)
            with state.lock:
                self._stop(state)

    # -- apply ----------------------------------------------------------------------------------

    def _apply(self, state: _PoolState, pool: Pool) -> Running:
        state.dir.mkdir(parents=True, exist_ok=True)
        master = self._master(state)
        # Ports our own running HAProxy holds (the file on disk is what it serves): they are passed
        # over to the new worker on reload, not bound again, so they must not be probed.
        held = _bound_ports(state.dir / CFG) if master is not None else set()
        running: Running | None = None
        try:
            running = self._apply_claimed(state, pool, master=master, held=held)
            return running
        finally:
            with self._ports_lock:
                if running is not None:
                    self._claims[state.name] = {*running.frontends.values(), running.stats_port}
                elif held:
                    self._claims[state.name] = held
                else:
                    self._claims.pop(state.name, None)

    def _apply_claimed(self, state: _PoolState, pool: Pool, *, master: int | None, held: set[int]) -> Running:
        serving = state.running if master is not None else None
        frontends, stats_port, dynamic = self._resolve_ports(state, pool, held)
        try:
            text = render(
                pool,
                ports=frontends,
                stats_port=stats_port,
                agents=self._agents,
                framework=self._framework,
                bind_address=self._bind_address,
                pid_file=str(state.dir / PID),
                socket_path=f"unix@{ADMIN_SOCKET}",
            )
        except RenderError as exc:
            raise DataplaneError(f"pool {state.name}: {exc}") from exc
        cfg = state.dir / CFG
        old_text = cfg.read_text() if cfg.exists() else None
        if serving is not None and text == old_text:
            return serving  # nothing changes: no reload, same `since`
        self._check(state, text)

        os.replace(self._write_tmp(state, text), cfg)
        try:
            if master is not None and not self._reload(state, master):
                # The master does not answer on its CLI: a restart is the only way to a known state.
                log.warning("pool %s: HAProxy master %d does not answer, restarting it", state.name, master)
                self._stop(state)
                self._start(state)
            elif master is None:
                self._start(state)
            self._wait_listening(state, [*frontends.values(), stats_port])
        except DataplaneError:
            self._rollback(state, old_text, master)
            raise
        running = Running(frontends=dict(frontends), stats_port=stats_port, since=time.time())
        _write_json(state.dir / PORTS, dynamic)
        _write_json(
            state.dir / STATE,
            {"frontends": running.frontends, "stats_port": running.stats_port, "since": running.since},
        )
        state.running = running
        return running

    def _resolve_ports(
        self, state: _PoolState, pool: Pool, held: set[int]
    ) -> tuple[dict[str, int], int, dict[str, Any]]:
        """``(frontend name -> port, stats port, what ports.json will hold)``; refuses ports in use.

        The ports are claimed for this pool on return (``_apply`` settles the claim).
        """
        with self._ports_lock:
            resolved = self._resolve_ports_locked(state, pool, held)
            self._claims[state.name] = held | set(resolved[0].values()) | {resolved[1]}
            return resolved

    def _resolve_ports_locked(
        self, state: _PoolState, pool: Pool, held: set[int]
    ) -> tuple[dict[str, int], int, dict[str, Any]]:
        claimed = {port: name for name, ports in self._claims.items() if name != state.name for port in ports}
        remembered = _read_json(state.dir / PORTS)
        old_frontends: dict[str, int] = remembered.get("frontends") or {}
        dynamic: dict[str, Any] = {"frontends": {}}
        resolved: dict[str, int] = {}
        owners: dict[int, str] = {}

        def take(port: int, what: str, *, is_dynamic: bool, remembered_port: int | None) -> int:
            if is_dynamic:
                # Keep the remembered port unless something else took it meanwhile.
                if not (
                    remembered_port
                    and remembered_port not in claimed
                    and (remembered_port in held or self._free(remembered_port))
                ):
                    remembered_port = self._allocate(exclude=set(owners) | held | set(claimed))
                port = remembered_port
            elif port in claimed:
                raise DataplaneError(
                    f"pool {state.name}: {what} cannot bind port {port}: "
                    f"the port is already in use by pool {claimed[port]}"
                )
            elif port not in held and not self._free(port):
                raise DataplaneError(
                    f"pool {state.name}: {what} cannot bind {self._bind_address}:{port}: "
                    "the port is already in use by another process"
                )
            if port in owners:
                raise DataplaneError(f"pool {state.name}: {what} and {owners[port]} both bind port {port}")
            owners[port] = what
            return port

        haproxy = pool.get("haproxy") or {}
        stats_bind = int((haproxy.get("stats") or {}).get("bindPort") or 0)
        stats_port = take(
            stats_bind, "stats", is_dynamic=stats_bind == 0, remembered_port=remembered.get("stats")
        )
        if stats_bind == 0:
            dynamic["stats"] = stats_port
        for fe in frontends_of(pool):
            name = frontend_name(fe)
            if name in resolved:
                raise DataplaneError(f"pool {state.name}: two frontends named {name!r}")
            bind = int(fe.get("bindPort") or 0)
            port = take(
                bind, f"frontend {name}", is_dynamic=bind == 0, remembered_port=old_frontends.get(name)
            )
            resolved[name] = port
            if bind == 0:
                dynamic["frontends"][name] = port
        return resolved, stats_port, dynamic

    def _free(self, port: int) -> bool:
        """Whether HAProxy could bind this port (SO_REUSEADDR as HAProxy: TIME_WAIT does not count)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self._bind_address, port))
            except OSError:
                return False
        return True

    def _allocate(self, *, exclude: set[int]) -> int:
        """A free port (the kernel's pick for port 0) that no pool claims or remembers."""
        taken = exclude | self._remembered_ports()
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((self._bind_address, 0))
                port = int(probe.getsockname()[1])
            if port not in taken:
                return port
        raise DataplaneError("no free port found for a dynamic bindPort")

    def _remembered_ports(self) -> set[int]:
        """Dynamic ports other pools of this state directory keep (possibly not listening right now)."""
        ports: set[int] = set()
        if self._root.is_dir():
            for path in self._root.glob(f"*/{PORTS}"):
                ports |= _dynamic_ports(path)
        return ports

    def _write_tmp(self, state: _PoolState, text: str) -> Path:
        tmp = state.dir / f"{CFG}.new"
        tmp.write_text(text)
        return tmp

    def _check(self, state: _PoolState, text: str) -> None:
        """``haproxy -c`` on the candidate: HAProxy's own verdict, before anything running is touched."""
        tmp = self._write_tmp(state, text)
        try:
            result = subprocess.run(
                [self._haproxy, "-c", "-f", str(tmp)],
                cwd=state.dir,
                capture_output=True,
                text=True,
                timeout=self._ready_timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataplaneError(f"pool {state.name}: could not run {self._haproxy} -c: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        if result.returncode != 0:
            output = result.stderr + result.stdout
            raise DataplaneError(f"pool {state.name}: HAProxy refused the configuration: {_alerts(output)}")

    def _rollback(self, state: _PoolState, old_text: str | None, master: int | None) -> None:
        """Back to what ran before the failed apply (a failed reload leaves the old worker serving)."""
        cfg = state.dir / CFG
        current = self._master(state)
        if current is not None and current != master:
            self._stop(state)  # a master this apply started
            current = None
        if old_text is None:
            cfg.unlink(missing_ok=True)
            return
        os.replace(self._write_tmp(state, old_text), cfg)
        try:
            if current is not None:
                # Takes the master out of its "reload failed" wait mode, on the old file: seamless too.
                self._reload(state, current)
            elif master is not None:
                self._start(state)  # the old master was restarted and the new one failed
        except DataplaneError as exc:
            log.warning("pool %s: going back to the previous configuration failed: %s", state.name, exc)

    # -- processes ------------------------------------------------------------------------------

    def _start(self, state: _PoolState) -> None:
        (state.dir / PID).unlink(missing_ok=True)
        with open(state.dir / LOG, "wb") as log_file:  # a new master starts a new log
            try:
                proc = subprocess.Popen(
                    [self._haproxy, "-W", "-f", str(state.dir / CFG), "-S", f"unix@{MASTER_SOCKET},mode,600"],
                    cwd=state.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    # Its own session: no signal for our process group (Ctrl-C, a supervisor's
                    # kill of our group) reaches it, and it outlives a SIGKILLed server.
                    start_new_session=True,
                )
            except OSError as exc:
                raise DataplaneError(f"pool {state.name}: could not start {self._haproxy}: {exc}") from exc
        state.proc = proc
        deadline = time.monotonic() + self._ready_timeout
        while True:
            if proc.poll() is not None:
                state.proc = None
                raise DataplaneError(
                    f"pool {state.name}: HAProxy exited at start: {_alerts(self._log_since(state, 0))}"
                )
            info = self._show_proc(state)
            if info is not None and info.workers:
                return
            if time.monotonic() > deadline:
                self._stop(state)
                raise DataplaneError(f"pool {state.name}: HAProxy not up within {self._ready_timeout}s")
            time.sleep(0.01)

    def _reload(self, state: _PoolState, master: int) -> bool:
        """Seamless reload; False when the master's CLI does not answer (nothing was signalled)."""
        before = self._show_proc(state, attempts=20)
        if before is None:
            return False
        offset = _size(state.dir / LOG)
        known = before.workers | before.old_workers
        os.kill(master, signal.SIGUSR2)
        deadline = time.monotonic() + self._ready_timeout
        while True:
            if not self._alive(master, state):
                output = self._log_since(state, offset)
                raise DataplaneError(f"pool {state.name}: HAProxy master died on reload: {_alerts(output)}")
            info = self._show_proc(state)
            # The master is re-executing while its CLI does not answer; it counts the reload once
            # the new configuration is loaded (or failed to load).
            if info is not None and info.reloads > before.reloads:
                if info.failed > before.failed:
                    raise DataplaneError(
                        f"pool {state.name}: HAProxy refused the configuration on reload: "
                        f"{_alerts(self._log_since(state, offset))}"
                    )
                if info.workers - known:
                    return True
            if time.monotonic() > deadline:
                raise DataplaneError(f"pool {state.name}: HAProxy not reloaded within {self._ready_timeout}s")
            time.sleep(0.01)

    def _wait_listening(self, state: _PoolState, ports: Iterable[int]) -> None:
        """Every port accepts a TCP connection (the master binds them before forking the worker)."""
        host = "127.0.0.1" if self._bind_address == "0.0.0.0" else self._bind_address
        deadline = time.monotonic() + self._ready_timeout
        for port in ports:
            while True:
                try:
                    with socket.create_connection((host, port), timeout=1.0):
                        break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise DataplaneError(
                            f"pool {state.name}: port {port} does not accept connections: {exc}"
                        ) from exc
                    time.sleep(0.01)

    def _stop(self, state: _PoolState) -> None:
        """SIGTERM the master (it stops its workers), SIGKILL whatever is left after the deadline."""
        master = self._master(state)
        state.running = None
        with self._ports_lock:
            self._claims.pop(state.name, None)
        if master is None:
            state.proc = None
            return
        cfg = str(state.dir / CFG)
        workers = [pid for pid in _children(master) if _is_ours(pid, cfg)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGTERM)
        pids = [master, *workers]
        if not self._wait_gone(state, pids, self._stop_timeout):
            for pid in pids:
                if self._alive(pid, state) and _is_ours(pid, cfg):
                    log.warning("pool %s: HAProxy %d did not stop, killing it", state.name, pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self._wait_gone(state, pids, self._stop_timeout)
        state.proc = None
        (state.dir / PID).unlink(missing_ok=True)

    def _wait_gone(self, state: _PoolState, pids: list[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(self._alive(pid, state) for pid in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _master(self, state: _PoolState) -> int | None:
        """The PID of this pool's live master, from the PID file, if it really is ours."""
        if state.proc is not None and state.proc.poll() is not None:
            state.proc = None
        try:
            pid = int((state.dir / PID).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = state.proc.pid if state.proc is not None else 0
        if pid > 0 and self._alive(pid, state) and _is_ours(pid, str(state.dir / CFG)):
            return pid
        return None

    def _alive(self, pid: int, state: _PoolState) -> bool:
        if state.proc is not None and state.proc.pid == pid:
            state.proc.poll()  # reap our own child, or it stays a zombie
        return _alive(pid)

    def _show_proc(self, state: _PoolState, *, attempts: int = 1) -> _ProcInfo | None:
        for attempt in range(attempts):
            if attempt:
                time.sleep(0.05)
            try:
                return _parse_show_proc(_unix_command(state.dir, MASTER_SOCKET, "show proc"))
            except (OSError, ValueError):
                continue
        return None

    # -- bookkeeping ----------------------------------------------------------------------------

    def _state(self, name: str) -> _PoolState:
        if not _POOL_NAME.match(name):
            raise DataplaneError(f"invalid pool name {name!r}")
        with self._pools_lock:
            state = self._pools.get(name)
            if state is None:
                state = self._pools[name] = _PoolState(name=name, dir=self._root / name)
            return state

    def _read_running(self, state: _PoolState) -> Running | None:
        data = _read_json(state.dir / STATE)
        try:
            return Running(
                frontends={str(k): int(v) for k, v in data["frontends"].items()},
                stats_port=int(data["stats_port"]),
                since=float(data["since"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def _log_since(self, state: _PoolState, offset: int) -> str:
        try:
            with open(state.dir / LOG, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


# -- helpers (module level: no state) ------------------------------------------------------------


def _alerts(output: str) -> str:
    """HAProxy's own error lines (``[ALERT]``), without the pid prefix; the tail if there are none."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    alerts = [re.sub(r"^\[ALERT\]\s*\(\d+\)\s*:\s*", "", line) for line in lines if "[ALERT]" in line]
    return " | ".join(alerts or lines[-5:]) or "(no output)"


def _unix_command(directory: Path, name: str, command: str, timeout: float = 2.0) -> str:
    """One command on a unix socket of ``directory``, the whole answer.

    The socket is reached through ``/proc/self/fd/<dirfd>/<name>`` so its path is short whatever
    the state directory is.
    """
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(f"/proc/self/fd/{dir_fd}/{name}")
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)  # the CLI answers and closes once the input ends
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    finally:
        os.close(dir_fd)
    return b"".join(chunks).decode(errors="replace")


def _parse_show_proc(text: str) -> _ProcInfo:
    master = reloads = failed = -1
    workers: set[int] = set()
    old: set[int] = set()
    section = ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").strip()
            continue
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        if fields[1] == "master":
            master, reloads = int(fields[0]), int(fields[2])
            match = _FAILED.search(line)
            failed = int(match.group(1)) if match else 0
        elif fields[1] == "worker":
            (old if section == "old workers" else workers).add(int(fields[0]))
    if master < 0:
        raise ValueError(f"no master in show proc output: {text!r}")
    return _ProcInfo(master, reloads, failed, frozenset(workers), frozenset(old))


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) of a process, None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces and ')'
    return rest[0], int(rest[1])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_ours(pid: int, cfg: str) -> bool:
    """The process is an HAProxy master-worker on exactly this configuration file (not a reused PID)."""
    args = _cmdline(pid)
    return "-W" in args and any(pair == ("-f", cfg) for pair in itertools.pairwise(args))


def _children(pid: int) -> list[int]:
    found = []
    for entry in _proc_pids():
        stat = _proc_stat(entry)
        if stat is not None and stat[1] == pid:
            found.append(entry)
    return found


def _proc_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _dynamic_ports(path: Path) -> set[int]:
    data = _read_json(path)
    ports = {int(p) for p in (data.get("frontends") or {}).values()}
    if data.get("stats"):
        ports.add(int(data["stats"]))
    return ports


def _bound_ports(cfg: Path) -> set[int]:
    """The ports a rendered configuration binds."""
    try:
        text = cfg.read_text()
    except OSError:
        return set()
    return {int(m.group(1)) for m in re.finditer(r"^\s*bind \S*:(\d+)\b", text, re.MULTILINE)}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
