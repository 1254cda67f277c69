"""Import closures inside the facelens package, read with ``ast`` (nothing is imported).

The closure of a file is the facelens code that can run when it runs: every ``facelens``
module it imports (at the top or inside a function), the ``__init__`` of every package on
the way, and the package data those modules read (:data:`RESOURCES`), transitively. It is
what a DVC stage must depend on (``tests/integration/test_dvc_deps.py`` checks ``dvc.yaml``
against it) and what a logged model ships (:mod:`facelens.serving.log_model`).

facelens imports no module by a computed name (through ``importlib``), so ``ast`` sees every
edge; a unit test keeps it that way.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PACKAGE", "RESOURCES", "SRC_ROOT", "closure", "imported_modules", "module_path"]

PACKAGE = "facelens"
#: The folder that holds the ``facelens`` package (``src/`` in a checkout).
SRC_ROOT = Path(__file__).resolve().parent.parent
#: Package data read through ``importlib.resources``: module -> files it reads.
RESOURCES: dict[str, tuple[str, ...]] = {
    "facelens/constants.py": ("facelens/reference/attribute_stats.json",),
}


def module_path(module: str, root: Path = SRC_ROOT) -> Path | None:
    """The file of a facelens module, relative to ``root`` (None if it is not a module)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = Path(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _package_of(rel: Path) -> list[str]:
    """The package a file belongs to (``facelens/x/y.py`` and ``facelens/x/__init__.py``:
    ``facelens.x``), which relative imports start from."""
    return list(rel.with_suffix("").parts[:-1])


def imported_modules(path: Path, rel: Path | None = None) -> set[str]:
    """Dotted names of the facelens modules ``path`` imports, anywhere in the file.

    ``from facelens.x import y`` yields ``facelens.x.y`` when that is a module, else
    ``facelens.x``; relative imports are resolved against ``rel`` (the file's path relative
    to the source root).
    """
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if rel is None:
                    continue
                pkg = _package_of(rel)[: len(_package_of(rel)) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def closure(entries: Iterable[Path | str], root: Path = SRC_ROOT) -> set[Path]:
    """The facelens files (relative to ``root``) reached from ``entries``.

    Args:
        entries: files to start from: scripts outside the package (``pipelines/train.py``)
            or modules inside it; they are not part of the result unless inside ``root``.
        root: the folder holding the ``facelens`` package.

    Returns:
        Module files, the ``__init__.py`` of their packages, and :data:`RESOURCES` they read.
    """
    root = Path(root)
    todo: list[tuple[Path, Path | None]] = []
    for entry in entries:
        entry = Path(entry).resolve()
        rel = entry.relative_to(root) if entry.is_relative_to(root) else None
        todo.append((entry, rel))
        if rel is not None:  # importing a module imports the packages above it
            package = _package_of(rel)
            for depth in range(1, len(package) + 1):
                init = Path(*package[:depth], "__init__.py")
                todo.append((root / init, init))
    seen: set[Path] = set()
    while todo:
        path, rel = todo.pop()
        if rel is not None:
            if rel in seen:
                continue
            seen.add(rel)
            seen.update(Path(r) for r in RESOURCES.get(rel.as_posix(), ()))
        for module in imported_modules(path, rel):
            dotted = module.split(".")
            for depth in range(1, len(dotted) + 1):  # packages on the way are imported too
                found = module_path(".".join(dotted[:depth]), root)
                if found is not None and found not in seen:
                    todo.append((root / found, found))
    return seen


def stage_code_deps(cmd: str, repo: Path) -> list[str]:
    """The code a DVC stage command runs, as ``dvc.yaml`` dependency paths.

    Args:
        cmd: the stage's ``cmd`` (``python pipelines/<stage>.py ...``).
        repo: the repository root (holds ``pipelines/`` and ``src/``).

    Returns:
        The stage script, then every file of its closure under ``src/``, sorted.

    Raises:
        ValueError: ``cmd`` does not run a script under ``pipelines/``.
    """
    words = cmd.split()
    scripts = [w for w in words if w.startswith("pipelines/") and w.endswith(".py")]
    if len(scripts) != 1:
        raise ValueError(f"expected one pipelines/<stage>.py in the command, got {cmd!r}")
    src = Path(repo) / "src"
    files = closure([Path(repo) / scripts[0]], root=src)
    return [scripts[0], *sorted(f"src/{p.as_posix()}" for p in files)]
