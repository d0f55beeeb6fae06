"""What keeps ``dklb run``'s resident memory down: modules never imported, SQLite page caches,
malloc arenas (``engine.kube.api``, ``engine.store.database``, ``engine.cli.run``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.cli import run
from engine.store import database

REPO = Path(__file__).resolve().parents[2]

# The generated API modules are ~20 MB (core) and ~4 MB (admission registration) of RSS each.
NEVER_IMPORTED = [
    "kubernetes.client.api.core_v1_api",
    "kubernetes.client.api.admissionregistration_v1_api",
]


def test_the_controller_never_imports_the_generated_api_modules() -> None:
    # A fresh interpreter: this test process may have imported them for other tests.
    script = (
        "import json, sys\n"
        "import engine.app, engine.cli.run, engine.kube.watch, engine.kube.adapter\n"
        "import engine.admission.register\n"
        f"print(json.dumps([m for m in {NEVER_IMPORTED!r} if m in sys.modules]))\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=300
    )
    assert json.loads(answer.stdout) == []


@pytest.mark.parametrize(
    "options",
    [{}, {"deferred": True}, {"read_only": True}],
    ids=["writer", "reader", "read-only"],
)
def test_every_connection_has_a_small_page_cache(tmp_path: Path, options: dict[str, bool]) -> None:
    url = database.database_url(str(tmp_path / "dklb.db"))
    database.make_engine(url).dispose()  # creates the file, for the read-only engine
    engine = database.make_engine(url, **options)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA cache_size")).scalar() == -database.CACHE_KIB
    finally:
        engine.dispose()


def test_malloc_arenas_are_limited_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert run.limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    # glibc's mallopt answers 1 on success (this suite runs on glibc).
    assert run.limit_malloc_arenas() is True
