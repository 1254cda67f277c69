"""UMAP layouts (slow: numba compiles UMAP on first use): determinism, class separation, 3-D."""

from __future__ import annotations

import numpy as np
import pytest

from facelens.constants import EXPRESSIONS
from facelens.manifold.analysis import run_manifold_analysis
from facelens.manifold.layouts import embed_2d
from facelens.manifold.quality import manifold_metrics


@pytest.mark.slow
def test_umap_2d_3d_deterministic_and_separatesblobs(blobs) -> None:
    X, labels = blobs()
    a = embed_2d(X, "umap", seed=1)
    b = embed_2d(X, "umap", seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (len(X), 2)
    c = embed_2d(X, "umap", seed=1, n_components=3)
    assert c.shape == (len(X), 3)
    assert manifold_metrics(X, a, labels)["knn_accuracy"] > 0.95
    assert embed_2d(X[:8], "umap", seed=0).shape == (8, 2)  # tiny set: n_neighbors adapted


@pytest.mark.slow
def test_run_manifold_analysis_with_umap3d(blobs) -> None:
    X, labels = blobs(n_per=10, n_classes=3)
    ids = [str(i) for i in range(len(X))]
    res = run_manifold_analysis(
        {"penultimate": X}, ids, labels, EXPRESSIONS, methods=("umap", "umap3d"), seed=0
    )
    assert res.layouts["penultimate/umap3d"].shape == (len(X), 3)
    assert "penultimate_umap3d" not in res.figures
    assert "scatter3d" in res.html["manifold.html"]
