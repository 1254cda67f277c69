"""Readers for real face datasets. Each yields :class:`RawRecord` objects and writes nothing.

A record carries a lazy ``load()`` returning the encoded image bytes, so every image, whatever
its origin, is decoded by :func:`facelens.data.images.decode_image`. Records already known to
be bad (unknown class folder, malformed CSV row, non-numeric score...) carry a ``problem``
``(reason, detail)`` and are quarantined by ``prepare`` without being decoded.

Supported layouts:

* :func:`iter_imagefolder`: ``root/<split>/<class>/*`` (the FER2013 image release: ``train/``
  and ``test/``) or ``root/<class>/*``. Class folders are expression names
  (:data:`facelens.constants.EXPRESSIONS`, case-insensitive). Split folders (case-insensitive):
  ``train``/``training`` -> train, ``val``/``valid``/``validation``/``publictest`` -> val,
  ``test``/``privatetest`` -> test. ``PublicTest`` maps to *val*, as the FER2013 CSV's ``Usage``
  does, so both releases of the same dataset split alike.
* :func:`iter_fer2013_csv`: ``emotion,pixels[,Usage]`` (Kaggle ``fer2013.csv``; ``Usage`` is
  optional: Training -> train, PublicTest -> val, PrivateTest -> test).
* :func:`iter_attributes_table`: an images directory plus a CSV/XLSX table whose first column
  is the image file name and whose other columns are attribute scores (10k US Adult Faces).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data.images import IMAGE_EXTENSIONS, ImageRejected

__all__ = [
    "FER_SIZE",
    "IDENTITY_COLUMNS",
    "IGNORED_REASONS",
    "MAX_FILE_BYTES",
    "SPLIT_FOLDERS",
    "RawRecord",
    "iter_attributes_table",
    "iter_fer2013_csv",
    "iter_imagefolder",
    "match_attribute",
    "read_limited",
    "read_table",
]

#: FER2013 images are 48x48 grayscale.
FER_SIZE = 48

#: Files above this size are refused (``too_large``) before being read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024

#: Split folder names (lower case) -> usage.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "publictest": "val",
    "test": "test",
    "privatetest": "test",
}

#: Problem reasons that mean "skipped on purpose": counted in reports, not quarantined.
IGNORED_REASONS: frozenset[str] = frozenset({"not_in_table"})

#: Table columns (lower case) that hold a subject id, used as the identity for splitting.
IDENTITY_COLUMNS: tuple[str, ...] = ("subject", "identity", "person")

_DIGITS_AND_SPACES = re.compile(r"[0-9\s]+")
_FER_USAGE: dict[str, str] = {"training": "train", "publictest": "val", "privatetest": "test"}
_ATTR_SCALE = (1.0, 9.0)
_HIDDEN_FILES = frozenset({"thumbs.db", "desktop.ini"})


def _no_bytes() -> bytes:
    return b""


@dataclass(frozen=True)
class RawRecord:
    """One candidate image from a source, not decoded yet.

    Attributes:
        key: Stable, unique key within the source (a relative path or ``fer2013_row00017``);
            ``prepare`` derives the image id from it.
        load: Returns the encoded image bytes (may raise ``OSError``, or ``ImageRejected``
            with ``too_large`` for a file above :data:`MAX_FILE_BYTES`).
        label: Expression index into EXPRESSIONS, or None when the source has none.
        identity: Subject id, or None when unknown (prepare then uses the image id).
        usage: ``train``/``val``/``test`` when the source prescribes a split, else None.
        attributes: Attribute name (from ATTRIBUTES) -> score on the 1..9 scale, or None.
        origin: Human-readable location for reports (a path, or ``fer2013.csv:row 17``).
        problem: ``(reason, detail)`` when the record is known bad before decoding.
    """

    key: str
    load: Callable[[], bytes] = field(repr=False, compare=False)
    label: int | None = None
    identity: str | None = None
    usage: str | None = None
    attributes: dict[str, float] | None = None
    origin: str = ""
    problem: tuple[str, str] | None = None


# --------------------------------------------------------------------------- image folders


def iter_imagefolder(root: Path) -> Iterator[RawRecord]:
    """Yield the images of an expression-labelled folder tree.

    Layouts: ``root/<split>/<class>/...`` and/or ``root/<class>/...`` (see the module
    docstring for the folder names). Every non-hidden file inside a class folder (recursively)
    is a record, so stray non-images are quarantined as ``unsupported_format`` rather than
    silently dropped; files inside a folder that is neither a split nor a class get the problem
    ``("bad_label", ...)``; image files lying directly in ``root`` or in a split folder get
    ``("bad_label", "not inside a class folder")``; other loose files are ignored.

    Args:
        root: The dataset folder.

    Yields:
        Records in sorted path order (deterministic).

    Raises:
        FileNotFoundError: When ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    for entry in _sorted_children(root):
        name = entry.name.lower()
        if entry.is_dir():
            if name in SPLIT_FOLDERS:
                yield from _iter_split_folder(root, entry, SPLIT_FOLDERS[name])
            else:
                yield from _iter_class_folder(root, entry, usage=None, allow_split_hint=True)
        elif _is_image_name(entry):
            yield _misplaced(root, entry)


def _iter_split_folder(root: Path, split_dir: Path, usage: str) -> Iterator[RawRecord]:
    for entry in _sorted_children(split_dir):
        if entry.is_dir():
            yield from _iter_class_folder(root, entry, usage=usage, allow_split_hint=False)
        elif _is_image_name(entry):
            yield _misplaced(root, entry)


def _iter_class_folder(
    root: Path, class_dir: Path, usage: str | None, allow_split_hint: bool
) -> Iterator[RawRecord]:
    label = _class_index(class_dir.name)
    problem: tuple[str, str] | None = None
    if label is None:
        expected = ", ".join(EXPRESSIONS)
        splits = " or a split folder (train, val, test, ...)" if allow_split_hint else ""
        problem = ("bad_label", f"folder {class_dir.name!r} is not one of {expected}{splits}")
    for path in _walk_files(class_dir):
        rel = path.relative_to(root).as_posix()
        yield RawRecord(
            key=rel,
            load=partial(read_limited, path),
            label=label,
            identity=None,
            usage=usage,
            origin=str(path),
            problem=problem,
        )


def _misplaced(root: Path, path: Path) -> RawRecord:
    return RawRecord(
        key=path.relative_to(root).as_posix(),
        load=partial(read_limited, path),
        origin=str(path),
        problem=("bad_label", "not inside a class folder; put it in <class>/ or <split>/<class>/"),
    )


def _class_index(name: str) -> int | None:
    lowered = name.strip().lower()
    return EXPRESSIONS.index(lowered) if lowered in EXPRESSIONS else None


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in _HIDDEN_FILES


def _is_image_name(path: Path) -> bool:
    return path.is_file() and not _is_hidden(path) and path.suffix.lower() in IMAGE_EXTENSIONS


def _sorted_children(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not _is_hidden(p)), key=lambda p: p.name)


def _walk_files(folder: Path, _seen: frozenset[Path] = frozenset()) -> Iterator[Path]:
    real = folder.resolve()
    if real in _seen:  # a symlink loop: do not walk forever
        return
    seen = _seen | {real}
    for entry in _sorted_children(folder):
        if entry.is_dir():
            yield from _walk_files(entry, seen)
        elif entry.is_file():
            yield entry


def read_limited(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a file's bytes, refusing files larger than ``max_bytes`` without reading them.

    Raises:
        ImageRejected: ``too_large`` when the file is bigger than ``max_bytes``.
        OSError: When the file cannot be read.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageRejected(
            "too_large",
            f"{path}: the file is {size:,} bytes, above the {max_bytes:,}-byte limit for one image",
        )
    return path.read_bytes()


# --------------------------------------------------------------------------- FER2013 CSV


def iter_fer2013_csv(path: Path) -> Iterator[RawRecord]:
    """Yield the rows of a FER2013 CSV (``emotion,pixels[,Usage]``) as 48x48 PNG records.

    Rows are validated before decoding: ``pixels`` must hold 2304 integers in 0..255
    (else ``("bad_pixels", ...)``), ``emotion`` an integer in 0..6 (else ``("bad_label", ...)``),
    ``Usage`` one of Training/PublicTest/PrivateTest or empty (else ``("bad_usage", ...)``).
    Header names are matched case-insensitively and stripped (``icml_face_data.csv`` writes
    ``" Usage"``). A row's bytes are the 48x48 grayscale image encoded as PNG, so the pixels
    go through the same decoder as every other image.

    Args:
        path: The CSV file.

    Yields:
        One record per data row; ``key`` is ``fer2013_row<NNNNN>`` (1-based data row).

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When a required column is missing (naming the file, the column and the
            expected header) or the CSV itself cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FER2013 CSV {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(
                f"{path}: the file is empty; expected the header emotion,pixels,Usage"
            ) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a readable UTF-8 CSV ({type(exc).__name__})") from None
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        for required in ("emotion", "pixels"):
            if required not in columns:
                raise ValueError(
                    f"{path}: missing column {required!r}; expected the header "
                    f"emotion,pixels,Usage (got {','.join(h.strip() for h in header)[:200]})"
                )
        i_emotion, i_pixels = columns["emotion"], columns["pixels"]
        i_usage = columns.get("usage")
        row_no = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{path}: CSV parse error after data row {row_no} ({type(exc).__name__}: "
                    f"{str(exc)[:120]}); fix or re-export the file"
                ) from None
            row_no += 1
            if not row:  # blank line
                continue
            yield _fer_record(path, row_no, row, i_emotion, i_pixels, i_usage)


def _cell(row: list[str], index: int | None) -> str | None:
    if index is None or index >= len(row):
        return None
    return row[index].strip()


def _fer_record(
    path: Path, row_no: int, row: list[str], i_emotion: int, i_pixels: int, i_usage: int | None
) -> RawRecord:
    key = f"fer2013_row{row_no:05d}"
    origin = f"{path.name}:row {row_no}"
    base: dict[str, Any] = {"key": key, "origin": origin}
    usage_text = _cell(row, i_usage)
    usage: str | None = None
    if usage_text:
        usage = _FER_USAGE.get(usage_text.lower())
        if usage is None:
            detail = f"Usage {usage_text[:40]!r} is not one of Training, PublicTest, PrivateTest"
            return RawRecord(load=_no_bytes, problem=("bad_usage", detail), **base)
    base["usage"] = usage
    emotion = _cell(row, i_emotion)
    label: int | None = None
    if emotion is not None and re.fullmatch(r"\d+", emotion):
        label = int(emotion)
    if label is None or not 0 <= label < len(EXPRESSIONS):
        detail = f"emotion {(emotion or '')[:20]!r} is not an integer in 0..{len(EXPRESSIONS) - 1}"
        return RawRecord(load=_no_bytes, problem=("bad_label", detail), **base)
    base["label"] = label
    pixels, problem = _parse_pixels(_cell(row, i_pixels))
    if problem is not None:
        return RawRecord(load=_no_bytes, problem=("bad_pixels", problem), **base)
    assert pixels is not None
    return RawRecord(load=partial(_png_bytes, pixels), **base)


def _parse_pixels(text: str | None) -> tuple[np.ndarray | None, str | None]:
    expected = FER_SIZE * FER_SIZE
    if not text:
        return None, f"no pixels; expected {expected} space-separated integers"
    if _DIGITS_AND_SPACES.fullmatch(text):
        # fast path (8x faster than int() per token): only digits and whitespace, so the
        # whitespace-separated parse is exact; anything unusual falls through to the slow path
        fast = np.fromstring(text, dtype=np.int64, sep=" ")
        if fast.size == expected and fast.max() <= 255:
            return fast.astype(np.uint8).reshape(FER_SIZE, FER_SIZE), None
    parts = text.split()
    if len(parts) != expected:
        return None, f"{len(parts)} pixel values, expected {expected} ({FER_SIZE}x{FER_SIZE})"
    try:
        values = np.array([int(p) for p in parts], dtype=np.int64)
    except ValueError:
        bad = next(p for p in parts if not re.fullmatch(r"[+-]?\d+", p))
        return None, f"pixel value {bad[:20]!r} is not an integer"
    if values.min() < 0 or values.max() > 255:
        return None, f"pixel values range {values.min()}..{values.max()}, expected 0..255"
    return values.astype(np.uint8).reshape(FER_SIZE, FER_SIZE), None


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # transient, in memory only: no compression is fastest
    Image.fromarray(pixels, mode="L").save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


# --------------------------------------------------------------------------- attribute tables


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
        FileNotFoundError: When the file does not exist.
        ValueError: When the suffix is not .csv/.xlsx/.xlsm or the file cannot be parsed.
    """
    table = Path(table)
    if not table.is_file():
        raise FileNotFoundError(f"attribute table {table} does not exist")
    suffix = table.suffix.lower()
    if suffix == ".csv":
        try:
            with table.open(newline="", encoding="utf-8-sig") as handle:
                return [row for row in csv.reader(handle) if row]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{table}: not a readable UTF-8 CSV ({exc})") from None
    if suffix in {".xlsx", ".xlsm"}:
        from openpyxl import load_workbook

        try:
            book = load_workbook(table, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many types for broken files
            raise ValueError(f"{table}: not a readable XLSX workbook ({exc})") from None
        try:
            sheet = book.worksheets[0]
            rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        finally:
            book.close()
        return [r for r in rows if any(c is not None and str(c).strip() for c in r)]
    raise ValueError(f"{table}: attribute table must be .csv or .xlsx, got {suffix!r}")


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
        FileNotFoundError: When ``images_dir`` or ``table`` does not exist.
        ValueError: When the table has no header, no rows or no attribute column.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder {images_dir} does not exist or is not a directory")
    rows = read_table(Path(table))
    if len(rows) < 2:
        raise ValueError(f"{table}: expected a header row and at least one data row")
    header = ["" if h is None else str(h).strip() for h in rows[0]]
    attr_cols = {i: match_attribute(h) for i, h in enumerate(header) if i > 0}
    attr_cols = {i: a for i, a in attr_cols.items() if a is not None}
    if not attr_cols:
        raise ValueError(
            f"{table}: no attribute column found; the first column is the file name and the "
            f"others must be attribute names such as {', '.join(ATTRIBUTES[:4])} ... "
            f"(got {', '.join(header[1:8])})"
        )
    id_col = next(
        (i for i, h in enumerate(header) if i > 0 and h.lower() in IDENTITY_COLUMNS), None
    )
    root = images_dir.resolve()
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
    listed: set[Path] = set()
    for name, entry in entries.items():
        origin = f"{table}:row {entry['row']} ({name})"
        path = (images_dir / name).resolve()
        inside = path == root or root in path.parents
        if inside:
            listed.add(path)
        if entry["problem"] is not None:
            yield RawRecord(
                key=name, load=_no_bytes, origin=origin, problem=("bad_label", entry["problem"])
            )
            continue
        if not inside or not path.is_file():
            detail = "listed in table but not found" + (
                "" if inside else " inside the images folder"
            )
            yield RawRecord(key=name, load=_no_bytes, origin=origin, problem=("unreadable", detail))
            continue
        yield RawRecord(
            key=name,
            load=partial(read_limited, path),
            identity=entry["identity"],
            attributes=_mean_scores(entry["scores"]),
            origin=origin,
        )
    for path in _walk_files(images_dir):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.resolve() not in listed:
            yield RawRecord(
                key=path.relative_to(images_dir).as_posix(),
                load=_no_bytes,
                origin=str(path),
                problem=("not_in_table", f"not listed in {Path(table).name}"),
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
