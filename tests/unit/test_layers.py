"""Imports point down the layers written in ``facelens/__init__.py``; MLflow and Optuna stay
out of the layers that must not see them; package ``__init__`` modules import nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from facelens._closure import imported_modules

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "facelens"

#: Top-level module or package -> layer (the order of ``facelens/__init__.py``'s docstring).
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ("errors", "_io", "_closure", "constants", "device", "interrupts", "plots", "progress"), 0
    ),
    "data": 1,
    "models": 2,
    "training": 3,
    **dict.fromkeys(("explain", "manifold", "tuning"), 4),
    "serving": 5,
    "tracking": 6,
    "config": 7,
    "stages": 8,
    "cli": 9,
}
#: Third-party packages a layer must never import (tracking enters through callbacks).
FORBIDDEN = {
    "mlflow": ("data", "models", "training", "explain", "manifold", "tuning"),
    "optuna": ("data", "models", "training", "explain", "manifold", "serving"),
}


def _top(rel: Path) -> str:
    parts = rel.with_suffix("").parts  # ("facelens", "data", "split")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[Path]:
    return sorted(p.relative_to(SRC) for p in PKG.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    tops = {_top(rel) for rel in _modules()} - {"__init__"}
    assert tops <= set(LAYERS), f"add {sorted(tops - set(LAYERS))} to the layer list"


@pytest.mark.parametrize("rel", _modules(), ids=lambda p: p.as_posix())
def test_imports_point_down(rel: Path) -> None:
    if _top(rel) == "__init__":
        return
    layer = LAYERS[_top(rel)]
    upward = []
    for module in imported_modules(SRC / rel, rel):
        parts = module.split(".")
        if len(parts) > 1 and parts[1] in LAYERS and LAYERS[parts[1]] > layer:
            upward.append(f"{module} (layer {LAYERS[parts[1]]})")
    assert not upward, f"{rel} (layer {layer}) imports upward: {upward}"


def _third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("library", sorted(FORBIDDEN))
def test_libraries_stay_out_of_their_forbidden_layers(library: str) -> None:
    offenders = [
        rel.as_posix()
        for rel in _modules()
        if _top(rel) in FORBIDDEN[library] and library in _third_party(SRC / rel)
    ]
    assert offenders == []


def test_package_inits_import_nothing() -> None:
    for init in PKG.rglob("__init__.py"):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        assert imports == [], f"{init.relative_to(SRC)} imports; import from the modules instead"
