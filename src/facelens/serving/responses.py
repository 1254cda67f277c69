"""The served model's response: model outputs as probabilities or ratings, one record per input
row (values or nulls, CAM columns, ``error`` and ``message``) and JSON-safe frames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from facelens.models.meta import ModelMeta
from facelens.serving.requests import RowError
from facelens.serving.schema import CAM_COLUMNS, OOD_COLUMNS

__all__ = ["json_safe", "record", "row_records", "to_outputs"]


def to_outputs(meta: ModelMeta, raw: np.ndarray) -> np.ndarray:
    """Softmax probabilities (expression) or ratings on the original scale (attributes) from
    the model's raw (N, K) outputs."""
    if meta.task == "expression":
        shifted = raw - raw.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    if meta.target_mean is not None and meta.target_std is not None:
        return raw * np.asarray(meta.target_std) + np.asarray(meta.target_mean)
    return raw


def record(
    meta: ModelMeta,
    values: np.ndarray | None,
    error: RowError | None,
    explain: bool,
    ood_score: float | None = None,
) -> dict[str, Any]:
    """One response row: the values (None for a failed row), the OOD score and flag when the
    model has a detector (None for a failed row), empty CAM columns when explaining,
    ``error`` and ``message``."""
    names = meta.output_names
    expression = meta.task == "expression"
    prefix = "p_" if expression else ""
    cams = dict.fromkeys(CAM_COLUMNS, "") if explain else {}
    ood: dict[str, Any] = {}
    if meta.ood_threshold is not None:
        ood = dict.fromkeys(OOD_COLUMNS, None)
        if values is not None and ood_score is not None:
            ood = {"ood_score": float(ood_score), "ood": bool(ood_score > meta.ood_threshold)}
    if values is None:
        rec: dict[str, Any] = dict.fromkeys((f"{prefix}{n}" for n in names), None)
        if expression:
            rec["label"] = ""
        rec.update(ood)
        rec.update(cams)
        rec["error"] = error.code if error else "internal"
        rec["message"] = error.message if error else "no prediction was made"
        return rec
    rec = {f"{prefix}{n}": float(v) for n, v in zip(names, values, strict=True)}
    if expression:
        rec["label"] = names[int(np.argmax(values))]
    rec.update(ood)
    rec.update(cams)
    rec["error"] = error.code if error else ""
    rec["message"] = error.message if error else ""
    return rec


def row_records(
    meta: ModelMeta,
    n_rows: int,
    good: Sequence[int],
    outputs: np.ndarray,
    cams: Sequence[dict[str, str] | RowError | None],
    errors: Sequence[RowError | None],
    explain: bool,
    ood_scores: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The response rows in input order: ``good`` rows get ``outputs``, ``cams`` and
    ``ood_scores`` (in the order of ``good``), the others their decoding error."""
    records = []
    by_row = {i: (outputs[k], cams[k]) for k, i in enumerate(good)}
    score = {i: float(ood_scores[k]) for k, i in enumerate(good)} if ood_scores is not None else {}
    for i in range(n_rows):
        if i not in by_row:
            records.append(record(meta, None, errors[i], explain))
            continue
        value, cam = by_row[i]
        problem = cam if isinstance(cam, RowError) else None
        records.append(record(meta, value, problem, explain, score.get(i)))
        if isinstance(cam, dict):
            records[-1].update(cam)
    return records


def json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the NaN of failed rows as None, so the served JSON says null."""
    # pandas stores the None of failed rows as NaN in float columns; turn those columns into
    # objects holding None so the served JSON says null. All-ok columns stay float64.
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f" and out[col].isna().any():
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out
