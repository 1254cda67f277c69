"""The ``split`` stage: a seeded train/val/test split, stratified by label and grouped by
identity and duplicates, that fails on leakage."""

from __future__ import annotations

from pathlib import Path

from facelens.config import Params
from facelens.data.split import SplitResult, split_prepared

__all__ = ["run"]


def run(params: Params, prepared_dir: Path, out_dir: Path) -> SplitResult:
    """Split the prepared manifest into ``out_dir`` (``train.csv``, ``val.csv``, ``test.csv``)."""
    return split_prepared(prepared_dir, out_dir, params.split)
