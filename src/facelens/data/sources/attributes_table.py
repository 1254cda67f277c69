"""An images folder plus a CSV/XLSX table of attribute scores (10k US Adult Faces): the first
column is the image file name, the others attribute scores on the 1..9 scale."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from facelens.constants import ATTRIBUTES
from facelens.data.images import IMAGE_EXTENSIONS
from facelens.data.sources.files import read_limited, walk_files
from facelens.data.sources.records import RawRecord, no_bytes
from facelens.errors import MissingInputError, SourceError

__all__ = ["IDENTITY_COLUMNS", "iter_attributes_table", "match_attribute", "read_table"]

#: Table columns (lower case) that hold a subject id, used as the identity for splitting.
IDENTITY_COLUMNS: tuple[str, ...] = ("subject", "identity", "person")

#: The range of a valid attribute score.
_ATTR_SCALE = (1.0, 9.0)


def match_attribute(column: str) -> str | None:
    """Map a table column name to an attribute of ATTRIBUTES (case, spaces, ``attr_`` ignored)."""
    lowered = column.strip().lower()
    lowered = lowered.removeprefix("attr_")
    norm = re.sub(r"[^a-z0-9]", "", lowered)
    for name in ATTRIBUTES:
        if norm == name.lower():
            return name
    return None


def read_table(table: Path) -> list[list[Any]]:
    """Read a CSV or XLSX table into rows of cells (header first), without type guessing.

    Raises:
        MissingInputError: When the file does not exist.
        SourceError: When the suffix is not .csv/.xlsx/.xlsm or the file cannot be parsed.
    """
    table = Path(table)
    if not table.is_file():
        raise MissingInputError(f"attribute table {table} does not exist")
    suffix = table.suffix.lower()
    if suffix == ".csv":
        try:
            with table.open(newline="", encoding="utf-8-sig") as handle:
                return [row for row in csv.reader(handle) if row]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise SourceError(f"{table}: not a readable UTF-8 CSV ({exc})") from None
    if suffix in {".xlsx", ".xlsm"}:
        from openpyxl import load_workbook

        try:
            book = load_workbook(table, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many types for broken files
            raise SourceError(f"{table}: not a readable XLSX workbook ({exc})") from None
        try:
            sheet = book.worksheets[0]
            rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        finally:
            book.close()
        return [r for r in rows if any(c is not None and str(c).strip() for c in r)]
    raise SourceError(f"{table}: attribute table must be .csv or .xlsx, got {suffix!r}")


def iter_attributes_table(images_dir: Path, table: Path) -> Iterator[RawRecord]:
    """Yield the images listed in an attribute table, with their scores.

    The first column holds image file names relative to ``images_dir``; columns whose names
    match an attribute (:func:`match_attribute`) hold scores on the 1..9 scale; a column named
    subject/identity/person gives the identity; other columns are ignored. Several rows for the
    same file (one per rater) are averaged. Problems: a non-numeric, missing or out-of-range
    score -> ``("bad_label", ...)``; a listed file that does not exist (or escapes
    ``images_dir``) -> ``("unreadable", "listed in table but not found")``. Images under
    ``images_dir`` that the table does not list are yielded with the problem
    ``("not_in_table", ...)`` (see :data:`IGNORED_REASONS`): counted, not quarantined.

    Args:
        images_dir: The folder with the face images.
        table: CSV or XLSX file.

    Yields:
        Records in table order, then the unlisted images in path order.

    Raises:
        MissingInputError: When ``images_dir`` or ``table`` does not exist.
        SourceError: When the table has no header, no rows or no attribute column.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise MissingInputError(f"images folder {images_dir} does not exist or is not a directory")
    rows = read_table(Path(table))
    attr_cols, id_col = _table_columns(table, rows)
    entries = _collect_entries(rows, attr_cols, id_col)
    listed: set[Path] = set()
    yield from _listed_records(images_dir, table, entries, listed)
    for path in walk_files(images_dir):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.resolve() not in listed:
            yield RawRecord(
                key=path.relative_to(images_dir).as_posix(),
                load=no_bytes,
                origin=str(path),
                problem=("not_in_table", f"not listed in {Path(table).name}"),
            )


def _table_columns(table: Path, rows: list[list[Any]]) -> tuple[dict[int, str], int | None]:
    """The attribute columns (index -> attribute) and the identity column of ``rows``."""
    if len(rows) < 2:
        raise SourceError(f"{table}: expected a header row and at least one data row")
    header = ["" if h is None else str(h).strip() for h in rows[0]]
    attr_cols = {i: match_attribute(h) for i, h in enumerate(header) if i > 0}
    attr_cols = {i: a for i, a in attr_cols.items() if a is not None}
    if not attr_cols:
        raise SourceError(
            f"{table}: no attribute column found; the first column is the file name and the "
            f"others must be attribute names such as {', '.join(ATTRIBUTES[:4])} ... "
            f"(got {', '.join(header[1:8])})"
        )
    id_col = next(
        (i for i, h in enumerate(header) if i > 0 and h.lower() in IDENTITY_COLUMNS), None
    )
    return attr_cols, id_col


def _collect_entries(
    rows: list[list[Any]], attr_cols: dict[int, str], id_col: int | None
) -> dict[str, dict[str, Any]]:
    """File name -> its first row, its scores (one per valid row), problem and identity."""
    entries: dict[str, dict[str, Any]] = {}
    for row_no, row in enumerate(rows[1:], start=2):
        name = "" if not row or row[0] is None else str(row[0]).strip()
        if not name:
            continue
        entry = entries.setdefault(
            name, {"row": row_no, "scores": [], "problem": None, "identity": None}
        )
        if entry["identity"] is None and id_col is not None:
            ident = row[id_col] if id_col < len(row) else None
            entry["identity"] = None if ident in (None, "") else str(ident).strip()
        if entry["problem"] is None:
            scores, problem = _parse_scores(row, attr_cols)
            if problem is not None:
                entry["problem"] = f"row {row_no}: {problem}"
            else:
                entry["scores"].append(scores)
    return entries


def _listed_records(
    images_dir: Path, table: Path, entries: dict[str, dict[str, Any]], listed: set[Path]
) -> Iterator[RawRecord]:
    """One record per table entry, in table order; adds the files inside ``images_dir`` to
    ``listed``."""
    root = images_dir.resolve()
    for name, entry in entries.items():
        origin = f"{table}:row {entry['row']} ({name})"
        path = (images_dir / name).resolve()
        inside = path == root or root in path.parents
        if inside:
            listed.add(path)
        if entry["problem"] is not None:
            yield RawRecord(
                key=name, load=no_bytes, origin=origin, problem=("bad_label", entry["problem"])
            )
            continue
        if not inside or not path.is_file():
            detail = "listed in table but not found" + (
                "" if inside else " inside the images folder"
            )
            yield RawRecord(key=name, load=no_bytes, origin=origin, problem=("unreadable", detail))
            continue
        yield RawRecord(
            key=name,
            load=partial(read_limited, path),
            identity=entry["identity"],
            attributes=_mean_scores(entry["scores"]),
            origin=origin,
        )


def _parse_scores(row: list[Any], attr_cols: dict[int, str]) -> tuple[dict[str, float], str | None]:
    scores: dict[str, float] = {}
    lo, hi = _ATTR_SCALE
    for i, name in attr_cols.items():
        cell = row[i] if i < len(row) else None
        text = "" if cell is None else str(cell).strip()
        if not text:
            return {}, f"no score for {name!r}"
        try:
            value = float(text)
        except ValueError:
            return {}, f"score {text[:20]!r} for {name!r} is not a number"
        if not math.isfinite(value) or not lo <= value <= hi:
            return {}, f"score {value:g} for {name!r} is outside {lo:g}..{hi:g}"
        scores[name] = value
    return scores, None


def _mean_scores(all_scores: list[dict[str, float]]) -> dict[str, float]:
    names = [a for a in ATTRIBUTES if a in all_scores[0]]
    return {a: float(np.mean([s[a] for s in all_scores])) for a in names}
