"""The FER2013 CSV (``emotion,pixels[,Usage]``, Kaggle ``fer2013.csv``): each row a 48x48
grayscale image, validated before decoding."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facelens.constants import EXPRESSIONS
from facelens.data.sources.records import RawRecord, no_bytes
from facelens.errors import MissingInputError, SourceError

__all__ = ["FER_SIZE", "iter_fer2013_csv"]

#: FER2013 images are 48x48 grayscale.
FER_SIZE = 48

_DIGITS_AND_SPACES = re.compile(r"[0-9\s]+")
#: ``Usage`` values (lower case) -> split.
_FER_USAGE: dict[str, str] = {"training": "train", "publictest": "val", "privatetest": "test"}


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
        MissingInputError: When the file does not exist.
        SourceError: When a required column is missing (naming the file, the column and the
            expected header) or the CSV itself cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"FER2013 CSV {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        i_emotion, i_pixels, i_usage = _header_columns(path, reader)
        row_no = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise SourceError(
                    f"{path}: CSV parse error after data row {row_no} ({type(exc).__name__}: "
                    f"{str(exc)[:120]}); fix or re-export the file"
                ) from None
            row_no += 1
            if not row:  # blank line
                continue
            yield _fer_record(path, row_no, row, i_emotion, i_pixels, i_usage)


def _header_columns(path: Path, reader: Iterator[list[str]]) -> tuple[int, int, int | None]:
    """Read the header row: the indices of ``emotion``, ``pixels`` and ``Usage`` (or None)."""
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError(
            f"{path}: the file is empty; expected the header emotion,pixels,Usage"
        ) from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not a readable UTF-8 CSV ({type(exc).__name__})") from None
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    for required in ("emotion", "pixels"):
        if required not in columns:
            raise SourceError(
                f"{path}: missing column {required!r}; expected the header "
                f"emotion,pixels,Usage (got {','.join(h.strip() for h in header)[:200]})"
            )
    return columns["emotion"], columns["pixels"], columns.get("usage")


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
            return RawRecord(load=no_bytes, problem=("bad_usage", detail), **base)
    base["usage"] = usage
    emotion = _cell(row, i_emotion)
    label: int | None = None
    if emotion is not None and re.fullmatch(r"\d+", emotion):
        label = int(emotion)
    if label is None or not 0 <= label < len(EXPRESSIONS):
        detail = f"emotion {(emotion or '')[:20]!r} is not an integer in 0..{len(EXPRESSIONS) - 1}"
        return RawRecord(load=no_bytes, problem=("bad_label", detail), **base)
    base["label"] = label
    pixels, problem = _parse_pixels(_cell(row, i_pixels))
    if problem is not None:
        return RawRecord(load=no_bytes, problem=("bad_pixels", problem), **base)
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
