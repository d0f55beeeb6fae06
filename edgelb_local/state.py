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

While the file is small (under ``JOURNAL_FROM`` bytes), every write replaces the whole file
atomically (tmp + fsync + os.replace + fsync of the directory): a process killed mid-write leaves
the old file or the new one, never a torn one. Past that size (thousands of pools: the benchmark's
20,000 Services make ~5,600, a 20 MB file), rewriting it at every write would cost O(pools) per
write and make the stand-in the bottleneck, so a write is appended to ``pools.journal`` instead,
one JSON line, fsynced before the write is answered (``{"put": name, "entry": {"since", "pool"}}``
or ``{"delete": name}``); once the journal outgrows the file, the file is rewritten (as above) and
the journal removed. Loading reads the file, then replays the journal; a last line without its
newline is a write killed before it was answered, and is dropped. Replaying a line the file
already holds changes nothing, so a crash between the rewrite and the removal loses nothing. The
JSON of each pool is kept encoded in memory so a write (and ``GET /v2/pools``) costs a join, not a
re-encode of thousands of pools.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

Pool = dict[str, Any]
log = logging.getLogger("edgelb_local")

STATE_FILE = "pools.json"
JOURNAL_FILE = "pools.journal"
FORMAT_VERSION = 1
# The file size from which writes go to the journal (below it, a rewrite is cheaper than a journal).
JOURNAL_FROM = 1 << 20


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
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
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
        self.journal_path = self.dir / JOURNAL_FILE
        self._lock = threading.Lock()
        self._file_bytes = 0  # the size of pools.json as last written (or loaded)
        self._journal_bytes = 0
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
            self._persist(
                f'{{"put":{json.dumps(name)},"entry":{file_json}}}\n', {**self._file_json, name: file_json}
            )
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
            self._persist(f'{{"delete":{json.dumps(name)}}}\n', entries)
            for table in (self._pools, self._since, self._api_json, self._file_json):
                table.pop(name, None)
            return True

    # -- internals ---------------------------------------------------------------------------------

    def _persist(self, line: str, entries: dict[str, str]) -> None:
        """One write made durable: a rewrite of the file while it is small, else a journal line (and
        a rewrite when the journal has outgrown the file). On failure nothing is kept of it."""
        if self._file_bytes < JOURNAL_FROM and self._journal_bytes == 0:
            self._write(entries)
            return
        data = line.encode()
        with self.journal_path.open("ab") as journal:
            start = journal.tell()
            try:
                journal.write(data)
                journal.flush()
                os.fsync(journal.fileno())
            except BaseException:
                # A half-written line would glue itself to the next one: cut it off.
                journal.truncate(start)
                raise
        if self._journal_bytes == 0:
            _fsync_dir(self.dir)  # the journal's creation must reach the disk too
        self._journal_bytes += len(data)
        if self._journal_bytes > self._file_bytes:
            try:
                self._write(entries)
            except OSError as exc:
                # The write is durable in the journal already: answer it, fold the journal later.
                log.warning("%s: could not fold the journal into the file: %s", self.path, exc)

    def _load(self) -> None:
        if self.path.exists():
            self._load_file()
        if self.journal_path.exists():
            self._replay()

    def _load_file(self) -> None:
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
        self._file_bytes = self.path.stat().st_size

    def _replay(self) -> None:
        text = self.journal_path.read_bytes().decode()
        lines = text.split("\n")
        # The last element is "" after a complete last line, else a write killed mid-append.
        for number, line in enumerate(lines[:-1], start=1):
            try:
                record = json.loads(line)
                if "delete" in record:
                    name = record["delete"]
                    for table in (self._pools, self._since, self._api_json, self._file_json):
                        table.pop(name, None)
                    continue
                name, entry = record["put"], record["entry"]
                pool, since = entry["pool"], float(entry.get("since") or 0.0)
            except (ValueError, KeyError, TypeError) as exc:
                raise StateError(f"{self.journal_path}: line {number} is not a pool write: {exc}") from exc
            self._pools[name] = pool
            self._since[name] = since
            self._api_json[name] = json.dumps(pool, separators=(",", ":"))
            self._file_json[name] = json.dumps(entry, separators=(",", ":"))
        # Fold the journal into the file now: the next writes start from one file again.
        self._write(dict(self._file_json))

    def _write(self, entries: dict[str, str]) -> None:
        lines = ",\n".join(f"{json.dumps(name)}:{entries[name]}" for name in sorted(entries))
        text = f'{{"version":{FORMAT_VERSION},"pools":{{\n{lines}}}}}\n'
        atomic_write_text(self.path, text)
        self._file_bytes = len(text.encode())
        if self._journal_bytes or self.journal_path.exists():
            # Everything the journal held is in the file now (replaying it again would change nothing).
            self.journal_path.unlink(missing_ok=True)
            _fsync_dir(self.dir)
            self._journal_bytes = 0
