"""How good is a layout? Trustworthiness, k-NN accuracy (in the layout and in the input) and
silhouette; none of them changes under the similarity transforms used for alignment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from facelens.manifold.layouts import check_matrix

__all__ = [
    "class_name",
    "encode_labels",
    "knn_accuracy",
    "manifold_metrics",
]


def encode_labels(labels: np.ndarray | Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the samples, got {arr.shape}.")
    classes, codes = np.unique(arr, return_inverse=True)
    return classes, codes.astype(np.int64)


def knn_accuracy(Y: np.ndarray, labels: np.ndarray | Sequence[Any], k: int = 5) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote in a layout.

    Equivalent to leave-one-out cross-validation of
    ``sklearn.neighbors.KNeighborsClassifier(n_neighbors=k)`` (uniform weights, ties to the
    smallest class), computed with one neighbour search instead of N fits.

    Args:
        Y: Layout or feature matrix, shape ``(N, d)``.
        labels: One label per sample, shape ``(N,)`` (any sortable values).
        k: Neighbours per vote; reduced to ``N - 1`` on tiny sets.

    Returns:
        Fraction of samples whose label equals the vote of their k nearest other samples.
    """
    from sklearn.neighbors import NearestNeighbors

    arr = check_matrix(Y, "Y")
    n = arr.shape[0]
    _, codes = encode_labels(labels, n)
    if n < 2:
        raise ValueError(f"knn_accuracy needs at least 2 samples, got {n}.")
    kk = max(1, min(k, n - 1))
    # X=None: each indexed point's neighbours, excluding the point itself (leave-one-out).
    neigh = NearestNeighbors(n_neighbors=kk).fit(arr).kneighbors(return_distance=False)
    votes = codes[neigh]  # (N, k)
    n_classes = int(codes.max()) + 1
    counts = np.zeros((n, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), kk), votes.ravel()), 1)
    predicted = counts.argmax(axis=1)  # ties -> smallest class, as scipy.stats.mode
    return float(np.mean(predicted == codes))


def manifold_metrics(
    X: np.ndarray,
    Y2d: np.ndarray,
    labels: np.ndarray | Sequence[Any] | None,
    *,
    k: int = 5,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Quality of one layout: neighbourhood preservation and class structure.

    Args:
        X: Original samples, shape ``(N, D)``.
        Y2d: Their layout, shape ``(N, d)``.
        labels: Class label per sample (``(N,)``) or ``None`` when there are no classes.
        k: Neighbourhood size for trustworthiness and the k-NN vote (shrunk on tiny sets).
        label_names: Names for integer labels ``0..C-1`` in ``silhouette_per_class``.

    Returns:
        ``n``, ``k``, ``trustworthiness`` (sklearn, in [0, 1]), and with labels also
        ``knn_accuracy`` (leave-one-out, in the layout), ``knn_accuracy_input`` (the same in
        the original space, to show what the layout loses), ``knn_chance`` (majority-class
        rate), ``silhouette`` (mean, in the layout; NaN unless 2 <= classes < N) and
        ``silhouette_per_class`` (class name -> mean silhouette of its samples).
    """
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_samples

    xa = check_matrix(X)
    ya = check_matrix(Y2d, "Y2d")
    n = xa.shape[0]
    if ya.shape[0] != n:
        raise ValueError(f"X has {n} rows but Y2d has {ya.shape[0]}; pass the layout of X.")
    if n < 4:
        raise ValueError(f"manifold_metrics needs at least 4 samples, got {n}.")
    # sklearn requires n_neighbors < n_samples / 2.
    kt = max(1, min(k, math.ceil(n / 2) - 1))
    out: dict[str, Any] = {
        "n": n,
        "k": kt,
        "trustworthiness": float(trustworthiness(xa, ya, n_neighbors=kt)),
    }
    if labels is None:
        return out
    classes, codes = encode_labels(labels, n)
    out["knn_accuracy"] = knn_accuracy(ya, codes, k=k)
    out["knn_accuracy_input"] = knn_accuracy(xa, codes, k=k)
    out["knn_chance"] = float(np.bincount(codes).max() / n)
    if 2 <= len(classes) <= n - 1:
        sil = silhouette_samples(ya, codes)
        out["silhouette"] = float(sil.mean())
        per_class: dict[str, float] = {}
        for i, c in enumerate(classes):
            name = class_name(c, label_names)
            per_class[name] = float(sil[codes == i].mean())
        out["silhouette_per_class"] = per_class
    else:
        out["silhouette"] = float("nan")
        out["silhouette_per_class"] = {}
    return out


def class_name(value: Any, label_names: Sequence[str] | None) -> str:
    if (
        label_names is not None
        and isinstance(value, (int, np.integer))
        and 0 <= int(value) < len(label_names)
    ):
        return str(label_names[int(value)])
    return str(value)
