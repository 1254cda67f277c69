"""What a model learns from a split: the tasks, their target columns, and the raw and
standardised target values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from facelens.constants import EXPRESSIONS
from facelens.errors import ConfigError, DataError

__all__ = [
    "ATTR_PREFIX",
    "TASKS",
    "attribute_stats",
    "check_stats",
    "check_task",
    "raw_targets",
    "standardise",
    "target_columns",
]

#: The tasks a dataset can serve.
TASKS: tuple[str, ...] = ("expression", "attributes")

#: Prefix of the manifest columns holding attribute scores.
ATTR_PREFIX = "attr_"


def check_task(task: str) -> None:
    """Raise :class:`ConfigError` unless ``task`` is one of :data:`TASKS`."""
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}; got {task!r}")


def target_columns(df: pd.DataFrame, task: str) -> list[str]:
    """Columns holding the targets of ``task``: ``["label"]`` or the ``attr_*`` columns.

    Raises:
        ConfigError: unknown task.
        DataError: no target column in ``df``.
    """
    check_task(task)
    if task == "expression":
        if "label" not in df.columns:
            raise DataError(f"task 'expression' needs a 'label' column; got {list(df.columns)}")
        return ["label"]
    cols = [c for c in df.columns if c.startswith(ATTR_PREFIX)]
    if not cols:
        raise DataError(
            "task 'attributes' needs attr_<name> columns but none were found "
            f"(columns: {list(df.columns)[:12]}...); use a source with attribute scores"
        )
    return cols


def attribute_stats(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-attribute mean and standard deviation (ddof=0, floored at 1e-6) as float32.

    Raises:
        DataError: no ``attr_*`` columns, or missing values in them.
    """
    values = df[target_columns(df, "attributes")].to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise DataError("attribute columns contain missing values; drop or impute those rows")
    mean = values.mean(axis=0)
    std = np.maximum(values.std(axis=0), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def raw_targets(
    rows: pd.DataFrame, task: str, labels: np.ndarray, ids: list[str]
) -> tuple[np.ndarray, list[str]]:
    """The targets of ``task`` on their original scale, and their names."""
    if task == "expression":
        if "label" not in rows.columns:
            raise DataError("task 'expression' needs a 'label' column in the rows")
        unknown = np.flatnonzero(labels < 0)
        if len(unknown):
            raise DataError(
                f"task 'expression' needs a label for every row; {len(unknown)} row(s) have "
                f"none (e.g. ids {[ids[i] for i in unknown[:3]]}). Filter them out or use "
                "task 'attributes'."
            )
        if (labels >= len(EXPRESSIONS)).any():
            raise DataError(f"labels must be in 0..{len(EXPRESSIONS) - 1}; got {labels.max()}")
        return labels.copy(), list(EXPRESSIONS)
    cols = target_columns(rows, task)
    values = rows[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    if np.isnan(values).any():
        r, c = np.argwhere(np.isnan(values))[0]
        raise DataError(
            f"attribute column {cols[c]!r} has a missing or non-numeric value (row id "
            f"{ids[r]}); every row needs every attribute"
        )
    return values, [c.removeprefix(ATTR_PREFIX) for c in cols]


def check_stats(
    stats: tuple[np.ndarray, np.ndarray] | None, raw: np.ndarray, task: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """``stats`` as float32 ``(mean, std)`` checked against ``raw``; None for expression."""
    if stats is None or task == "expression":
        return None
    mean = np.asarray(stats[0], np.float32).reshape(-1)
    std = np.asarray(stats[1], np.float32).reshape(-1)
    if mean.shape != (raw.shape[1],) or std.shape != (raw.shape[1],) or (std <= 0).any():
        raise ValueError(
            f"target_stats must be (mean, std) with {raw.shape[1]} values each and std > 0; "
            f"got shapes {mean.shape}, {std.shape}"
        )
    return mean, std


def standardise(raw: np.ndarray, task: str, stats: tuple[np.ndarray, np.ndarray] | None) -> Tensor:
    """The target tensor: labels as int64, attributes standardised by ``stats`` (if any)."""
    if task == "expression":
        return torch.from_numpy(raw.astype(np.int64))
    if stats is None:
        return torch.from_numpy(raw.astype(np.float32))
    return torch.from_numpy(((raw - stats[0]) / stats[1]).astype(np.float32))
