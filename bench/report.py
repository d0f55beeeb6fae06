"""The benchmark's results as one JSON document and one markdown table, with the targets checked.

Where it sits: ``bench.__main__`` collects the dicts ``bench.scenarios`` and ``bench.store_bench``
return (dklb on the PostgreSQL store in ``results["postgresql"]``, beside the SQLite runs in
``results["suites"]``), and hands them here. ``targets`` states each of issue 16's targets (at
``TARGET_SIZES``) with the measured value and whether it was met; ``floor_ratios`` divides dklb's burst by the
floor's (``bench.floor``); ``markdown`` renders what the README quotes, with the plots
``bench.plots`` drew (``results["plots"]``, paths relative to latest.md).
"""

from __future__ import annotations

from typing import Any

from bench import hostile_bench
from engine.model.durations import parse_duration


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def _run(results: dict[str, Any], kind: str, mode: str, n: int) -> dict[str, Any] | None:
    return next((r for r in results.get(kind, []) if r["mode"] == mode and r["services"] == n), None)


GOALS = {"<=": lambda v, g: v <= g, ">=": lambda v, g: v >= g, "==": lambda v, g: v == g}

# The sizes the targets are stated at; a smoke run (``--quick``) names its own.
TARGET_SIZES = {"burst": 1000, "idle": 5000, "large": 20000}


def _suites(results: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [r for r in results.get("suites", []) if r["mode"] == mode]


def _get(run: dict[str, Any] | None, path: str) -> Any:
    """``run["burst"]["latency_seconds"]["p50"]`` as ``_get(run, "burst:latency_seconds:p50")``."""
    value: Any = run
    for part in path.split(":"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def cpu_ms_per_service(run: dict[str, Any] | None) -> float | None:
    cpu = _get(run, "burst:cpu_seconds")
    return None if run is None or cpu is None else round(cpu * 1000 / run["services"], 2)


def pools_due(run: dict[str, Any], *, resync: float, metadata_resync: float) -> float:
    """Pools whose metadata falls due in one resync period, the reads spread over the metadata period."""
    return round(run["pools"] * resync / metadata_resync, 1)


FLOOR_RATIOS = (
    ("all Ready", "burst:ready_seconds"),
    ("time to Ready p50", "burst:latency_seconds:p50"),
    ("time to Ready p90", "burst:latency_seconds:p90"),
    ("time to Ready p99", "burst:latency_seconds:p99"),
    ("controller CPU", "burst:cpu_seconds"),
)


def floor_ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """dklb's burst figures divided by the floor's, at every size both ran."""
    out = []
    for floor in sorted(results.get("floors", []), key=lambda r: r["services"]):
        ours = _run(results, "suites", "dklb", floor["services"])
        if ours is None:
            continue
        ratios = {label: ratio(_get(ours, path), _get(floor, path)) for label, path in FLOOR_RATIOS}
        out.append({"services": floor["services"], "ratios": ratios})
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it was met."""
    out: list[dict[str, Any]] = []
    sizes = {**TARGET_SIZES, **results.get("target_sizes", {})}
    options = results.get("options") or {}

    def target(name: str, value: float | None, op: str, goal: float, note: str = "") -> None:
        met = value is not None and GOALS[op](value, goal)
        out.append({"target": name, "value": value, "goal": f"{op} {goal:g}{note}", "met": met})

    idle_n, burst_n, large_n = sizes["idle"], sizes["burst"], sizes["large"]
    idle = _run(results, "suites", "dklb", idle_n)
    if idle is not None and "idle" in idle:
        resync = float(idle["idle"]["resync_seconds"])
        metadata = parse_duration(str(options.get("dklb_metadata_resync") or "5m"))
        due = pools_due(idle, resync=resync, metadata_resync=metadata)
        per = idle["idle"]["per_resync"]
        target(
            f"idle, {idle_n:,} Ready: EdgeLB reads per resync",
            per["edgelb_reads"],
            "<=",
            1 + due,
            f" (1 list + {due:g} of {idle['pools']:,} pools' metadata)",
        )
        target(f"idle, {idle_n:,} Ready: controller CPU per resync (s)", per["cpu_seconds"], "<=", 1)
    if idle is not None and "restart" in idle:
        restart = idle["restart"]
        target(f"restart, {idle_n:,} Ready: re-verified (s)", restart["verified_seconds"], "<=", 5)
        writes = restart["edgelb_writes"] + restart["kube_writes"]
        target(f"restart, {idle_n:,} Ready: EdgeLB + Kubernetes writes", writes, "==", 0)
    ours = _run(results, "suites", "dklb", burst_n)
    floor = _run(results, "floors", "floor", burst_n)
    target(
        f"burst, {burst_n:,}: all Ready, as a ratio to the floor",
        ratio(_get(ours, "burst:ready_seconds"), _get(floor, "burst:ready_seconds")),
        "<=",
        1.5,
    )
    target(f"burst, {burst_n:,}: controller CPU per Service (ms)", cpu_ms_per_service(ours), "<=", 8)
    target(f"burst, {idle_n:,}: all Ready (s)", _get(idle, "burst:ready_seconds"), "<=", 60)
    for n, goal in ((idle_n, 150), (large_n, 300)):
        run = _run(results, "suites", "dklb", n)
        phases = [run[p]["peak_rss_mb"] for p in ("burst", "restart", "idle") if run and p in run]
        target(f"peak RSS at {n:,} (MB)", max(phases, default=None), "<=", goal)
    base = _run(results, "suites", "baseline", burst_n)
    speedup = ratio(_get(base, "burst:ready_seconds"), _get(ours, "burst:ready_seconds"))
    target(f"speed-up over the Go algorithm ({burst_n:,}), all Ready", speedup, ">=", 20)
    hostile = results.get("hostile")
    if hostile:
        big = [r for r in hostile["shapes"] if r["bytes"] >= 256 * 1024 - 1024]
        worst = max((max(r["parse_ms"], r["webhook_ms"]) for r in big), default=None)
        target("256 KiB hostile annotation refused: CPU, worst shape (ms)", worst, "<=", hostile["budget_ms"])
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:,}" if isinstance(value, int) else str(value)


ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("burst", "all Ready (s)", ("ready_seconds",)),
    ("burst", "time to Ready p50 / p90 / p99 (s)", ("latency_seconds",)),
    ("burst", "EdgeLB GET / POST / PUT / DELETE", ("edgelb_requests",)),
    ("burst", "Kubernetes writes", ("kube_writes",)),
    ("burst", "database transactions", ("db_transactions",)),
    ("burst", "controller CPU (s)", ("cpu_seconds",)),
    ("burst", "controller CPU per Service (ms)", ("cpu_ms_per_service",)),
    ("burst", "peak RSS (MB)", ("peak_rss_mb",)),
    ("restart", "re-verified after SIGKILL (s)", ("verified_seconds",)),
    ("restart", "EdgeLB / Kubernetes writes", ("edgelb_writes", "kube_writes")),
    ("churn", "converged (s)", ("seconds",)),
    ("churn", "change visible p50 / p90 / p99 (s)", ("latency_seconds",)),
    ("churn", "EdgeLB GET / POST / PUT / DELETE", ("edgelb_requests",)),
    ("churn", "Kubernetes writes", ("kube_writes",)),
    ("idle", "per resync: EdgeLB writes / reads", ("per_resync:edgelb_writes", "per_resync:edgelb_reads")),
    ("idle", "per resync: Kubernetes writes", ("per_resync:kube_writes",)),
    ("idle", "per resync: CPU (s)", ("per_resync:cpu_seconds",)),
]


def _cell(phase: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    if phase is None:
        return "-"
    parts = []
    for key in keys:
        value: Any = phase
        for part in key.split(":"):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, dict):
            parts.append(" / ".join(_fmt(v) for v in value.values()))
        else:
            parts.append(_fmt(value))
    return " / ".join(parts)


def _mix(run: dict[str, Any]) -> str:
    shared = round(100 * float(run.get("shared_fraction", 0.4)))
    pools = f", {run['pools']:,} pools" if "pools" in run else ""
    return f"{100 - shared}% dedicated pools, {shared}% in shared pools of 10{pools}"


STORE_ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    *[row for row in ROWS if row[0] == "burst"],
    # SQLite's work is in dklb's own CPU; PostgreSQL's is also in its server's processes.
    ("burst", "database server CPU (s)", ("db_server_cpu_seconds",)),
    *[row for row in ROWS if row[0] == "restart"],
]


def stores_markdown(results: dict[str, Any]) -> list[str]:
    """Issue 17's figures: the store benchmark on each store, and dklb's burst on each store side
    by side (the SQLite run: the dklb suite of the same run at that size)."""
    lines: list[str] = []
    for key, raw in (("store", "sqlite3"), ("store_postgresql", "psycopg 3")):
        store = results.get(key)
        if not store:
            continue
        where = "on the same disk" if key == "store" else "on the same PostgreSQL server"
        lines += [
            f"**Store ({'SQLite' if key == 'store' else 'PostgreSQL'})**: {_fmt(store['store_tps'])} "
            f"transitions persisted per second through dklb's store, beside {_fmt(store['raw_tps'])} "
            f"for a raw {raw} insert+update loop {where} (ratio {_fmt(store['ratio'])}).",
            "",
        ]
    for pg in sorted(results.get("postgresql", []), key=lambda r: r["services"]):
        n = pg["services"]
        runs = [_run(results, "suites", "dklb", n), pg]
        lines += [
            f"**dklb on each store, {n:,} Services** ({_mix(pg)}; PostgreSQL: a local server "
            "on loopback, fsync off, as the SQLite file is on /dev/shm)",
            "",
            "| phase | figure | SQLite store | PostgreSQL store |",
            "|---|---|---|---|",
        ]
        for phase, label, keys in STORE_ROWS:
            cells = [r.get(phase) if r else None for r in runs]
            lines.append(f"| {phase} | {label} | {' | '.join(_cell(c, keys) for c in cells)} |")
        lines.append("")
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    sizes = sorted({r["services"] for r in results.get("suites", [])})
    with_floor = bool(results.get("floors"))
    for n in sizes:
        ours, base = _run(results, "suites", "dklb", n), _run(results, "suites", "baseline", n)
        floor = _run(results, "floors", "floor", n)
        runs = [ours, floor, base] if with_floor else [ours, base]
        heads = ["dklb", "floor", "Go dklb algorithm"] if with_floor else ["dklb", "Go dklb algorithm"]
        some = next(r for r in runs if r is not None)
        lines += [f"**{n:,} Services** ({_mix(some)})", ""]
        lines += [f"| phase | figure | {' | '.join(heads)} |", "|---|---|" + "---|" * len(heads)]
        for phase, label, keys in ROWS:
            cells = [r.get(phase) if r else None for r in runs]
            if all(c is None for c in cells):
                continue
            lines.append(f"| {phase} | {label} | {' | '.join(_cell(c, keys) for c in cells)} |")
        lines.append("")
    ratios = floor_ratios(results)
    if ratios:
        lines += [
            "**dklb / floor** (the floor: `bench.floor`, the same burst's requests made with no logic; "
            "1 = as fast or as cheap as the requests alone)",
            "",
            "| Services | " + " | ".join(label for label, _ in FLOOR_RATIOS) + " |",
            "|---|" + "---|" * len(FLOOR_RATIOS),
        ]
        for ratio_row in ratios:
            values = " | ".join(_fmt(v) for v in ratio_row["ratios"].values())
            lines.append(f"| {ratio_row['services']:,} | {values} |")
        lines.append("")
    shared = {r["mode"]: r for r in results.get("shared", [])}
    if shared:
        some = next(iter(shared.values()))
        lines += [f"**Shared pools**: {some['services']} Services joining {some['pools']} pools at once", ""]
        lines += ["| figure | dklb | Go dklb algorithm |", "|---|---|---|"]
        for label, keys in (
            ("EdgeLB GET / POST / PUT / DELETE", ("edgelb_requests",)),
            ("EdgeLB writes", ("edgelb_writes",)),
            ("until EdgeLB holds every frontend (s)", ("seconds",)),
        ):
            both = " | ".join(_cell(shared.get(mode), keys) for mode in ("dklb", "baseline"))
            lines.append(f"| {label} | {both} |")
        lines.append("")
    lines += stores_markdown(results)
    if results.get("hostile"):
        lines += [hostile_bench.markdown(results["hostile"]), ""]
    for plot in results.get("plots", []):
        lines += [f"![{plot['title']}]({plot['file']})", ""]
    lines += ["| target | measured | goal | met |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {t['goal']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"
