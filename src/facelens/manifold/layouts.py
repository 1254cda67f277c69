"""Layouts of embeddings: PCA, t-SNE or UMAP in two or three dimensions."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

__all__ = [
    "EMBED_METHODS",
    "LAYOUT_METHODS",
    "Method",
    "check_matrix",
    "embed_2d",
]


Method = Literal["pca", "tsne", "umap"]


#: Embedding algorithms accepted by :func:`embed_2d`.
EMBED_METHODS: tuple[str, ...] = ("pca", "tsne", "umap")


#: Layout names accepted by :func:`run_manifold_analysis` (``umap3d`` = UMAP with 3 components).
LAYOUT_METHODS: tuple[str, ...] = ("pca", "tsne", "umap", "umap3d")


def check_matrix(X: np.ndarray, name: str = "X") -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}; "
            "flatten each sample's embedding first."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; drop or impute those rows.")
    return arr


def embed_2d(
    X: np.ndarray,
    method: Method,
    seed: int,
    n_components: int = 2,
    *,
    perplexity: float | None = None,
    n_neighbors: int | None = None,
) -> np.ndarray:
    """Embed samples in a low-dimensional layout.

    Args:
        X: Samples, shape ``(N, D)``.
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        seed: Random seed; the same seed and input give the same layout.
        n_components: Output dimensionality (2 or 3; PCA allows up to ``min(N, D)``).
        perplexity: t-SNE perplexity; default ``min(30, (N - 1) / 3)`` (at least 1), so
            that small sets stay below sklearn's ``perplexity < N`` limit.
        n_neighbors: UMAP neighbourhood size; default ``min(15, N - 1)``.

    Returns:
        Layout, shape ``(N, n_components)``, float64.

    Raises:
        ValueError: Unknown method, too few samples, or a non-finite input.

    Note:
        UMAP is given ``random_state=seed`` and therefore runs single-threaded
        (``n_jobs=1``); that is the price of a reproducible layout.
    """
    arr = check_matrix(X)
    n = arr.shape[0]
    if method not in EMBED_METHODS:
        raise ValueError(f"method must be one of {EMBED_METHODS}, got {method!r}.")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}.")
    if n < n_components + 2:
        raise ValueError(
            f"{method} needs at least n_components + 2 = {n_components + 2} samples, got {n}; "
            "embed a larger set."
        )

    if method == "pca":
        return _pca(arr, n_components, seed)
    if method == "tsne":
        return _tsne(arr, n_components, seed, perplexity)
    return _umap(arr, n_components, seed, n_neighbors)


def _pca(arr: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    n, d = arr.shape
    if n_components > min(n, d):
        raise ValueError(
            f"PCA can give at most min(n_samples, n_features) = {min(n, d)} components, "
            f"got n_components={n_components}."
        )
    # "auto" picks a seeded randomized SVD for wide inputs (4096-D features: ~1 s, not 10 s).
    pca = PCA(n_components=n_components, svd_solver="auto", random_state=seed)
    return np.asarray(pca.fit_transform(arr), dtype=np.float64)


def _tsne(arr: np.ndarray, n_components: int, seed: int, perplexity: float | None) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(arr)
    perp = perplexity if perplexity is not None else max(1.0, min(30.0, (n - 1) / 3.0))
    if not 0 < perp < n:
        raise ValueError(f"t-SNE perplexity must lie in (0, {n}) for {n} samples, got {perp}.")
    tsne = TSNE(
        n_components=n_components,
        perplexity=perp,
        init="pca",
        learning_rate="auto",
        random_state=seed,
        method="barnes_hut" if n_components <= 3 else "exact",
    )
    return np.asarray(tsne.fit_transform(arr), dtype=np.float64)


def _umap(arr: np.ndarray, n_components: int, seed: int, n_neighbors: int | None) -> np.ndarray:
    import umap

    n = len(arr)
    k = n_neighbors if n_neighbors is not None else min(15, n - 1)
    if not 2 <= k < n:
        raise ValueError(f"UMAP n_neighbors must lie in [2, {n - 1}] for {n} samples, got {k}.")
    # Spectral init solves for n_components + 1 eigenvectors; on tiny sets it fails and
    # UMAP falls back noisily, so start from a seeded random layout there.
    init = "spectral" if n > 4 * (n_components + 1) else "random"
    reducer = umap.UMAP(
        n_components=n_components,
        n_neighbors=k,
        init=init,
        random_state=seed,
        transform_seed=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # Fully disconnected small graphs and numba's deprecation chatter are not actionable.
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        layout = reducer.fit_transform(arr)
    return np.asarray(layout, dtype=np.float64)
