"""The benchmark's results as one JSON document and one markdown table, with the targets checked.

Where it sits: ``bench.__main__`` collects the dicts ``bench.scenarios`` and ``bench.store_bench``
return, and hands them here. ``targets`` states each of the issue's targets with the measured
value and whether it was met; ``markdown`` renders what the README quotes.
"""

from __future__ import annotations

from typing import Any

from bench import hostile_bench


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def _run(results: dict[str, Any], kind: str, mode: str, n: int) -> dict[str, Any] | None:
    return next((r for r in results.get(kind, []) if r["mode"] == mode and r["services"] == n), None)


GOALS = {"<=": lambda v, g: v <= g, ">=": lambda v, g: v >= g, "==": lambda v, g: v == g}


def _suites(results: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [r for r in results.get("suites", []) if r["mode"] == mode]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it was met."""
    out: list[dict[str, Any]] = []

    def target(name: str, value: float | None, op: str, goal: float) -> None:
        met = value is not None and GOALS[op](value, goal)
        out.append({"target": name, "value": value, "goal": f"{op} {goal:g}", "met": met})

    # Speed and restart are judged at the largest size both controllers ran.
    both = {r["services"] for r in _suites(results, "baseline")}
    compared = max((r["services"] for r in _suites(results, "dklb") if r["services"] in both), default=None)
    if compared is not None:
        ours = _run(results, "suites", "dklb", compared) or {}
        base = _run(results, "suites", "baseline", compared) or {}
        ready = ours["burst"]["ready_seconds"]
        target(f"{compared:,} Services all Ready (s)", ready, "<=", 30)
        speedup = ratio(base["burst"]["ready_seconds"], ready)
        target(f"{compared:,} Services: baseline time / dklb time", speedup, ">=", 5)
        restart = ours["restart"]
        target(f"restart: {compared:,} bindings re-verified (s)", restart["verified_seconds"], "<=", 15)
        writes = restart["edgelb_writes"] + restart["kube_writes"]
        target("restart: writes while re-verifying", writes, "==", 0)
    shared = {r["mode"]: r for r in results.get("shared", [])}
    if {"dklb", "baseline"} <= set(shared):
        share = ratio(shared["dklb"]["edgelb_writes"], shared["baseline"]["edgelb_writes"])
        target("shared pools: dklb EdgeLB writes / baseline's", share, "<=", 0.3)
    largest = max(_suites(results, "dklb"), key=lambda r: r["services"], default=None)
    if largest is not None:
        n, per = largest["services"], largest["idle"]["per_resync"]
        target(f"idle at {n:,}: EdgeLB writes per resync", per["edgelb_writes"], "==", 0)
        target(f"idle at {n:,}: Kubernetes writes per resync", per["kube_writes"], "==", 0)
        rss = max(largest[phase]["peak_rss_mb"] for phase in ("burst", "idle"))
        target(f"peak RSS at {n:,} bindings (MB)", rss, "<=", 200)
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


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    sizes = sorted({r["services"] for r in results.get("suites", [])})
    for n in sizes:
        ours, base = _run(results, "suites", "dklb", n), _run(results, "suites", "baseline", n)
        lines += [f"**{n:,} Services** (60% dedicated pools, 40% in shared pools of 10)", ""]
        lines += ["| phase | figure | dklb | Go dklb algorithm |", "|---|---|---|---|"]
        for phase, label, keys in ROWS:
            a = ours.get(phase) if ours else None
            b = base.get(phase) if base else None
            if a is None and b is None:
                continue
            lines.append(f"| {phase} | {label} | {_cell(a, keys)} | {_cell(b, keys)} |")
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
            cells = " | ".join(_cell(shared.get(mode), keys) for mode in ("dklb", "baseline"))
            lines.append(f"| {label} | {cells} |")
        lines.append("")
    store = results.get("store")
    if store:
        lines += [
            f"**Store**: {_fmt(store['store_tps'])} transitions persisted per second through dklb's store, "
            f"beside {_fmt(store['raw_tps'])} for a raw sqlite3 insert+update loop on the same disk "
            f"(ratio {_fmt(store['ratio'])}).",
            "",
        ]
    if results.get("hostile"):
        lines += [hostile_bench.markdown(results["hostile"]), ""]
    lines += ["| target | measured | goal | met |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {t['goal']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"
