"""The controller's wheel carries the controller alone, and runs without the local stand-ins.

The wheel is built as the image builds it (``pip wheel`` of exactly what the Dockerfile copies,
in a directory of its own), unpacked, and run by an interpreter that sees that wheel and the
third-party packages, but neither the checkout nor the development installs (``python -S``:
the editable installs' path hooks are never loaded): ``dklb run --help`` works,
``import edgelb_local`` fails, and ``dklb demo`` says why it cannot run instead of a traceback.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAND_INS = ("edgelb_local", "localcluster", "localpg")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "engine", "states", "migrations"):  # the Dockerfile's COPYs
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            ".",
        ],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("dklb-*.whl")
    return built


def run_installed(wheel: Path, tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    path = [str(target), *site.getsitepackages()]
    program = f"import sys; sys.path[:0] = {path!r}\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-S", "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_the_wheel_holds_the_controller_and_not_the_stand_ins(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert top == {"engine", "states", "migrations", wheel.name.split("-")[0] + "-0.1.0.dist-info"}
    assert "states/lifecycle.yaml" in names and "engine/cli/dev.py" in names


def test_the_installed_controller_runs_without_the_stand_ins(wheel: Path, tmp_path: Path) -> None:
    done = run_installed(
        wheel,
        tmp_path,
        """
        import importlib.util, contextlib, io
        for name in ("edgelb_local", "localcluster", "localpg", "tests", "bench"):
            assert importlib.util.find_spec(name) is None, name
        from engine import cli
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            cli.main(["run", "--help"])
        assert "--edgelb-url" in out.getvalue(), out.getvalue()
        print("demo exit", cli.main(["demo", "--keep"]))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "demo exit 1" in done.stdout
    assert done.stderr.startswith("error: dklb demo runs the local stand-ins (localcluster)"), done.stderr
    assert "Traceback" not in done.stderr


def test_the_stand_ins_are_a_distribution_of_their_own() -> None:
    product = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    standins = tomllib.loads((REPO / "standins" / "pyproject.toml").read_text())
    assert not [p for p in product if p.split(".")[0] in STAND_INS]
    assert standins["tool"]["setuptools"]["packages"] == list(STAND_INS)
    assert standins["project"]["dependencies"] == ["dklb"]
    for package, directory in standins["tool"]["setuptools"]["package-dir"].items():
        assert (REPO / "standins" / directory / "__init__.py").exists(), package
