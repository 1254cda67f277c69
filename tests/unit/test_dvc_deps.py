"""dvc.yaml lists exactly the code each stage runs, so DVC re-runs exactly the right stages.

How the expected set is known: each stage's command names one script in ``pipelines/``; its
import closure inside ``src/`` is read with ``ast`` (:mod:`facelens._closure`: every
``facelens`` import anywhere in a file, the ``__init__`` of every package on the way, and the
package data a module reads through ``importlib.resources``). Code reached another way is
part of it too: the model that ``train`` logs ships :func:`model_code_files` (the closure of
the module its entry script names), and no module is imported by a computed name. The
tests below check each of those claims.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from facelens._closure import RESOURCES, closure, stage_code_deps
from facelens.serving import log_model

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_code_deps_are_exactly_its_import_closure(name: str) -> None:
    stage = STAGES[name]
    have = [d for d in stage["deps"] if d.startswith(("pipelines/", "src/"))]
    want = stage_code_deps(stage["cmd"], ROOT)
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    assert not missing and not extra, (
        f"dvc.yaml stage {name!r}: missing {missing}, not run by the stage {extra}; "
        "run `python tools/dvc_deps.py`"
    )


def test_the_logged_model_ships_code_the_train_stage_depends_on() -> None:
    entry = ast.parse(log_model._ENTRY_SCRIPT)
    imported = {n.module for n in ast.walk(entry) if isinstance(n, ast.ImportFrom)}
    assert imported == {log_model.ENTRY_MODULE}  # the entry script names this module only
    shipped = {f"src/{p.as_posix()}" for p in log_model.model_code_files()}
    assert f"src/{log_model.ENTRY_MODULE.replace('.', '/')}.py" in shipped
    train_deps = set(STAGES["train"]["deps"])
    assert shipped <= train_deps, sorted(shipped - train_deps)


def test_no_module_is_imported_by_a_computed_name() -> None:
    dynamic = re.compile(r"\b(import_module|__import__|spec_from_file_location)\(")
    offenders = [
        str(p.relative_to(ROOT))
        for p in SRC.rglob("*.py")
        if dynamic.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "ast cannot follow these imports; dvc.yaml would miss code"


def test_every_package_data_reader_is_declared() -> None:
    readers = {
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if "resources.files(" in p.read_text(encoding="utf-8")
    }
    assert readers == set(RESOURCES)
    for files in RESOURCES.values():
        assert all((SRC / f).is_file() for f in files)


def test_closure_follows_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    root = tmp_path / "src"
    pkg = root / "facelens"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "sub" / "b.py").write_text("from ..top import X\n")
    (pkg / "top.py").write_text("X = 1\n")
    (pkg / "unused.py").write_text("")
    script = tmp_path / "run.py"
    script.write_text("import facelens.sub.a\n")
    assert {p.as_posix() for p in closure([script], root=root)} == {
        "facelens/__init__.py",
        "facelens/sub/__init__.py",
        "facelens/sub/a.py",
        "facelens/sub/b.py",
        "facelens/top.py",
    }
