"""The operator commands (``inspect``, ``history``, ``pools``, ``retry``) on a real database.

The database is populated by driving the engine (``tests.engine.harness.World``: fake cluster,
fake EdgeLB, fake clock) through a realistic incident: three Ready Services, two of them sharing
a pool; one stuck in Provisioning because EdgeLB keeps answering 503 for more than 5 minutes; one
Rejected for an invalid configuration and one Paused, both recent. The commands then run on a
copy of that database, with the commands' clock set to the fake one, and the tests check what an
operator reads: rows and columns (aligned), the stuck binding and its last error, one binding's
configuration, history tail and diff against (a copy of) the fake EdgeLB, history filters and
the plan SQLite uses for them, pools with and without EdgeLB, ``retry`` waking a binding that
the reconciler then really runs (and refusing Rejected and Paused ones). Read-only commands
leave the database byte-for-byte unchanged and cannot write through their connection; a
missing, unmigrated, foreign or too-new database gives ``error: ...`` and exit 1, never a
traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bench.history_bench import plan_of
from engine import cli
from engine.cli import bindings, database
from engine.cli import output as tables
from engine.edgelb.errors import Unavailable
from engine.model.services import ANNOTATION, PAUSED_ANNOTATION
from engine.model.translation import pool_ports
from engine.store import Store, database_url
from engine.store.migrate import open_read_only
from tests.checks import present
from tests.engine.harness import World
from tests.fakes.edgelb import FakeEdgeLB
from tests.fakes.kube import make_service

REPO = Path(__file__).resolve().parents[2]
STUCK = "default/stuck"
READ_ONLY_COMMANDS = (
    ["inspect"],
    ["inspect", "--stuck"],
    ["inspect", STUCK],
    ["history"],
    ["history", STUCK],
    ["pools"],
)
ALL_COMMANDS = (["inspect"], ["inspect", STUCK], ["history"], ["pools"], ["retry", STUCK])


def config(pool: str, port: int, service_port: int) -> str:
    return f"name: {pool}\nfrontends:\n- port: {port}\n  servicePort: {service_port}\n"


@dataclass
class Scene:
    db: Path
    now: datetime
    edgelb: FakeEdgeLB
    bindings: dict[str, Any]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    world = World(tmp_path_factory.mktemp("world"))
    kube = world.kube
    kube.apply(make_service("redis", config=config("dklb-redis", 16379, 6379)))
    kube.apply(make_service("web1", namespace="shop", ports=[(80, 30080)], config=config("shared", 8080, 80)))
    kube.apply(make_service("web2", namespace="shop", ports=[(80, 30081)], config=config("shared", 8081, 80)))
    world.settle()
    # EdgeLB refuses to create the next pool for the whole scenario.
    for _ in range(40):
        world.edgelb.fail_next("create_pool", Unavailable("boom", status=503))
    kube.apply(make_service("stuck", ports=[(5432, 31432)], config=config("dklb-stuck", 15432, 5432)))
    world.step()
    for _ in range(8):
        world.advance(60)
    # Recent, and waiting for the user: Rejected (invalid configuration) and Paused.
    kube.apply(make_service("bad", ports=[(80, 30090)], config="name: BAD_NAME\nfrontends: 12\n"))
    kube.apply(
        make_service(
            "paused",
            ports=[(80, 30091)],
            config=config("dklb-paused", 8090, 80),
            annotations={PAUSED_ANNOTATION: "true"},
        )
    )
    world.step()
    world.advance(30)
    assert world.states() == {
        "default/bad": "Rejected",
        "default/paused": "Paused",
        "default/redis": "Ready",
        STUCK: "Provisioning",
        "shop/web1": "Ready",
        "shop/web2": "Ready",
    }
    bindings = {b.key: b for b in world.store.bindings()}
    assert bindings[STUCK].attempts >= 3 and "boom" in (bindings[STUCK].last_error or "")
    now = world.clock.now
    world.store.close()  # checkpoints the WAL: the database is one self-contained file
    return Scene(db=Path(world.db), now=now, edgelb=world.edgelb, bindings=bindings)


@pytest.fixture
def db(scene: Scene, tmp_path: Path) -> Path:
    """A private copy of the scenario's database (retry writes; read-only checks hash it)."""
    path = tmp_path / "dklb.db"
    shutil.copyfile(scene.db, path)
    return path


def clone(edgelb: FakeEdgeLB) -> FakeEdgeLB:
    """An independent fake EdgeLB holding the same pools (tests change pools in it)."""
    copy = FakeEdgeLB(auto_metadata=True)
    for name in edgelb.names():
        pool = edgelb.stored(name)
        assert pool is not None
        copy.seed(pool)
    return copy


def run(
    capsys: pytest.CaptureFixture[str],
    db: Path | str,
    now: datetime | None,
    *argv: str,
    edgelb: FakeEdgeLB | None = None,
) -> tuple[int, str, str]:
    with contextlib.ExitStack() as patches:
        if now is not None:
            patches.enter_context(mock.patch.object(bindings, "utcnow", return_value=now))
        if edgelb is not None:
            patches.enter_context(
                mock.patch.object(
                    bindings, "edgelb_to_read", return_value=contextlib.nullcontext((edgelb, "EdgeLB"))
                )
            )
        code = cli.main([*argv, "--database", str(db)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def columns(header: str) -> list[int]:
    """Where each column starts: a non-space at the line start or after the two-space gap."""
    return [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 2 : i] == "  ")]


def parse_table(text: str, *, right: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """The rows of an aligned table as dicts, asserting the alignment on the way.

    Every line has the two-space gap right before every column start; a left-aligned cell
    starts exactly there (right-aligned numbers end at the column's right edge instead).
    """
    lines = text.rstrip("\n").splitlines()
    header = lines[0]
    starts = columns(header)
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    rows = []
    for line in lines[1:]:
        for name, start in zip(names[1:], starts[1:], strict=True):
            assert line[start - 2 : start] == "  ", f"column {name} misaligned in {line!r}"
            if name not in right:
                assert line[start] != " ", f"column {name} does not start at {start} in {line!r}"
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def stored_binding(db: Path, key: str) -> Any:
    store = Store(database_url(str(db)), read_only=True)
    try:
        return store.get(key)
    finally:
        store.close()


# ---- inspect ---------------------------------------------------------------------------------


def test_inspect_lists_every_binding_in_aligned_columns(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path
) -> None:
    code, out, _ = run(capsys, db, scene.now, "inspect")
    assert code == 0
    assert out.splitlines()[0].split("  ")[0] == "NAMESPACE/NAME"
    rows = {r["NAMESPACE/NAME"]: r for r in parse_table(out, right=("ATTEMPTS",))}
    assert set(rows) == set(scene.bindings)
    assert {k: r["STATE"] for k, r in rows.items()} == {k: b.state for k, b in scene.bindings.items()}
    assert rows["shop/web1"]["POOL"] == rows["shop/web2"]["POOL"] == "shared"
    assert rows["default/bad"]["POOL"] == "-"
    stuck = rows[STUCK]
    assert stuck["SINCE"] == "8m30s ago"
    assert stuck["ATTEMPTS"] == str(scene.bindings[STUCK].attempts)
    assert stuck["NEXT WAKE-UP"].startswith("in ")
    assert stuck["LAST ERROR"] == 'creating EdgeLB pool "dklb-stuck" failed: boom'
    assert rows["default/redis"]["LAST ERROR"] == "-"
    assert rows["default/bad"]["NEXT WAKE-UP"] == "-"
    # Long errors are cut in the table ...
    error = rows["default/bad"]["LAST ERROR"]
    assert error.endswith(("…", "...")) and tables.width(error) <= bindings.MESSAGE_WIDTH
    # ... and whole in JSON.
    code, out, _ = run(capsys, db, scene.now, "inspect", "-o", "json")
    docs = {d["key"]: d for d in json.loads(out)}
    assert docs["default/bad"]["last_error"] == scene.bindings["default/bad"].last_error
    assert (
        "BAD_NAME" in docs["default/bad"]["last_error"] and "frontends" in docs["default/bad"]["last_error"]
    )
    assert docs[STUCK]["state_since"] == "2026-11-28T12:00:00Z"
    assert docs[STUCK]["state_seconds"] == 510.0
    # --wide shows the whole error in the table too.
    code, out, _ = run(capsys, db, scene.now, "inspect", "--wide")
    rows = {r["NAMESPACE/NAME"]: r for r in parse_table(out, right=("ATTEMPTS",))}
    assert rows["default/bad"]["LAST ERROR"] == scene.bindings["default/bad"].last_error


def test_inspect_stuck_shows_exactly_the_stuck_binding_with_its_error(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path
) -> None:
    for argv in (["--stuck", "--older-than", "5m"], ["--stuck"], ["--older-than", "5m"]):
        code, out, _ = run(capsys, db, scene.now, "inspect", *argv)
        assert code == 0
        [row] = parse_table(out, right=("ATTEMPTS",))
        assert row["NAMESPACE/NAME"] == STUCK
        assert row["STATE"] == "Provisioning"
        assert row["LAST ERROR"] == 'creating EdgeLB pool "dklb-stuck" failed: boom'
    code, out, _ = run(capsys, db, scene.now, "inspect", "--stuck", "-o", "json")
    [doc] = json.loads(out)
    assert (doc["key"], doc["last_error"]) == (STUCK, scene.bindings[STUCK].last_error)
    # Rejected and Paused wait for the user: stuck too, once old enough (they are 30s old).
    code, out, _ = run(capsys, db, scene.now, "inspect", "--stuck", "--older-than", "10s", "-o", "json")
    assert sorted(d["key"] for d in json.loads(out)) == ["default/bad", "default/paused", STUCK]
    code, out, err = run(capsys, db, scene.now, "inspect", "--stuck", "--older-than", "1h")
    assert (code, out) == (0, "")
    assert "no stuck bindings" in err and "1h" in err


def test_inspect_filters_by_state_and_pool(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path
) -> None:
    code, out, _ = run(capsys, db, scene.now, "inspect", "--state", "provisioning")
    assert [r["NAMESPACE/NAME"] for r in parse_table(out, right=("ATTEMPTS",))] == [STUCK]
    code, out, _ = run(capsys, db, scene.now, "inspect", "--pool", "shared", "-o", "json")
    assert [d["key"] for d in json.loads(out)] == ["shop/web1", "shop/web2"]
    code, out, _ = run(capsys, db, scene.now, "inspect", "--state", "Ready", "--pool", "dklb-redis")
    assert [r["NAMESPACE/NAME"] for r in parse_table(out, right=("ATTEMPTS",))] == ["default/redis"]
    code, _, err = run(capsys, db, scene.now, "inspect", "--state", "Stuckish")
    assert code == 1
    assert err.startswith("error: unknown state 'Stuckish' (states: Pending, Provisioning")


def test_overdue_wakeups_point_at_a_missing_controller(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path
) -> None:
    # Two days on and nothing ran: every wake-up is overdue (Ready's day-long backstop too), as
    # when no controller leads.
    later = scene.now + timedelta(days=2)
    code, out, err = run(capsys, db, later, "inspect")
    assert code == 0
    rows = {r["NAMESPACE/NAME"]: r for r in parse_table(out, right=("ATTEMPTS",))}
    assert rows[STUCK]["NEXT WAKE-UP"].endswith(" ago")
    assert err.startswith("note: 4 wake-up(s) overdue by more than 1m")
    assert "is a controller running and leading on this database?" in err
    code, out, _ = run(capsys, db, later, "inspect", STUCK)
    assert "overdue, is a controller running and leading on this database?" in out
    # On time, no note.
    code, out, err = run(capsys, db, scene.now, "inspect")
    assert err == ""


def test_inspect_one_shows_configuration_binding_error_and_history_tail(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path
) -> None:
    code, out, _ = run(capsys, db, scene.now, "inspect", STUCK, "--history", "3")
    assert code == 0
    assert "State:        Provisioning since 2026-11-28 12:00:00Z (8m30s ago)" in out
    assert "Pool:         dklb-stuck (bindings referencing it: 1, created by dklb: yes" in out
    assert f"Attempts:     {scene.bindings[STUCK].attempts}\n" in out
    assert f"retry {scene.bindings[STUCK].attempts + 1}" in out
    assert 'Last error:\n  creating EdgeLB pool "dklb-stuck" failed: boom\n' in out
    # The recorded configuration, as YAML in the annotation's order.
    section = out.split("Configuration (recorded):\n", 1)[1].split("\n\n", 1)[0]
    assert yaml.safe_load(section) == scene.bindings[STUCK].config
    assert section.splitlines()[0] == "  name: dklb-stuck"
    # The history tail: the 3 newest rows, aligned, without the redundant SERVICE column.
    history = out.split("History (last 3, newest first; all of it: dklb history default/stuck):\n", 1)[1]
    history = history.split("\n\n", 1)[0]
    rows = parse_table("\n".join(line[2:] for line in history.splitlines()), right=("ATTEMPT",))
    assert len(rows) == 3 and "SERVICE" not in rows[0]
    assert all(r["TRIGGER"] == "failed" and r["REASON"] == "EdgeLBUnavailable" for r in rows)
    assert [int(r["ATTEMPT"]) for r in rows] == [scene.bindings[STUCK].attempts - i for i in range(3)]
    # Without EdgeLB flags: how to get the comparison.
    assert "give --edgelb-url URL" in out.split("EdgeLB (default/stuck's part of pool dklb-stuck):", 1)[1]

    code, out, _ = run(capsys, db, scene.now, "inspect", STUCK, "--history", "3", "-o", "json")
    doc = json.loads(out)
    assert doc["binding"]["key"] == STUCK and doc["binding"]["last_error"] == scene.bindings[STUCK].last_error
    assert doc["configuration"] == scene.bindings[STUCK].config
    assert doc["objects"] == scene.bindings[STUCK].objects
    assert doc["pool"]["ref_count"] == 1 and doc["pool"]["created_by_dklb"] is True
    assert len(doc["history"]) == 3 and doc["history"][0]["attempt"] == scene.bindings[STUCK].attempts
    assert doc["edgelb"]["status"] == "not-checked"

    # A Rejected binding never had a configuration accepted.
    code, out, _ = run(capsys, db, scene.now, "inspect", "default/bad")
    assert code == 0
    assert f"none accepted yet: see the {ANNOTATION} annotation" in out
    assert "waits for the user to change the Service" in out


def test_inspect_one_compares_with_edgelb(capsys: pytest.CaptureFixture[str], scene: Scene, db: Path) -> None:
    edgelb = clone(scene.edgelb)
    code, out, _ = run(capsys, db, scene.now, "inspect", "default/redis", edgelb=edgelb)
    assert code == 0
    assert "in sync: EdgeLB pool dklb-redis holds exactly the 1 frontend(s) and 1 backend(s)" in out
    # In a shared pool, only this Service's part is compared (web2's objects are not a difference).
    code, out, _ = run(capsys, db, scene.now, "inspect", "shop/web1", edgelb=edgelb)
    assert "in sync: EdgeLB pool shared" in out

    # Someone edits the pool behind dklb's back: the diff shows exactly that.
    pool = edgelb.stored("dklb-redis")
    assert pool is not None
    pool["haproxy"]["backends"][0]["services"][0]["endpoint"]["port"] = 31999
    edgelb.seed(pool)
    code, out, _ = run(capsys, db, scene.now, "inspect", "default/redis", edgelb=edgelb)
    assert code == 0
    section = out.split("EdgeLB (default/redis's part of pool dklb-redis):\n", 1)[1]
    assert "EdgeLB pool dklb-redis differs from what is recorded for default/redis" in section
    assert "  --- recorded for default/redis (database)\n  +++ EdgeLB pool dklb-redis (now)\n" in section
    changed = [line for line in section.splitlines() if line.startswith(("  -", "  +"))]
    assert changed == [
        "  --- recorded for default/redis (database)",
        "  +++ EdgeLB pool dklb-redis (now)",
        "  -      port: 32213",
        "  +      port: 31999",
    ]
    code, out, _ = run(capsys, db, scene.now, "inspect", "default/redis", "-o", "json", edgelb=edgelb)
    comparison = json.loads(out)["edgelb"]
    assert comparison["status"] == "differs"
    assert comparison["desired"]["backends"][0]["services"][0]["endpoint"]["port"] == 32213
    assert comparison["actual"]["backends"][0]["services"][0]["endpoint"]["port"] == 31999
    assert "+      port: 31999" in comparison["diff"]

    edgelb.drop("dklb-redis")
    code, out, _ = run(capsys, db, scene.now, "inspect", "default/redis", edgelb=edgelb)
    assert code == 0
    assert "  EdgeLB pool dklb-redis does not exist\n" in out
    code, out, _ = run(capsys, db, scene.now, "inspect", "default/bad", edgelb=edgelb)
    assert "no pool objects are recorded for default/bad (state Rejected)" in out


def test_inspect_one_reports_an_unreachable_edgelb_after_everything_else(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path
) -> None:
    edgelb = clone(scene.edgelb)
    edgelb.fail_next("get_pool", Unavailable("GET /v2/pools/dklb-redis: 503 down", status=503))
    code, out, err = run(capsys, db, scene.now, "inspect", "default/redis", edgelb=edgelb)
    assert code == 1
    assert "Configuration (recorded):" in out and "History (" in out
    assert "cannot read EdgeLB pool dklb-redis from EdgeLB: GET /v2/pools/dklb-redis: 503 down" in out
    assert err.startswith("error: cannot read EdgeLB pool dklb-redis")

    # The real flags build the real client: nothing listens on this port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code, out, err = run(capsys, db, scene.now, "inspect", "default/redis", "--edgelb-url", url)
    assert code == 1
    assert f"cannot read EdgeLB pool dklb-redis from EdgeLB at {url}: GET /v2/pools/dklb-redis" in err
    code, out, err = run(capsys, db, scene.now, "inspect", "default/redis", "--edgelb-url", "ftp://edgelb")
    assert (code, out) == (1, "")
    assert err.startswith("error: EdgeLB options: the EdgeLB URL scheme must be http or https")


def test_inspect_unknown_or_malformed_key(capsys: pytest.CaptureFixture[str], scene: Scene, db: Path) -> None:
    code, out, err = run(capsys, db, scene.now, "inspect", "default/nope")
    assert (code, out) == (1, "")
    assert err.startswith("error: no binding for default/nope (known: ")
    assert "default/redis" in err and "shop/web1" in err
    # The same name in another namespace is what was most likely meant: listed first.
    code, _, err = run(capsys, db, scene.now, "inspect", "kube-system/redis")
    assert err.startswith("error: no binding for kube-system/redis (known: default/redis, ")
    code, _, err = run(capsys, db, scene.now, "inspect", "redis")
    assert code == 1
    assert err == "error: 'redis' is not NAMESPACE/NAME (e.g. default/redis)\n"
    code, _, err = run(capsys, db, scene.now, "inspect", STUCK, "--stuck")
    assert code == 1 and "give no NAMESPACE/NAME" in err


# ---- history ---------------------------------------------------------------------------------


def all_history(db: Path) -> list[dict[str, Any]]:
    """Every history row, straight from SQLite, newest first (the reference the filters must match)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM history ORDER BY at DESC, id DESC").fetchall()
    finally:
        conn.close()
    return [dict(r) for r in rows]


def history_json(
    capsys: pytest.CaptureFixture[str], db: Path, now: datetime, *argv: str
) -> list[dict[str, Any]]:
    code, out, _ = run(capsys, db, now, "history", *argv, "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["pruned"] == [], "nothing was pruned in this scene"
    entries: list[dict[str, Any]] = doc["entries"]
    return entries


def test_history_filters(capsys: pytest.CaptureFixture[str], scene: Scene, db: Path) -> None:
    reference = all_history(db)
    everything = history_json(capsys, db, scene.now, "--limit", "0")
    assert [h["id"] for h in everything] == [r["id"] for r in reference]
    assert 10 < len(everything) <= 50
    assert history_json(capsys, db, scene.now) == everything  # default --limit 50
    ten = history_json(capsys, db, scene.now, "--limit", "10")
    assert [h["id"] for h in ten] == [r["id"] for r in reference[:10]]

    stuck = history_json(capsys, db, scene.now, STUCK, "--limit", "0")
    assert [h["id"] for h in stuck] == [
        r["id"] for r in reference if (r["namespace"], r["name"]) == ("default", "stuck")
    ]
    assert stuck[-1]["from_state"] is None and stuck[-1]["to_state"] == "Pending"
    assert sum(h["reason"] == "EdgeLBUnavailable" for h in stuck) == scene.bindings[STUCK].attempts

    shared = history_json(capsys, db, scene.now, "--pool", "shared", "--limit", "0")
    assert shared and {h["pool"] for h in shared} == {"shared"}
    assert {h["key"] for h in shared} == {"shop/web1", "shop/web2"}
    assert len(shared) == sum(r["pool"] == "shared" for r in reference)

    recent = history_json(capsys, db, scene.now, "--since", "3m", "--limit", "0")
    cutoff = scene.now - timedelta(minutes=3)
    assert recent and len(recent) == sum(
        datetime.fromisoformat(r["at"]).replace(tzinfo=UTC) >= cutoff for r in reference
    )
    assert all(datetime.fromisoformat(h["at"]) >= cutoff for h in recent)
    assert history_json(capsys, db, scene.now, "--since", cutoff.isoformat(), "--limit", "0") == recent

    rejected = history_json(capsys, db, scene.now, "--state", "rejected")
    assert [(h["key"], h["from_state"], h["to_state"]) for h in rejected] == [
        ("default/bad", "Pending", "Rejected")
    ]
    ready_shared = history_json(capsys, db, scene.now, "--state", "Ready", "--pool", "shared")
    assert sorted(h["key"] for h in ready_shared) == ["shop/web1", "shop/web2"]

    three = history_json(capsys, db, scene.now, STUCK, "--limit", "3")
    assert [h["id"] for h in three] == [h["id"] for h in stuck[:3]]
    oldest_first = history_json(capsys, db, scene.now, STUCK, "--limit", "3", "--reverse")
    assert oldest_first == list(reversed(three))

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["history", "--since", "yesterday", "--database", str(db)])
    assert exit_info.value.code == 2
    assert "'yesterday' is neither a duration" in capsys.readouterr().err


def test_history_table(capsys: pytest.CaptureFixture[str], scene: Scene, db: Path) -> None:
    code, out, err = run(capsys, db, scene.now, "history", STUCK, "--limit", "4")
    assert code == 0
    rows = parse_table(out, right=("ATTEMPT",))
    assert len(rows) == 4
    assert "(the 4 newest shown" in err
    newest = rows[0]
    assert newest["TIME"] == "2026-11-28 12:08:00Z" and newest["AGE"] == "30s ago"
    assert newest["SERVICE"] == STUCK and newest["POOL"] == "dklb-stuck"
    assert newest["FROM → TO"] == "Provisioning → Provisioning"
    assert (newest["TRIGGER"], newest["REASON"]) == ("failed", "EdgeLBUnavailable")
    assert newest["MESSAGE"] == 'creating EdgeLB pool "dklb-stuck" failed: boom'
    code, out, _ = run(capsys, db, scene.now, "history", "--limit", "0")
    rows = parse_table(out, right=("ATTEMPT",))
    assert any(r["FROM → TO"] == "(new) → Pending" and r["POOL"] == "-" for r in rows)
    code, out, err = run(capsys, db, scene.now, "history", "--pool", "no-such-pool")
    assert (code, out, err) == (0, "", "no history matches\n")


def captured_plan(store: Store, **filters: Any) -> str:
    """EXPLAIN QUERY PLAN of the very statement ``dklb history`` sends for ``filters``."""
    return plan_of(store, lambda: store.history(limit=50, **filters))


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({"key": STUCK}, "ix_history_service_at (namespace=? AND name=?)"),
        (
            {"key": STUCK, "since": datetime(2026, 11, 28, tzinfo=UTC)},
            "ix_history_service_at (namespace=? AND name=? AND at>?)",
        ),
        # With two filters SQLite would pick (to_state, at) and walk every Service's rows.
        ({"key": STUCK, "state": "Provisioning"}, "ix_history_service_at (namespace=? AND name=?)"),
        (
            {"key": STUCK, "pool": "dklb-stuck", "state": "Ready"},
            "ix_history_service_at (namespace=? AND name=?)",
        ),
        ({"pool": "shared"}, "ix_history_pool_at (pool=?)"),
        ({"pool": "shared", "state": "Ready"}, "ix_history_pool_at (pool=?)"),
        ({"state": "Ready"}, "ix_history_state_at (to_state=?)"),
        ({"since": datetime(2026, 11, 28, tzinfo=UTC)}, "ix_history_at (at>?)"),
        ({}, "ix_history_at"),
    ],
)
def test_history_queries_use_one_index_and_no_sort(scene: Scene, filters: dict[str, Any], index: str) -> None:
    store = open_read_only(str(scene.db))
    try:
        plan = captured_plan(store, **filters)
    finally:
        store.close()
    assert f"USING INDEX {index}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # rows come in order: LIMIT stops early
    assert ";" not in plan, plan  # one step: no second scan


# ---- pools -----------------------------------------------------------------------------------


def test_pools_from_the_database(capsys: pytest.CaptureFixture[str], scene: Scene, db: Path) -> None:
    code, out, _ = run(capsys, db, scene.now, "pools")
    assert code == 0
    body, footer = out.rstrip("\n").rsplit("\n", 1)
    assert "not read from EdgeLB" in footer and "--edgelb-url" in footer
    rows = {r["NAME"]: r for r in parse_table(body, right=("COUNT", "REFS"))}
    assert set(rows) == {"dklb-redis", "dklb-stuck", "shared"}  # Rejected/Paused have no pool
    assert rows["shared"] == {
        "NAME": "shared",
        "APIVERSION": "V2",
        "COUNT": "1",
        "ROLE": "slave_public",
        "PORTS": "0, 8080, 8081",
        "BINDINGS": "shop/web1, shop/web2",
        "CREATED-BY-DKLB": "yes",
        "REFS": "2",
    }
    assert rows["dklb-stuck"]["PORTS"] == "0, 15432" and rows["dklb-stuck"]["BINDINGS"] == STUCK

    code, out, _ = run(capsys, db, scene.now, "pools", "-o", "json")
    docs = {d["name"]: d for d in json.loads(out)}
    assert docs["shared"]["ports"] == [0, 8080, 8081]
    assert docs["shared"]["bindings"] == ["shop/web1", "shop/web2"]
    assert docs["shared"]["source"] == "database" and docs["shared"]["in_edgelb"] is None


def test_pools_from_edgelb(capsys: pytest.CaptureFixture[str], scene: Scene, db: Path) -> None:
    edgelb = clone(scene.edgelb)
    edgelb.seed(
        {
            "name": "foreign",
            "count": 2,
            "haproxy": {
                "stats": {"bindPort": 9091},
                "frontends": [
                    {"name": "x", "bindPort": 80, "protocol": "TCP", "linkBackend": {"defaultBackend": "x"}}
                ],
                "backends": [
                    {
                        "name": "x",
                        "protocol": "TCP",
                        # EdgeLB refuses a backend without a service.
                        "services": [{"endpoint": {"type": "ADDRESS", "address": "10.0.0.9", "port": 8443}}],
                    }
                ],
            },
        }
    )
    code, out, _ = run(capsys, db, scene.now, "pools", edgelb=edgelb)
    assert code == 0
    body, footer = out.rstrip("\n").rsplit("\n", 1)
    assert footer == "(in the database but not in EdgeLB: dklb-stuck)"
    rows = {r["NAME"]: r for r in parse_table(body, right=("COUNT", "REFS"))}
    assert set(rows) == {"dklb-redis", "dklb-stuck", "foreign", "shared"}
    assert rows["foreign"] == {
        "NAME": "foreign",
        "APIVERSION": "V2",
        "COUNT": "2",
        "ROLE": "slave_public",
        "PORTS": "9091, 80",
        "BINDINGS": "-",
        "CREATED-BY-DKLB": "-",
        "REFS": "-",
    }
    shared = edgelb.stored("shared")
    assert shared is not None
    assert rows["shared"]["PORTS"] == ", ".join(str(p) for p in pool_ports(shared))
    assert rows["shared"]["BINDINGS"] == "shop/web1, shop/web2" and rows["shared"]["REFS"] == "2"
    assert rows["dklb-stuck"]["APIVERSION"] == "-" and rows["dklb-stuck"]["BINDINGS"] == STUCK

    code, out, _ = run(capsys, db, scene.now, "pools", "-o", "yaml", edgelb=edgelb)
    docs = {d["name"]: d for d in yaml.safe_load(out)}
    assert docs["foreign"]["bindings"] is None and docs["foreign"]["in_database"] is False
    assert docs["dklb-stuck"]["in_edgelb"] is False and docs["dklb-redis"]["in_edgelb"] is True

    edgelb.fail_next("list_pools", Unavailable("GET /v2/pools: 503 down", status=503))
    code, out, err = run(capsys, db, scene.now, "pools", edgelb=edgelb)
    assert (code, out) == (1, "")
    assert err == "error: cannot list the pools of EdgeLB: GET /v2/pools: 503 down\n"


# ---- retry -----------------------------------------------------------------------------------


def test_retry_wakes_the_binding_now(capsys: pytest.CaptureFixture[str], scene: Scene, db: Path) -> None:
    before = stored_binding(db, STUCK)
    assert before.next_wakeup > scene.now
    code, out, _ = run(capsys, db, scene.now, "retry", STUCK)
    assert code == 0
    after = stored_binding(db, STUCK)
    assert after.next_wakeup == scene.now
    assert (after.state, after.attempts, after.last_error) == (
        before.state,
        before.attempts,
        before.last_error,
    )
    assert out.startswith(f"woke {STUCK}: next wake-up set to now, 2026-11-28 12:08:30Z (was in ")
    assert "state: Provisioning since 2026-11-28 12:00:00Z" in out
    assert 'last error: creating EdgeLB pool "dklb-stuck" failed: boom' in out

    later = scene.now + timedelta(seconds=5)
    code, out, _ = run(capsys, db, later, "retry", STUCK, "-o", "json")
    doc = json.loads(out)
    assert doc["woken"] is True and doc["state"] == "Provisioning"
    assert doc["previous_wakeup"] == tables.iso(scene.now)
    assert doc["next_wakeup"] == tables.iso(later)
    assert doc["last_error"] == before.last_error


def test_retry_refuses_what_only_the_user_can_fix(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path
) -> None:
    before = digest(db)
    code, out, err = run(capsys, db, scene.now, "retry", "default/bad")
    assert (code, out) == (1, "")
    assert err.startswith("error: default/bad is Rejected: a retry cannot help (last error: ")
    assert "The Service must be fixed" in err
    assert 'name: "BAD_NAME" is not a valid edgelb pool name' in err and ANNOTATION in err
    code, out, err = run(capsys, db, scene.now, "retry", "default/paused")
    assert code == 1
    assert err.startswith("error: default/paused is Paused") and PAUSED_ANNOTATION in err
    code, out, err = run(capsys, db, scene.now, "retry", "default/nope")
    assert code == 1 and err.startswith("error: no binding for default/nope (known: ")
    assert digest(db) == before
    assert stored_binding(db, "default/bad").next_wakeup is None


def test_a_retry_is_acted_on_by_the_reconciler(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        world.edgelb.fail_next("create_pool", Unavailable("boom", status=503))
        world.kube.apply(make_service("redis", config=config("dklb-redis", 16379, 6379)))
        for _ in range(5):
            world.step()
            if world.binding("default/redis").attempts:
                break
        waiting = world.binding("default/redis")
        assert waiting.state == "Provisioning" and waiting.last_error
        assert waiting.next_wakeup > world.clock.now
        # Not due: the reconciler leaves it alone ...
        world.reconciler.reconcile("default/redis")
        assert world.binding("default/redis").state == "Provisioning"
        # ... until `dklb retry`, from another process's point of view, says now.
        code, _, _ = run(capsys, world.db, world.clock.now, "retry", "default/redis")
        assert code == 0
        assert [b.key for b in world.store.due(world.clock.now)] == ["default/redis"]
        world.reconciler.reconcile("default/redis")
        assert world.binding("default/redis").state == "Ready"
    finally:
        world.store.close()


# ---- read-only, errors, help -----------------------------------------------------------------


def test_read_only_commands_do_not_touch_the_database(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path
) -> None:
    before = digest(db)
    for argv in READ_ONLY_COMMANDS:
        for output in ("table", "json", "yaml"):
            code, _, _ = run(capsys, db, scene.now, *argv, "-o", output, edgelb=clone(scene.edgelb))
            assert code == 0, argv
    assert digest(db) == before

    store = open_read_only(str(db))
    try:
        with pytest.raises(OperationalError, match="readonly"), store.engine.begin() as conn:
            conn.execute(text("UPDATE bindings SET attempts = 99"))
        assert present(store.get(STUCK)).attempts == scene.bindings[STUCK].attempts
    finally:
        store.close()
    assert digest(db) == before


@pytest.mark.parametrize("argv", [*READ_ONLY_COMMANDS, ["inspect", "--stuck", "--older-than", "1h"]])
def test_json_and_yaml_say_the_same(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path, argv: list[str]
) -> None:
    _, as_json, _ = run(capsys, db, scene.now, *argv, "-o", "json", edgelb=clone(scene.edgelb))
    _, as_yaml, _ = run(capsys, db, scene.now, *argv, "-o", "yaml", edgelb=clone(scene.edgelb))
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


def broken(kind: str, path: Path, good: Path) -> Path:
    if kind == "too new":
        shutil.copyfile(good, path)
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
        conn.close()
    elif kind == "unmigrated":
        sqlite3.connect(path).close()
        path.touch()
    elif kind == "not a database":
        path.write_bytes(b"this is not SQLite" * 100)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist: run `dklb migrate --database {path}` to create it"),
        ("too new", "is at revision ffffffffffff, newer than this dklb (head "),
        ("unmigrated", "has no dklb schema: run `dklb migrate --database {path}`"),
        ("not a database", "{path} is not a usable dklb database (file is not a database)"),
    ],
)
@pytest.mark.parametrize("argv", ALL_COMMANDS)
def test_unusable_database_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], scene: Scene, tmp_path: Path, kind: str, message: str, argv: list[str]
) -> None:
    path = broken(kind, tmp_path / "dklb.db", scene.db)
    before = path.read_bytes() if path.exists() else None
    code, out, err = run(capsys, path, scene.now, *argv)
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message.format(path=path) in err
    assert (path.read_bytes() if path.exists() else None) == before  # never created nor migrated


def test_console_process_prints_errors_not_tracebacks(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    for argv in (["inspect"], ["retry", STUCK]):
        proc = subprocess.run(
            [sys.executable, "-m", "engine.cli", *argv, "--database", str(missing)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert proc.returncode == 1
        assert proc.stdout == ""
        assert proc.stderr.startswith(f"error: database {missing} does not exist")
        assert "Traceback" not in proc.stderr
    assert not missing.exists()


@pytest.mark.parametrize("command", ["inspect", "history", "pools", "retry"])
def test_help_has_examples(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"dklb {command}" in out
    assert "--database" in out and "--now" not in out


def test_database_defaults_to_dklb_database(
    capsys: pytest.CaptureFixture[str], scene: Scene, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DKLB_DATABASE", str(db))
    with mock.patch.object(bindings, "utcnow", return_value=scene.now):
        code = cli.main(["inspect", "--state", "Provisioning"])
    out, _ = capsys.readouterr()
    assert code == 0 and STUCK in out
    monkeypatch.delenv("DKLB_DATABASE")
    parsed = cli.build_parser(["inspect"]).parse_args(["inspect"])
    assert database.resolve(parsed).url in ("dklb.db", "/var/lib/dklb/dklb.db")


# ---- engine.cli.output -----------------------------------------------------------------------------


def test_relative_times_and_timestamps() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert tables.relative(now - timedelta(minutes=3), now) == "3m ago"
    assert tables.relative(now + timedelta(seconds=40), now) == "in 40s"
    assert tables.relative(now - timedelta(hours=2, minutes=5), now) == "2h5m ago"
    assert tables.relative(now + timedelta(milliseconds=300), now) == "now"
    assert tables.relative(None, now) == "-"
    assert tables.timestamp(now) == "2026-11-28 12:00:00Z"
    assert tables.iso(now) == "2026-11-28T12:00:00Z"


def test_table_aligns_wide_characters_and_keeps_cells_on_one_line() -> None:
    text = tables.table(
        ("NAME", "N", "NOTE"),
        [("名前", 7, "two\nlines"), ("b", 12345, None), ("c", 1, "x" * 30)],
        right=(1,),
        limits={2: 10},
    )
    lines = text.splitlines()
    assert lines[0] == "NAME      N  NOTE"
    assert lines[1] == "名前      7  two lines"
    assert lines[2] == "b     12345  -"
    assert tables.width(lines[3]) == tables.width(lines[0]) - 4 + 10
    assert lines[3].endswith(("x" * 9 + "…", "x" * 7 + "..."))
    assert all(not line.endswith(" ") for line in lines)


def test_yaml_keeps_multi_line_text_readable_and_exact() -> None:
    data = {"diff": "--- a\n+++ b\n-x\n+y\n", "at": datetime(2026, 11, 28, tzinfo=UTC)}
    out = tables.dump_yaml(data)
    assert out.startswith("diff: |")
    assert yaml.safe_load(out) == {"diff": data["diff"], "at": "2026-11-28T00:00:00Z"}
    # Trailing spaces cannot be written as a block: quoted instead, never altered.
    odd = {"message": "a \nb"}
    assert yaml.safe_load(tables.dump_yaml(odd)) == odd


@pytest.fixture(autouse=True)
def _no_ambient_edgelb(no_dklb_environment: None) -> None:
    """An operator's shell may export DKLB_EDGELB_URL: these tests choose their EdgeLB themselves."""
