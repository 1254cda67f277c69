"""Reading the split CSVs the ``split`` stage wrote, checked against the prepared dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from facelens.constants import EXPRESSIONS
from facelens.errors import DataError, MissingInputError

__all__ = ["REQUIRED_COLUMNS", "load_split", "load_splits"]

#: Columns every split CSV must have.
REQUIRED_COLUMNS = ("id", "file", "label")


def load_split(split_csv: Path, prepared_dir: Path) -> pd.DataFrame:
    """Read a split (or manifest) CSV and check it against the prepared directory.

    Args:
        split_csv: ``data/splits/<split>.csv`` (same columns as the manifest).
        prepared_dir: the prepared dataset directory the rows' ``file`` paths are relative to.

    Returns:
        The rows, with ``id``/``identity``/``file``/``mask`` as strings (empty when missing)
        and ``label`` as a nullable integer column.

    Raises:
        MissingInputError: the CSV, the prepared directory or an image file is missing.
        DataError: a required column is missing or a label is not an integer in 0..6.
    """
    split_csv, prepared_dir = Path(split_csv), Path(prepared_dir)
    if not split_csv.is_file():
        raise MissingInputError(
            f"split file {split_csv} does not exist; run the `split` stage (dvc repro split)"
        )
    if not prepared_dir.is_dir():
        raise MissingInputError(
            f"prepared directory {prepared_dir} does not exist; run the `prepare` stage"
        )
    str_cols = ("id", "file", "identity", "source", "usage", "mask", "sha256", "phash")
    df = pd.read_csv(
        split_csv,
        dtype={c: str for c in str_cols},
        keep_default_na=False,
        na_values={"label": [""]},
    )
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{split_csv} lacks required column(s) {missing}; it has {list(df.columns)}. "
            "Regenerate it with the `split` stage."
        )
    labels = pd.to_numeric(df["label"], errors="coerce")
    if (labels.isna() & df["label"].notna()).any():
        raise DataError(f"{split_csv} column 'label' holds a value that is not an integer")
    df["label"] = labels.astype("Int64")
    bad = df["label"].dropna()
    bad = bad[(bad < 0) | (bad >= len(EXPRESSIONS))]
    if len(bad):
        raise DataError(
            f"{split_csv} column 'label' has values outside 0..{len(EXPRESSIONS) - 1}: "
            f"{sorted(set(bad.tolist()))[:5]}"
        )
    absent = [f for f in df["file"] if not (prepared_dir / f).is_file()]
    if absent:
        raise MissingInputError(
            f"{len(absent)} image(s) listed in {split_csv} (column 'file') are missing under "
            f"{prepared_dir}, e.g. {absent[:3]}; re-run `prepare` and `split`."
        )
    return df


def load_splits(prepared_dir: Path, splits_dir: Path, names: Sequence[str]) -> list[pd.DataFrame]:
    """Read the split CSVs ``names`` (``train``, ``val``, ``test``) written by the ``split``
    stage, each checked by :func:`load_split`."""
    return [load_split(Path(splits_dir) / f"{n}.csv", Path(prepared_dir)) for n in names]
