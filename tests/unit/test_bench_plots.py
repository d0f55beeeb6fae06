"""The benchmark's pictures (``bench.plots``): the series drawn, from a small fixed results dict, and
the PNG files written (checked by their signature and header, and read back by matplotlib)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from bench import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(mode: str, n: int, quantiles: list[float], cpu: float, *, idle: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": mode,
        "services": n,
        "burst": {
            "latency_quantiles": quantiles,
            "cpu_seconds": cpu,
            "edgelb_requests": {"GET": n * 2},
            "peak_rss_mb": 50.0 + n / 100,
        },
    }
    if idle:
        out["idle"] = {"per_resync": {"cpu_seconds": cpu / 100, "edgelb_reads": n / 10}}
    return out


RESULTS: dict[str, Any] = {
    "suites": [
        run("dklb", 1000, [1.0, 2.0, 3.0], 8.0, idle=True),
        run("baseline", 1000, [10.0, 200.0, 300.0], 13.0),
        run("dklb", 5000, [1.0, 20.0, 50.0], 40.0, idle=True),
        run("dklb", 20000, [1.0, 90.0, 200.0], 160.0, idle=True),
        run("dklb", 100, [], 1.0),  # no distribution: no CDF line
    ],
    "floors": [run("floor", 1000, [0.5, 1.0, 2.0], 3.0), run("floor", 5000, [0.5, 5.0, 9.0], 15.0)],
}


def test_cdf_series_one_line_per_controller_at_the_size() -> None:
    assert plots.cdf_series(RESULTS, 1000) == {
        "dklb": ([1.0, 2.0, 3.0], [0.0, 0.5, 1.0]),
        "baseline": ([10.0, 200.0, 300.0], [0.0, 0.5, 1.0]),
        "floor": ([0.5, 1.0, 2.0], [0.0, 0.5, 1.0]),
    }
    assert plots.cdf_series(RESULTS, 100) == {}


@pytest.mark.parametrize(
    ("panel", "expected"),
    [
        (
            "burst: controller CPU (s)",
            {
                "dklb": ([100.0, 1000.0, 5000.0, 20000.0], [1.0, 8.0, 40.0, 160.0]),
                "floor": ([1000.0, 5000.0], [3.0, 15.0]),
            },
        ),
        ("idle: EdgeLB reads per resync", {"dklb": ([1000.0, 5000.0, 20000.0], [100.0, 500.0, 2000.0])}),
        ("peak RSS (MB)", {"dklb": ([100.0, 1000.0, 5000.0, 20000.0], [51.0, 60.0, 100.0, 250.0])}),
    ],
)
def test_scaling_series(panel: str, expected: dict[str, Any]) -> None:
    series = plots.scaling_series(RESULTS)[panel]
    assert {mode: series[mode] for mode in expected} == expected


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_draw_writes_valid_pngs_and_names_them(tmp_path: Path) -> None:
    drawn = plots.draw(RESULTS, tmp_path, cdf_size=1000)
    assert [d["file"] for d in drawn] == ["time-to-ready.png", "scaling.png"]
    for d in drawn:
        width, height = _png_size(tmp_path / d["file"])
        assert width >= 400 and height >= 300
        pixels = matplotlib.image.imread(tmp_path / d["file"])
        assert pixels.shape[:2] == (height, width)
        assert pixels.std() > 0  # something drawn, not a blank canvas


def test_draw_without_data_writes_nothing(tmp_path: Path) -> None:
    assert plots.draw({"suites": [], "floors": []}, tmp_path) == []
    assert list(tmp_path.iterdir()) == []
