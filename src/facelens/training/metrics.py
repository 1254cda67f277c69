"""Pure metrics on numpy arrays: accuracy, F1, confusion, Pearson/Spearman with CIs.

Every function takes array-likes, never mutates them and returns plain Python floats or new
numpy arrays. Undefined quantities (a constant column's correlation, a CI with n <= 3) are
``nan``; the reports keep them as ``float('nan')``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata

__all__ = [
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "correlation_ci",
    "macro_f1",
    "mean_r",
    "pearson_columns",
    "per_class_f1",
    "regression_report",
    "spearman_columns",
]


def _labels(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length; got {t.size}, {p.size}")
    if t.size == 0:
        raise ValueError("metrics need at least one sample; got 0")
    return t.astype(np.int64), p.astype(np.int64)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of predictions equal to the true labels."""
    t, p = _labels(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts ``(num_classes, num_classes)``; rows are true classes, columns predictions.

    Raises:
        ValueError: a label outside ``0..num_classes-1``.
    """
    t, p = _labels(y_true, y_pred)
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.min() < 0 or arr.max() >= num_classes:
            raise ValueError(
                f"{name} has labels outside 0..{num_classes - 1}: {sorted(set(arr.tolist()))[:8]}"
            )
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """F1 of each class ``(num_classes,)``; 0 where a class has no support and no predictions."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # 2 tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return f1


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` or ``y_pred``.

    Matches ``sklearn.metrics.f1_score(average="macro")`` with its default labels, so a
    class absent from a small validation split does not count as a zero.
    """
    t, p = _labels(y_true, y_pred)
    c = int(max(t.max(), p.max()) + 1) if num_classes is None else num_classes
    present = np.union1d(np.unique(t), np.unique(p))
    return float(np.mean(per_class_f1(t, p, c)[present]))


def _columns(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y_true and y_pred must both be (N, A); got {t.shape} and {p.shape}")
    if t.shape[0] < 2:
        raise ValueError(f"correlations need at least 2 samples; got {t.shape[0]}")
    return t, p


def _pearson(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    tc = t - t.mean(axis=0)
    pc = p - p.mean(axis=0)
    denom = np.sqrt((tc**2).sum(axis=0) * (pc**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denom > 0, (tc * pc).sum(axis=0) / np.where(denom > 0, denom, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def pearson_columns(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Pearson r of each column ``(A,)``; ``nan`` where a column is constant."""
    return _pearson(*_columns(y_true, y_pred))


def spearman_columns(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Spearman rho of each column ``(A,)`` (Pearson r of average ranks)."""
    t, p = _columns(y_true, y_pred)
    return _pearson(rankdata(t, axis=0), rankdata(p, axis=0))


def correlation_ci(
    r: ArrayLike, n: int, *, level: float = 0.95, spearman: bool = False
) -> np.ndarray:
    """Confidence interval of correlations by the Fisher z transform.

    Args:
        r: correlations (any shape).
        n: number of samples.
        level: confidence level.
        spearman: use the Fieller et al. (1957) standard error ``sqrt(1.06 / (n - 3))``
            appropriate for Spearman's rho instead of ``1 / sqrt(n - 3)``.

    Returns:
        ``(..., 2)`` lower and upper bounds; ``nan`` when ``n <= 3`` or ``r`` is ``nan``.
    """
    r_arr = np.asarray(r, dtype=np.float64)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if n <= 3:
        return np.full((*r_arr.shape, 2), np.nan)
    se = math.sqrt((1.06 if spearman else 1.0) / (n - 3))
    zcrit = float(norm.ppf(0.5 + level / 2))
    z = np.arctanh(np.clip(r_arr, -1 + 1e-12, 1 - 1e-12))
    return np.stack([np.tanh(z - zcrit * se), np.tanh(z + zcrit * se)], axis=-1)


def mean_r(r: ArrayLike) -> float:
    """Mean of correlations ignoring ``nan``; ``nan`` when all are ``nan``."""
    arr = np.asarray(r, dtype=np.float64)
    if arr.size == 0 or np.isnan(arr).all():
        return float("nan")
    return float(np.nanmean(arr))


def classification_report(
    y_true: ArrayLike, y_pred: ArrayLike, names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1 and support, confusion matrix (JSON-friendly).

    Args:
        y_true: true labels ``(N,)``.
        y_pred: predicted labels ``(N,)`` (or scores ``(N, C)``, reduced by argmax).
        names: class names, index = label.
    """
    pred = np.asarray(y_pred)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    t, p = _labels(y_true, pred)
    c = len(names)
    cm = confusion_matrix(t, p, c)
    f1 = per_class_f1(t, p, c)
    return {
        "n": int(t.size),
        "accuracy": accuracy(t, p),
        "macro_f1": macro_f1(t, p, c),
        "per_class_f1": {name: float(v) for name, v in zip(names, f1, strict=True)},
        "support": {name: int(v) for name, v in zip(names, cm.sum(axis=1), strict=True)},
        "confusion_matrix": cm.tolist(),
        "names": list(names),
    }


def regression_report(
    y_true: ArrayLike, y_pred: ArrayLike, names: Sequence[str], *, level: float = 0.95
) -> dict[str, Any]:
    """Per-output Pearson and Spearman correlations with Fisher-z CIs, and their means.

    Returns:
        ``{"n", "pearson": {name: r}, "pearson_ci": {name: [lo, hi]}, "spearman",
        "spearman_ci", "mean_pearson", "mean_spearman", "names"}``.
    """
    t, p = _columns(y_true, y_pred)
    if t.shape[1] != len(names):
        raise ValueError(f"{t.shape[1]} output columns but {len(names)} names")
    n = t.shape[0]
    pr = pearson_columns(t, p)
    sr = spearman_columns(t, p)
    pci = correlation_ci(pr, n, level=level)
    sci = correlation_ci(sr, n, level=level, spearman=True)
    return {
        "n": int(n),
        "pearson": {k: float(v) for k, v in zip(names, pr, strict=True)},
        "pearson_ci": {k: [float(a), float(b)] for k, (a, b) in zip(names, pci, strict=True)},
        "spearman": {k: float(v) for k, v in zip(names, sr, strict=True)},
        "spearman_ci": {k: [float(a), float(b)] for k, (a, b) in zip(names, sci, strict=True)},
        "mean_pearson": mean_r(pr),
        "mean_spearman": mean_r(sr),
        "names": list(names),
    }
