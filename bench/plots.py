"""The benchmark's pictures: PNG files beside latest.md, drawn from the results dict alone.

Where it sits: ``bench.__main__`` calls ``draw(results, out)`` after every size has run (and again
after each save, so a run cut short still has pictures of what it measured); ``bench.report``
links the files it returns, by path relative to latest.md. matplotlib with the Agg backend (no
display). Two pictures:

- ``time-to-ready.png``: the burst's time-to-Ready distribution (CDF, from each run's
  ``latency_quantiles``) for dklb, the floor and the Go algorithm at one size (1,000 by default);
- ``scaling.png``: dklb's burst CPU, EdgeLB reads and peak RSS against the number of Services
  (and idle CPU / reads per resync), with the floor where it was measured.

The figures come from the pure ``cdf_series`` and ``scaling_series``, which the tests drive with
fixed dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a benchmark machine

import matplotlib.pyplot as plt  # the backend must be chosen first
from matplotlib import ticker

LABELS = {"dklb": "dklb", "floor": "floor (requests alone)", "baseline": "Go dklb algorithm"}
COLORS = {"dklb": "tab:blue", "floor": "tab:green", "baseline": "tab:red"}
Series = dict[str, tuple[list[float], list[float]]]


def _runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [*results.get("suites", []), *results.get("floors", [])]


def cdf_series(results: dict[str, Any], n: int) -> Series:
    """mode -> (seconds, fraction of Services Ready by then) for every run at ``n`` Services."""
    out: Series = {}
    for run in _runs(results):
        points = (run.get("burst") or {}).get("latency_quantiles") or []
        if run["services"] == n and len(points) >= 2:
            fractions = [i / (len(points) - 1) for i in range(len(points))]
            out[run["mode"]] = (list(points), fractions)
    return out


# (panel title, what is plotted, path in a run's dict)
SCALING = (
    ("burst: controller CPU (s)", "burst", "burst:cpu_seconds"),
    ("idle: controller CPU per resync (s)", "idle", "idle:per_resync:cpu_seconds"),
    ("burst: EdgeLB reads", "burst", "burst:edgelb_requests:GET"),
    ("idle: EdgeLB reads per resync", "idle", "idle:per_resync:edgelb_reads"),
    ("peak RSS (MB)", "burst", "burst:peak_rss_mb"),
)


def _get(run: dict[str, Any], path: str) -> Any:
    value: Any = run
    for part in path.split(":"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def scaling_series(results: dict[str, Any]) -> dict[str, Series]:
    """panel title -> mode -> (sizes, values), dklb and the floor only, sorted by size."""
    out: dict[str, Series] = {}
    for title, _phase, path in SCALING:
        series: Series = {}
        for mode in ("dklb", "floor"):
            points = sorted(
                (run["services"], float(v))
                for run in _runs(results)
                if run["mode"] == mode and (v := _get(run, path)) is not None
            )
            if points:
                series[mode] = ([float(n) for n, _ in points], [v for _, v in points])
        out[title] = series
    return out


def draw(results: dict[str, Any], out: Path, *, cdf_size: int = 1000) -> list[dict[str, str]]:
    """Write the PNGs into ``out``; returns ``[{"file", "title"}]`` for those there was data for."""
    out.mkdir(parents=True, exist_ok=True)
    drawn: list[dict[str, str]] = []
    cdf = cdf_series(results, cdf_size)
    if cdf:
        fig, ax = plt.subplots(figsize=(8, 5))
        for mode, (seconds, fractions) in cdf.items():
            ax.step(seconds, fractions, where="post", label=LABELS.get(mode, mode), color=COLORS.get(mode))
        # Log seconds: the floor's few seconds and the Go algorithm's minutes on one axis.
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlabel("seconds from the Service's creation to its address in status")
        ax.set_ylabel("fraction of Services Ready")
        title = f"Burst of {cdf_size:,} Services: time to Ready"
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
        _save(fig, out / "time-to-ready.png")
        drawn.append({"file": "time-to-ready.png", "title": title})
    panels = {t: s for t, s in scaling_series(results).items() if s}
    if any(len(xs) >= 1 for s in panels.values() for xs, _ in s.values()):
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
        for ax, (panel, series) in zip(axes[0], panels.items(), strict=True):
            for mode, (sizes, values) in series.items():
                ax.plot(sizes, values, marker="o", label=LABELS.get(mode, mode), color=COLORS.get(mode))
            ax.set_xscale("log")
            sizes_drawn = sorted({x for xs, _ in series.values() for x in xs})
            ax.set_xticks(sizes_drawn, [f"{x:,.0f}" for x in sizes_drawn])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            ax.set_ylim(bottom=0)
            ax.set_xlabel("Services")
            ax.set_title(panel, fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        title = "dklb (and the floor) against the number of Services"
        fig.suptitle(title)
        _save(fig, out / "scaling.png")
        drawn.append({"file": "scaling.png", "title": title})
    return drawn


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
