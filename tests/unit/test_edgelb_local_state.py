"""The local EdgeLB's pool file (``edgelb_local.state``) past ``JOURNAL_FROM``: writes go to a journal,
answered only once fsynced; a restart replays it (a torn last line, a write killed before its
answer, is dropped); the journal is folded into the file once it outgrows it. Small states keep
the one-file rewrite (the integration tests read pools.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgelb_local import state
from edgelb_local.state import PoolState, StateError


def pool(name: str, cpus: float = 0.1) -> dict[str, object]:
    return {"name": name, "cpus": cpus, "haproxy": {"frontends": [], "backends": []}}


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    # A few pools cross it: the journal path without writing megabytes.
    monkeypatch.setattr(state, "JOURNAL_FROM", 300)


def test_a_small_state_is_one_file_rewritten_at_each_write(tmp_path: Path) -> None:
    pools = PoolState(tmp_path)
    pools.put(pool("a"), since=1.0)
    pools.put(pool("b"), since=2.0)
    pools.delete("a")
    assert [p.name for p in tmp_path.iterdir()] == ["pools.json"]
    assert list(json.loads((tmp_path / "pools.json").read_text())["pools"]) == ["b"]


def test_past_the_threshold_writes_are_journaled_and_survive_a_restart(
    tmp_path: Path, small_threshold: None
) -> None:
    pools = PoolState(tmp_path)
    for i in range(6):
        pools.put(pool(f"p{i}"), since=float(i))
    journaled = (tmp_path / "pools.journal").exists()
    pools.put(pool("p0", cpus=0.5), since=10.0)
    pools.delete("p1")
    assert journaled or (tmp_path / "pools.journal").exists()
    again = PoolState(tmp_path)
    assert again.names() == ["p0", "p2", "p3", "p4", "p5"]
    assert again.get("p0") == pool("p0", cpus=0.5) and again.since("p0") == 10.0
    assert again.list_json() == pools.list_json()
    # Loading folded the journal into the file.
    assert [p.name for p in tmp_path.iterdir()] == ["pools.json"]


def test_the_journal_is_folded_once_it_outgrows_the_file(tmp_path: Path, small_threshold: None) -> None:
    pools = PoolState(tmp_path)
    sizes = []
    for i in range(60):
        pools.put(pool(f"p{i % 5}", cpus=i / 100), since=float(i))
        journal = tmp_path / "pools.journal"
        sizes.append(journal.stat().st_size if journal.exists() else 0)
    file_size = (tmp_path / "pools.json").stat().st_size
    assert max(sizes) <= file_size + 200  # never much more than the file: folded in time
    assert 0 in sizes[10:] and any(sizes)  # journaled, and folded more than once
    assert PoolState(tmp_path).get("p4") == pool("p4", cpus=0.59)


def test_a_torn_last_line_is_a_write_never_answered(tmp_path: Path, small_threshold: None) -> None:
    pools = PoolState(tmp_path)
    for i in range(4):
        pools.put(pool(f"p{i}"), since=float(i))
    journal = tmp_path / "pools.journal"
    with journal.open("a") as f:
        f.write('{"put":"p9","entry":{"since":1,"pool":')  # killed mid-append
    assert "p9" not in PoolState(tmp_path).names()


def test_a_damaged_journal_line_refuses_to_start(tmp_path: Path, small_threshold: None) -> None:
    PoolState(tmp_path).put(pool("a"), since=1.0)
    (tmp_path / "pools.journal").write_text('{"put":"b"}\n{"delete":"a"}\n')
    with pytest.raises(StateError, match=r"pools.journal: line 1 is not a pool write"):
        PoolState(tmp_path)
