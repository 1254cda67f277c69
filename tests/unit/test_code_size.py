"""Small modules and short functions: no file in ``src/`` over 400 lines, no function over 80
(aim for about 300 and 60). A module that grows past the limit is split by concept."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_file_is_over_the_limit() -> None:
    long = {
        p.relative_to(SRC).as_posix(): n
        for p in _files()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_no_function_is_over_the_limit() -> None:
    long = {}
    for path in _files():
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > MAX_FUNCTION_LINES:
                    long[f"{rel}::{node.name}"] = n
    assert long == {}
