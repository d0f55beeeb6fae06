"""The benchmark's report (``bench.report``): issue 16's targets, the floor ratios and the markdown,
from fixed results dicts (no servers); ``bench.measure.quantiles`` too."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bench import measure, report


def run(
    mode: str,
    n: int,
    *,
    ready: float,
    cpu: float,
    rss: float = 100.0,
    pools: int | None = None,
    p50: float = 1.0,
    idle: dict[str, Any] | None = None,
    restart: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": mode,
        "services": n,
        "shared_fraction": 0.4,
        "pools": pools if pools is not None else n,
        "burst": {
            "ready_seconds": ready,
            "cpu_seconds": cpu,
            "peak_rss_mb": rss,
            "latency_seconds": {"p50": p50, "p90": p50 * 2, "p99": p50 * 3},
            "edgelb_requests": {"GET": 10, "POST": 5, "PUT": 0, "DELETE": 0},
            "latency_quantiles": [0.5, 1.0, 2.0],
        },
    }
    if idle is not None:
        out["idle"] = {"resync_seconds": 30.0, "peak_rss_mb": rss, "per_resync": idle}
    if restart is not None:
        out["restart"] = {"peak_rss_mb": rss, **restart}
    return out


def full_results() -> dict[str, Any]:
    idle = {"edgelb_reads": 321.0, "cpu_seconds": 0.5, "edgelb_writes": 0, "kube_writes": 0}
    restart = {"verified_seconds": 4.0, "edgelb_writes": 0, "kube_writes": 0}
    return {
        "options": {"dklb_metadata_resync": "5m"},
        "suites": [
            run("dklb", 1000, ready=12.0, cpu=7.0, p50=2.0),
            run("baseline", 1000, ready=300.0, cpu=13.0),
            run("dklb", 5000, ready=55.0, cpu=30.0, rss=140.0, pools=3200, idle=idle, restart=restart),
            run("dklb", 20000, ready=200.0, cpu=120.0, rss=280.0, pools=5600, idle=idle, restart=restart),
        ],
        "floors": [run("floor", 1000, ready=10.0, cpu=2.0, p50=1.0)],
    }


def by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in report.targets(results)}


def test_every_target_of_the_issue_is_met_by_figures_that_meet_them() -> None:
    targets = by_name(full_results())
    assert {name: (t["value"], t["met"]) for name, t in targets.items()} == {
        "idle, 5,000 Ready: EdgeLB reads per resync": (321.0, True),
        "idle, 5,000 Ready: controller CPU per resync (s)": (0.5, True),
        "restart, 5,000 Ready: re-verified (s)": (4.0, True),
        "restart, 5,000 Ready: EdgeLB + Kubernetes writes": (0, True),
        "burst, 1,000: all Ready, as a ratio to the floor": (1.2, True),
        "burst, 1,000: controller CPU per Service (ms)": (7.0, True),
        "burst, 5,000: all Ready (s)": (55.0, True),
        "peak RSS at 5,000 (MB)": (140.0, True),
        "peak RSS at 20,000 (MB)": (280.0, True),
        "speed-up over the Go algorithm (1,000), all Ready": (25.0, True),
    }
    # 3,200 pools, their metadata spread over 5 minutes: 320 due per 30 s resync, plus the list.
    assert (
        targets["idle, 5,000 Ready: EdgeLB reads per resync"]["goal"]
        == "<= 321 (1 list + 320 of 3,200 pools' metadata)"
    )


@pytest.mark.parametrize(
    ("path", "value", "name", "met"),
    [
        (
            "suites:2:idle:per_resync:edgelb_reads",
            8872.0,
            "idle, 5,000 Ready: EdgeLB reads per resync",
            False,
        ),
        (
            "suites:2:idle:per_resync:cpu_seconds",
            25.6,
            "idle, 5,000 Ready: controller CPU per resync (s)",
            False,
        ),
        ("suites:2:restart:verified_seconds", 30.6, "restart, 5,000 Ready: re-verified (s)", False),
        ("suites:2:restart:kube_writes", 1, "restart, 5,000 Ready: EdgeLB + Kubernetes writes", False),
        ("suites:0:burst:ready_seconds", 15.0, "burst, 1,000: all Ready, as a ratio to the floor", True),
        ("suites:0:burst:ready_seconds", 15.1, "burst, 1,000: all Ready, as a ratio to the floor", False),
        ("suites:0:burst:cpu_seconds", 24.0, "burst, 1,000: controller CPU per Service (ms)", False),
        ("suites:2:burst:ready_seconds", 217.0, "burst, 5,000: all Ready (s)", False),
        ("suites:2:burst:peak_rss_mb", 189.2, "peak RSS at 5,000 (MB)", False),
        ("suites:3:idle:peak_rss_mb", 301.0, "peak RSS at 20,000 (MB)", False),
        ("suites:1:burst:ready_seconds", 200.0, "speed-up over the Go algorithm (1,000), all Ready", False),
    ],
)
def test_a_figure_past_its_goal_is_not_met(path: str, value: float, name: str, met: bool) -> None:
    results = full_results()
    *parents, last = path.split(":")
    node: Any = results
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    assert by_name(results)[name]["met"] is met


def test_a_run_without_the_sizes_reports_every_target_unmeasured() -> None:
    targets = report.targets({"suites": [], "floors": []})
    assert targets and all(t["value"] is None and not t["met"] for t in targets)


def test_a_quick_run_judges_at_its_own_sizes() -> None:
    results = copy.deepcopy(full_results())
    results["target_sizes"] = {"burst": 5000, "idle": 1000, "large": 5000}
    names = set(by_name(results))
    assert "burst, 5,000: controller CPU per Service (ms)" in names and "peak RSS at 1,000 (MB)" in names


@pytest.mark.parametrize(
    ("pools", "resync", "metadata", "due"),
    [(3200, 30, 300, 320.0), (5600, 30, 300, 560.0), (31, 5, 300, 0.5), (10, 60, 60, 10.0)],
)
def test_pools_due_per_resync(pools: int, resync: float, metadata: float, due: float) -> None:
    assert report.pools_due({"pools": pools}, resync=resync, metadata_resync=metadata) == due


def test_floor_ratios_divide_dklb_by_the_floor_at_each_size_both_ran() -> None:
    (row,) = report.floor_ratios(full_results())
    assert row == {
        "services": 1000,
        "ratios": {
            "all Ready": 1.2,
            "time to Ready p50": 2.0,
            "time to Ready p90": 2.0,
            "time to Ready p99": 2.0,
            "controller CPU": 3.5,
        },
    }


def test_markdown_has_the_floor_column_the_ratios_the_plots_and_the_targets() -> None:
    results = full_results()
    results["targets"] = report.targets(results)
    results["plots"] = [{"file": "scaling.png", "title": "scaling"}]
    text = report.markdown(results)
    assert "| phase | figure | dklb | floor | Go dklb algorithm |" in text
    assert "| burst | all Ready (s) | 12 | 10 | 300 |" in text
    assert "| 1,000 | 1.2 | 2 | 2 | 2 | 3.5 |" in text
    assert "![scaling](scaling.png)" in text
    assert "| peak RSS at 20,000 (MB) | 280 | <= 300 | yes |" in text


@pytest.mark.parametrize(
    ("values", "points", "expected"),
    [
        ([3.0, 1.0, 2.0], 3, [1.0, 2.0, 3.0]),
        ([5.0], 2, [5.0, 5.0]),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 2, [1.0, 5.0]),
        (list(range(101)), 11, [float(x) for x in range(0, 101, 10)]),
        ([0.12345], 2, [0.123, 0.123]),
        ([], 5, []),
    ],
)
def test_quantiles(values: list[float], points: int, expected: list[float]) -> None:
    assert measure.quantiles(values, points) == expected


@pytest.mark.parametrize(
    ("argv", "compared", "floors", "large", "stores", "targets"),
    [
        ([], [100, 1000], [1000, 5000], 20000, [1000], {"burst": 1000, "idle": 5000, "large": 20000}),
        (["--quick"], [40], [40], 80, [40], {"burst": 40, "idle": 40, "large": 80}),
        (
            ["--large-services", "0", "--floor-sizes", "", "--store-sizes", ""],
            [100, 1000],
            [],
            0,
            [],
            {"burst": 1000, "idle": 5000, "large": 0},
        ),
    ],
)
def test_the_runs_plan(
    argv: list[str],
    compared: list[int],
    floors: list[int],
    large: int,
    stores: list[int],
    targets: dict[str, int],
) -> None:
    from bench.__main__ import parse, plan

    options, sizes = plan(parse(argv))
    assert (sizes["compared"], sizes["floor"], sizes["large"], sizes["stores"], sizes["targets"]) == (
        compared,
        floors,
        large,
        stores,
        targets,
    )
    assert options.dklb_metadata_resync == "5m"


def store_result(tps: float, raw: float) -> dict[str, Any]:
    return {"store_tps": tps, "raw_tps": raw, "ratio": tps / raw}


def test_markdown_puts_each_stores_figures_side_by_side() -> None:
    results = full_results()
    on_postgresql = run("dklb", 1000, ready=15.0, cpu=9.0, p50=3.0)
    on_postgresql["burst"]["db_server_cpu_seconds"] = 4.5
    on_postgresql["restart"] = {"verified_seconds": 6.0, "edgelb_writes": 0, "kube_writes": 0}
    results["postgresql"] = [on_postgresql]
    results["store"] = store_result(1500.0, 30000.0)
    results["store_postgresql"] = store_result(600.0, 2400.0)
    text = report.markdown(results)
    assert "| phase | figure | SQLite store | PostgreSQL store |" in text
    assert "| burst | all Ready (s) | 12 | 15 |" in text
    assert "| burst | time to Ready p50 / p90 / p99 (s) | 2 / 4 / 6 | 3 / 6 / 9 |" in text
    assert "| burst | database server CPU (s) | - | 4.5 |" in text  # SQLite's is dklb's own
    assert "| restart | re-verified after SIGKILL (s) | - | 6 |" in text  # SQLite's 1,000 had no restart here
    assert "**Store (SQLite)**: 1,500 transitions" in text and "raw sqlite3" in text
    assert "**Store (PostgreSQL)**: 600 transitions" in text and "raw psycopg 3" in text
    assert "(ratio 0.25)" in text
    # The PostgreSQL run is not one of the SQLite suites the targets are judged on.
    assert report.targets(results) == report.targets(full_results() | {"store": results["store"]})


def test_markdown_without_postgresql_has_no_stores_table() -> None:
    text = report.markdown(full_results())
    assert "PostgreSQL" not in text


def test_the_run_measures_each_store_side_by_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The order of the steps: PostgreSQL's run at a size right after SQLite's; a size with no
    SQLite suite gets one (burst and restart, as PostgreSQL's); what was measured is in latest.md."""
    import bench.__main__ as main
    from bench import hostile_bench, plots, scenarios, store_bench

    calls: list[tuple[Any, ...]] = []

    def suite(mode: str, n: int, work: Path, options: Any, **kw: Any) -> dict[str, Any]:
        store = kw.get("store", "sqlite")
        calls.append((mode, n, store, kw.get("churn", True), kw.get("idle_phase", True)))
        figures = run(mode, n, ready=float(n), cpu=1.0)
        return figures | ({"store": store} if mode == "dklb" else {})

    monkeypatch.setattr(scenarios, "suite", suite)
    monkeypatch.setattr(hostile_bench, "run", lambda **_k: None)
    monkeypatch.setattr(store_bench, "run", lambda *_a, **_k: store_result(1000.0, 2000.0))
    monkeypatch.setattr(store_bench, "run_postgresql", lambda **_k: store_result(500.0, 1000.0))
    monkeypatch.setattr(plots, "draw", lambda *_a, **_k: [])
    argv = ["--sizes", "100", "--store-sizes", "100,300", "--floor-sizes", "", "--idle-services", "0"]
    argv += [
        "--large-services",
        "0",
        "--shared-services",
        "0",
        "--out",
        str(tmp_path),
        "--work",
        str(tmp_path),
    ]
    assert main.main(argv) == 0
    assert calls == [
        ("dklb", 100, "sqlite", True, True),
        ("dklb", 100, "postgresql", False, False),
        ("baseline", 100, "sqlite", True, True),
        ("dklb", 300, "sqlite", False, False),
        ("dklb", 300, "postgresql", False, False),
    ]
    text = (tmp_path / "latest.md").read_text()
    assert "**dklb on each store, 100 Services**" in text and "**dklb on each store, 300 Services**" in text
    assert "| burst | all Ready (s) | 300 | 300 |" in text
    assert "**Store (PostgreSQL)**: 500 transitions" in text
