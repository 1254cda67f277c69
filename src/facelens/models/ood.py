"""Out-of-distribution score from a model's own penultimate features (``FaceVGG.embed``).

The score of an image is its Mahalanobis distance to the nearest class mean of the training
features, under one covariance shared by the classes (Lee et al. 2018, "A simple unified
framework for detecting out-of-distribution samples"). The covariance is shrunk toward a
scaled identity with the Ledoit-Wolf weight, so it stays invertible when the features
outnumber the images or some features never fire. Without classes (the attributes task) there
is one mean. The threshold is the ``1 - false_alarm`` quantile of the validation scores:
about ``false_alarm`` of in-distribution images are flagged.

Saved beside the exported model as ``ood.npz`` (plain arrays, loaded with
``allow_pickle=False``); ``ModelMeta.ood_threshold`` says the model has one. A model exported
without it has no OOD score (:func:`load_ood` returns ``None``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelens._io import atomic_path
from facelens.errors import ModelFileError

__all__ = [
    "DEFAULT_FALSE_ALARM",
    "OOD_FILE",
    "OodDetector",
    "fit_ood",
    "ledoit_wolf_shrinkage",
    "load_ood",
]

#: Share of in-distribution (validation) images flagged at the calibrated threshold.
DEFAULT_FALSE_ALARM = 0.05
OOD_FILE = "ood.npz"
_ARRAYS = ("means", "whitening", "threshold", "false_alarm", "shrinkage", "val_flagged", "n_fit")


def ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """The Ledoit-Wolf weight of the scaled identity in the shrunk covariance of ``centred``
    ``(N, D)`` (rows already centred), in [0, 1]; the formula of
    ``sklearn.covariance.ledoit_wolf_shrinkage`` (without its blocking)."""
    x = np.asarray(centred, dtype=np.float64)
    n, d = x.shape
    x2 = x**2
    var = x2.sum(axis=0) / n
    mu = var.sum() / d
    beta_ = float((x2.T @ x2).sum())
    delta_ = float(((x.T @ x) ** 2).sum()) / n**2
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * var.sum() + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0.0 or delta <= 0.0 else float(beta / delta)


@dataclass(frozen=True)
class OodDetector:
    """Class means and the whitening of the shared covariance, plus the calibrated threshold.

    Attributes:
        means: ``(K, D)`` class means of the training features (K = 1 without classes).
        whitening: ``(D, D)`` ``W`` with ``W @ W.T`` the inverse shrunk covariance, so the
            Mahalanobis distance of ``f`` to ``m`` is ``||(f - m) @ W||``.
        threshold: scores above it are flagged.
        false_alarm: the share of validation images meant to be flagged.
        shrinkage: the Ledoit-Wolf weight used.
        val_flagged: the share of validation images actually flagged at ``threshold``.
        n_fit: training images the means and covariance rest on.
    """

    means: np.ndarray
    whitening: np.ndarray
    threshold: float
    false_alarm: float
    shrinkage: float
    val_flagged: float
    n_fit: int

    @property
    def dim(self) -> int:
        """Feature width ``D``."""
        return int(self.means.shape[1])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """``(N,)`` Mahalanobis distances of ``features`` ``(N, D)`` to the nearest class mean.

        Raises:
            ValueError: the features are not ``(N, D)`` with this detector's ``D``.
        """
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}); got {f.shape}")
        w = self.whitening.astype(np.float64)
        z = f @ w  # (N, D)
        zm = self.means.astype(np.float64) @ w  # (K, D)
        sq = (z**2).sum(1)[:, None] - 2.0 * z @ zm.T + (zm**2).sum(1)[None, :]
        return np.sqrt(np.maximum(sq.min(axis=1), 0.0))

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: scores above the threshold."""
        return np.asarray(scores) > self.threshold

    def save(self, model_dir: Path) -> Path:
        """Write ``model_dir/ood.npz`` atomically; returns its path."""
        path = Path(model_dir) / OOD_FILE
        arrays = {
            "means": self.means.astype(np.float32),
            "whitening": self.whitening.astype(np.float32),
            "threshold": np.float64(self.threshold),
            "false_alarm": np.float64(self.false_alarm),
            "shrinkage": np.float64(self.shrinkage),
            "val_flagged": np.float64(self.val_flagged),
            "n_fit": np.int64(self.n_fit),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path


def _whitening(cov: np.ndarray) -> np.ndarray:
    """``W = V diag(1 / sqrt(lambda))`` of the symmetric ``cov`` (eigenvalues floored)."""
    values, vectors = np.linalg.eigh(cov)
    floor = max(float(values.max(initial=0.0)), 1e-12) * 1e-9
    return vectors / np.sqrt(np.maximum(values, floor))[None, :]


def fit_ood(
    train: np.ndarray,
    labels: np.ndarray | None,
    val: np.ndarray,
    *,
    false_alarm: float = DEFAULT_FALSE_ALARM,
) -> OodDetector:
    """Fit the class means and the shrunk shared covariance on ``train`` features and set the
    threshold on ``val`` features so that about ``false_alarm`` of them are flagged.

    Args:
        train: ``(N, D)`` training features.
        labels: ``(N,)`` int class of each training row (rows below 0 are left out of the
            means and covariance), or ``None`` for one mean.
        val: ``(M, D)`` validation features, M >= 1.
        false_alarm: target share of flagged validation images, in (0, 1).

    Raises:
        ValueError: bad shapes, fewer than two usable training rows or no validation rows,
            or ``false_alarm`` outside (0, 1).
    """
    if not 0.0 < false_alarm < 1.0:
        raise ValueError(f"false_alarm must be in (0, 1); got {false_alarm}")
    x = np.asarray(train, dtype=np.float64)
    v = np.asarray(val, dtype=np.float64)
    if x.ndim != 2 or v.ndim != 2 or v.shape[1] != x.shape[1] or len(v) < 1:
        raise ValueError(f"need (N, D) train and (M>=1, D) val features; got {x.shape}, {v.shape}")
    y = np.zeros(len(x), np.int64) if labels is None else np.asarray(labels, np.int64)
    if y.shape != (len(x),):
        raise ValueError(f"labels must be ({len(x)},); got {y.shape}")
    keep = y >= 0
    x, y = x[keep], y[keep]
    if len(x) < 2:
        raise ValueError(f"need at least 2 labelled training rows; got {len(x)}")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / len(x)
    alpha = ledoit_wolf_shrinkage(centred)
    d = x.shape[1]
    shrunk = (1.0 - alpha) * cov + alpha * (np.trace(cov) / d) * np.eye(d)
    partial = OodDetector(means, _whitening(shrunk), np.inf, false_alarm, alpha, 0.0, len(x))
    val_scores = partial.scores(v)
    threshold = float(np.quantile(val_scores, 1.0 - false_alarm, method="higher"))
    flagged = float(np.mean(val_scores > threshold))
    return OodDetector(means, partial.whitening, threshold, false_alarm, alpha, flagged, len(x))


def load_ood(model_dir: Path, threshold: float | None) -> OodDetector | None:
    """The detector saved in ``model_dir``, or ``None`` when the model has none.

    Args:
        model_dir: the exported model folder.
        threshold: ``ModelMeta.ood_threshold`` (``None``: exported without a detector).

    Raises:
        ModelFileError: the meta names a threshold but ``ood.npz`` is missing, unreadable or
            holds another threshold.
    """
    if threshold is None:
        return None
    path = Path(model_dir) / OOD_FILE
    if not path.is_file():
        raise ModelFileError(
            f"{model_dir}/meta.json has ood_threshold={threshold} but {OOD_FILE} is missing; "
            "re-export the model with the train stage"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _ARRAYS}
    except (OSError, KeyError, ValueError) as err:
        raise ModelFileError(f"{path}: not a facelens OOD file ({err})") from err
    detector = OodDetector(
        means=arrays["means"],
        whitening=arrays["whitening"],
        threshold=float(arrays["threshold"]),
        false_alarm=float(arrays["false_alarm"]),
        shrinkage=float(arrays["shrinkage"]),
        val_flagged=float(arrays["val_flagged"]),
        n_fit=int(arrays["n_fit"]),
    )
    if not np.isclose(detector.threshold, threshold, rtol=1e-9, atol=0.0):
        raise ModelFileError(
            f"{path} holds threshold {detector.threshold} but meta.json says {threshold}; "
            "the two files come from different exports"
        )
    return detector
