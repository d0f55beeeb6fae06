"""The import direction between dklb's layers (``engine/__init__.py`` draws them), and their size, enforced.

Every ``import`` and ``from ... import`` in the repository's product packages is read from the
AST (module level and inside functions alike) and checked against the table below: what each
layer may import from this repository. Third-party imports are not judged. The stand-ins
(``edgelb_local``, ``localcluster``) may be named by ``engine.cli.dev`` alone, by import or by
the module name it hands to ``importlib``: the product must run without them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("engine", "states", "migrations", "edgelb_local", "localcluster")
STAND_INS = ("edgelb_local", "localcluster")

# layer (a module or package prefix) -> what it may import from this repository, by prefix.
# The most specific layer names a module; a module's own package is always allowed.
ALLOWED: dict[str, tuple[str, ...]] = {
    "engine.model": ("engine.edgelb.schema",),
    "engine.edgelb": (),
    "engine.kube": ("engine.model",),
    "engine.store": ("engine.model", "migrations"),
    "engine.contract": ("engine.model", "engine.edgelb", "engine.kube.port", "engine.store"),
    "engine.runtime": ("engine.model", "engine.contract", "engine.store", "engine.edgelb", "engine.kube"),
    "engine.telemetry": ("engine.model", "engine.store"),
    "engine.admission": ("engine.model", "engine.telemetry.serving"),
    "engine.app": (
        "engine.model",
        "engine.contract",
        "engine.store",
        "engine.edgelb",
        "engine.kube",
        "engine.runtime",
        "engine.telemetry",
        "engine.admission",
    ),
    "engine.cli": ("engine",),
    "engine.cli.dev": ("engine", *STAND_INS),
    "engine": (),  # engine/__init__.py: a docstring
    "states": ("engine.model", "engine.contract", "engine.store", "engine.edgelb.errors"),
    "migrations": ("engine.store",),
    "edgelb_local": ("engine.edgelb.schema", "engine.model.durations", "engine.telemetry.serving"),
    "localcluster": ("engine", "edgelb_local"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    return max((layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), key=len)


def own_package(module: str) -> str:
    """The package a module belongs to, at the granularity of the layer table."""
    layer = layer_of(module)
    return layer.rsplit(".", 1)[0] if layer.startswith("engine.cli.") else layer


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def references(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``source`` of this repository's packages, resolved, and
    every string naming a stand-in (what ``importlib.import_module`` would be handed)."""
    tree = ast.parse(source)
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and within(node.value, STAND_INS):
            names = [node.value]
        for name in names:
            if within(name, PRODUCT):
                assert isinstance(node, ast.stmt | ast.expr)  # an import or a string: both have a line
                yield node.lineno, name


def violations(source: str, module: str) -> list[str]:
    layer = layer_of(module)
    allowed = (own_package(module), *ALLOWED[layer])
    found = []
    for line, name in references(source, module):
        if within(name, allowed):
            continue
        # "from engine.x import y" also yields "engine.x.y": judge the module, not the attribute.
        if within(name.rsplit(".", 1)[0], allowed) and name.rsplit(".", 1)[0] not in ("engine", *PRODUCT):
            continue
        found.append(f"{module}:{line} imports {name} (layer {layer} may import {', '.join(allowed)})")
    return found


def product_modules() -> Iterator[tuple[str, Path]]:
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            yield module_name(path), path


def test_every_product_module_belongs_to_a_layer() -> None:
    for module, _ in product_modules():
        assert layer_of(module), module


def test_imports_go_one_way() -> None:
    found = [v for module, path in product_modules() for v in violations(path.read_text(), module)]
    assert found == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("engine.runtime.reconciler", "from states import observe\n"),
        ("engine.runtime.reconciler", "def f():\n    from states.observe import external_trigger\n"),
        ("engine.runtime.controller", "from engine.cli import options\n"),
        ("engine.runtime.orphans", "from engine.telemetry.metrics import Metrics\n"),
        ("engine.model.config", "from engine.store import Binding\n"),
        ("engine.store.store", "from engine.runtime import lifecycle\n"),
        ("engine.kube.adapter", "from engine.runtime.cache import ServiceCache\n"),
        ("engine.admission.review", "from engine.store import Store\n"),
        ("engine.app", "from engine.cli.options import UsageError\n"),
        ("engine.cli.run", "import edgelb_local\n"),
        ("engine.cli.inspect", "from localcluster import processes\n"),
        ("engine.cli.plan", "import importlib\nimportlib.import_module('localcluster.demo')\n"),
        ("engine.telemetry.metrics", "from . import health\nfrom ..runtime import controller\n"),
        ("states.pending", "from engine.runtime.reconciler import Reconciler\n"),
        ("edgelb_local.server", "from engine.store import Store\n"),
    ],
)
def test_an_upward_import_is_caught(module: str, source: str) -> None:
    assert violations(source, module), f"{module} may not import that"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("engine.runtime.reconciler", "from engine.store import Store\nfrom .cache import ServiceCache\n"),
        ("engine.cli.dev", "import importlib\nimportlib.import_module('edgelb_local.command')\n"),
        ("engine.telemetry.metrics", "from . import health\n"),
        ("states.pending", "from engine.contract import Fire\nfrom states.observe import fingerprint\n"),
        ("engine.model.translation", "from engine.edgelb.schema import normalize_pool\n"),
    ],
)
def test_an_allowed_import_passes(module: str, source: str) -> None:
    assert violations(source, module) == []


def test_engine_modules_and_functions_stay_small() -> None:
    """A module over 500 lines or a function over 100 is a layer or a step that wants its own name."""
    too_big = []
    for path in sorted((REPO / "engine").rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > 500:
            too_big.append(f"{module_name(path)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 100:
                    too_big.append(f"{module_name(path)}.{node.name}: {length} lines")
    assert too_big == []
