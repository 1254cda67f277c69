"""Layouts of different runs made comparable: each is aligned to the reference layout of its data
version on a fixed, seeded subset of sample ids with orthogonal Procrustes (centring, uniform
scaling, rotation and reflection).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facelens.manifold.layouts import check_matrix

__all__ = [
    "MIN_ANCHORS",
    "align_to_reference",
    "alignment_subset",
]


MIN_ANCHORS = 3


def alignment_subset(ids: Sequence[str], size: int, seed: int) -> list[str]:
    """Choose the fixed anchor subset used to align layouts across runs.

    The choice depends only on the *set* of ids, the size and the seed (ids are sorted before
    a seeded draw), so every run over the same data version picks the same anchors.

    Args:
        ids: Sample ids (unique).
        size: Number of anchors; all ids when ``size >= len(ids)``.
        seed: Seed of the draw.

    Returns:
        The chosen ids, sorted.
    """
    unique = sorted({str(i) for i in ids})
    if len(unique) != len(ids):
        raise ValueError(f"ids must be unique; got {len(ids)} ids but {len(unique)} distinct.")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}.")
    if size >= len(unique):
        return unique
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(unique), size=size, replace=False)
    return sorted(unique[i] for i in chosen)


def align_to_reference(
    layout: np.ndarray,
    ids: Sequence[str],
    reference_layout: np.ndarray,
    reference_ids: Sequence[str],
) -> np.ndarray:
    """Map a layout onto a reference layout by a similarity transform fitted on shared ids.

    Fits centring, one uniform scale and an orthogonal map (rotation, reflection allowed;
    ``scipy.linalg.orthogonal_procrustes``) on the ids present in both, then applies it to
    *every* point of ``layout``.

    Args:
        layout: Layout to align, shape ``(N, d)``.
        ids: Its sample ids, length ``N``.
        reference_layout: Reference layout, shape ``(M, d)``.
        reference_ids: Reference sample ids, length ``M``.

    Returns:
        The aligned layout, shape ``(N, d)`` (a new array; inputs are not modified).

    Raises:
        ValueError: Shape or id mismatch, fewer than 3 shared ids, or a degenerate layout.
    """
    from scipy.linalg import orthogonal_procrustes

    a = check_matrix(layout, "layout")
    b = check_matrix(reference_layout, "reference_layout")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"layout has {a.shape[1]} dimensions but the reference has {b.shape[1]}; "
            "align layouts of the same method and n_components."
        )
    if len(ids) != a.shape[0] or len(reference_ids) != b.shape[0]:
        raise ValueError(
            f"ids ({len(ids)}) and reference_ids ({len(reference_ids)}) must match the layout "
            f"rows ({a.shape[0]}, {b.shape[0]})."
        )
    pos_a = {str(i): r for r, i in enumerate(ids)}
    pos_b = {str(i): r for r, i in enumerate(reference_ids)}
    shared = sorted(pos_a.keys() & pos_b.keys())
    if len(shared) < MIN_ANCHORS:
        raise ValueError(
            f"only {len(shared)} ids are shared with the reference, at least {MIN_ANCHORS} "
            "are needed; build the reference from the same data version."
        )
    sa = a[[pos_a[i] for i in shared]]
    sb = b[[pos_b[i] for i in shared]]
    mu_a, mu_b = sa.mean(axis=0), sb.mean(axis=0)
    ca, cb = sa - mu_a, sb - mu_b
    na, nb = float(np.linalg.norm(ca)), float(np.linalg.norm(cb))
    if na == 0.0 or nb == 0.0:
        raise ValueError("the shared points collapse to a single point; cannot align.")
    rot, scale = orthogonal_procrustes(ca / na, cb / nb)
    # Optimal scale for unit-norm ca @ rot onto unit-norm cb is the sum of singular values.
    return ((a - mu_a) / na) @ rot * (scale * nb) + mu_b
