"""The local EdgeLB's pools on disk: ``STATE_DIR/pools.json``, so the server keeps its pools across
its own restarts.

Where it sits in the data flow: ``edgelb_local.server`` stores every accepted pool here (after the
dataplane has applied it) and answers reads from here; on start it loads the file and hands the pools
to ``Dataplane.recover``. Besides the pool (as returned by the API, defaults filled), each entry keeps
the time its current configuration started serving, so the metadata delay survives a restart of the
server the way a real pool keeps running while the EdgeLB API restarts.

File format (one pool per line, for people reading it)::

    {"version": 1, "pools": {
    "<name>": {"since": <unix time>, "pool": {...}},
    ...}}

Every write replaces the whole file atomically (tmp + fsync + os.replace + fsync of the directory):
a process killed mid-write leaves the old file or the new one, never a torn one. The JSON of each
pool is kept encoded in memory so a write (and ``GET /v2/pools``) costs a join, not a re-encode of
thousands of pools.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

Pool = dict[str, Any]

STATE_FILE = "pools.json"
FORMAT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash at any moment leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too, or a power cut can bring the old file back.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateError(Exception):
    """The state file exists but cannot be used; the message names the file and the problem."""


class PoolState:
    """The stored pools by name; thread-safe. Writers are serialized by the server, readers are not."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / STATE_FILE
        self._lock = threading.Lock()
        self._pools: dict[str, Pool] = {}
        self._since: dict[str, float] = {}
        self._api_json: dict[str, str] = {}  # name -> the pool as the API returns it
        self._file_json: dict[str, str] = {}  # name -> its entry in pools.json
        self._load()

    # -- reads -------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._pools)

    def get(self, name: str) -> Pool | None:
        with self._lock:
            pool = self._pools.get(name)
            return copy.deepcopy(pool) if pool is not None else None

    def list(self) -> list[Pool]:
        with self._lock:
            return [copy.deepcopy(self._pools[name]) for name in sorted(self._pools)]

    def since(self, name: str) -> float | None:
        """When the pool's current configuration started serving (unix time), None if unknown."""
        with self._lock:
            return self._since.get(name)

    def pool_json(self, name: str) -> str | None:
        with self._lock:
            return self._api_json.get(name)

    def list_json(self) -> str:
        """``[pool, ...]`` sorted by name, as JSON text."""
        with self._lock:
            return "[" + ",".join(self._api_json[name] for name in sorted(self._api_json)) + "]"

    # -- writes ------------------------------------------------------------------------------------

    def put(self, pool: Pool, *, since: float) -> None:
        """Store (create or replace) ``pool`` and persist; on a failed write nothing changes."""
        name = pool["name"]
        stored = copy.deepcopy(pool)
        api_json = json.dumps(stored, separators=(",", ":"))
        file_json = json.dumps({"since": since, "pool": stored}, separators=(",", ":"))
        with self._lock:
            entries = dict(self._file_json)
            entries[name] = file_json
            self._write(entries)
            self._pools[name] = stored
            self._since[name] = since
            self._api_json[name] = api_json
            self._file_json[name] = file_json

    def delete(self, name: str) -> bool:
        """Forget the pool and persist; False when it was not stored."""
        with self._lock:
            if name not in self._pools:
                return False
            entries = {k: v for k, v in self._file_json.items() if k != name}
            self._write(entries)
            for table in (self._pools, self._since, self._api_json, self._file_json):
                table.pop(name, None)
            return True

    # -- internals ---------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            # Refuse to start rather than start empty: an empty start would "lose" every pool.
            raise StateError(f"{self.path}: cannot read pools: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise StateError(f"{self.path}: not a version {FORMAT_VERSION} pools file")
        entries = data.get("pools")
        if not isinstance(entries, dict):
            raise StateError(f"{self.path}: 'pools' is not an object")
        for name, entry in entries.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("pool"), dict)):
                raise StateError(f"{self.path}: entry {name!r} has no pool")
            pool, since = entry["pool"], float(entry.get("since") or 0.0)
            self._pools[name] = pool
            self._since[name] = since
            self._api_json[name] = json.dumps(pool, separators=(",", ":"))
            self._file_json[name] = json.dumps({"since": since, "pool": pool}, separators=(",", ":"))

    def _write(self, entries: dict[str, str]) -> None:
        lines = ",\n".join(f"{json.dumps(name)}:{entries[name]}" for name in sorted(entries))
        atomic_write_text(self.path, f'{{"version":{FORMAT_VERSION},"pools":{{\n{lines}}}}}\n')
