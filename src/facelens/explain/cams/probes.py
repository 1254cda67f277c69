"""The fixed, seeded probe set: the same data version gives the same probes in every run."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

__all__ = ["probe_set"]


def _stable_key(seed: int, row_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def probe_set(
    rows: pd.DataFrame,
    per_class: int,
    seed: int,
    *,
    label_column: str = "label",
    id_column: str = "id",
) -> pd.DataFrame:
    """Pick a fixed, seeded probe set: ``per_class`` rows of each class.

    Selection ranks rows by a hash of ``(seed, id)``, so it depends only on the set of ids (not
    on row order) and is stable when rows are added: a class's probes change only if a new id
    hashes before them. CAM grids of runs on the same data version therefore line up.

    Args:
        rows: manifest/split rows with ``id`` and ``label`` columns (not modified).
        per_class: rows per class (fewer if a class has fewer).
        seed: selection seed.
        label_column: class column; rows with an empty label are ignored, unless no row has a
            label (attributes task): then ``per_class`` rows are taken from all rows.
        id_column: unique id column.

    Returns:
        The selected rows (all columns), sorted by label then id, with a fresh index.

    Raises:
        ValueError: missing columns, duplicate ids, or ``per_class < 1``.
    """
    missing = [c for c in (id_column, label_column) if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}; columns are {list(rows.columns)}.")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}.")
    ids = rows[id_column].astype(str)
    if ids.duplicated().any():
        dupes = sorted(set(ids[ids.duplicated()]))[:5]
        raise ValueError(f"ids must be unique; duplicated: {dupes}.")
    frame = rows.assign(_pid=ids.to_numpy()).sort_values("_pid", kind="mergesort")
    frame = frame.assign(
        _key=[_stable_key(seed, i) for i in frame["_pid"]],
        _lab=pd.to_numeric(frame[label_column], errors="coerce").to_numpy(dtype=float),
    )
    labelled = frame[np.isfinite(frame["_lab"].to_numpy())]
    pool = labelled if len(labelled) else frame.assign(_lab=-1.0)
    picked = (
        pool.sort_values(["_key", "_pid"], kind="mergesort")
        .groupby("_lab", sort=True)
        .head(per_class)
        .sort_values(["_lab", "_pid"], kind="mergesort")
    )
    return picked.drop(columns=["_pid", "_key", "_lab"]).reset_index(drop=True)
