"""What the ``manifold`` stage lays out: penultimate embeddings of a seeded, fixed subset of
the test split, and the compact metrics that ``dvc metrics`` shows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from facelens.data.dataset import FaceDataset
from facelens.device import model_device, model_input
from facelens.manifold.alignment import alignment_subset
from facelens.manifold.params import ManifoldParams
from facelens.models.meta import ModelMeta
from facelens.models.vgg import FaceVGG

__all__ = ["compact_metrics", "manifold_features", "manifold_subset", "reference_path"]


def manifold_features(
    model: FaceVGG, meta: ModelMeta, ds: FaceDataset, *, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Penultimate embeddings (and, for the attributes task, predicted attribute vectors).

    Args:
        model: the exported model (used in eval mode, no gradients).
        meta: its metadata.
        ds: the samples (uint8 images; normalised here with the model's statistics).
        batch_size: images per forward pass.

    Returns:
        ``{"penultimate": (N, D)}`` plus ``{"attributes": (N, A)}`` (rating scale) for the
        attributes task.
    """
    tf = meta.eval_transform()
    device = model_device(model)
    was_training = model.training
    model.eval()
    emb: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(ds), batch_size):
                xb = model_input(tf(ds.images[start : start + batch_size]), device)
                e = model.embed(xb)  # (B, D)
                emb.append(e.float().cpu().numpy())
                outs.append(model.classifier[-1](e).float().cpu().numpy())
    finally:
        model.train(was_training)
    feats = {"penultimate": np.concatenate(emb).astype(np.float64)}
    if meta.task == "attributes":
        pred = np.concatenate(outs)
        if meta.target_mean is not None and meta.target_std is not None:
            pred = pred * np.asarray(meta.target_std) + np.asarray(meta.target_mean)
        feats["attributes"] = pred.astype(np.float64)
    return feats


def manifold_subset(rows: pd.DataFrame, params: ManifoldParams) -> pd.DataFrame:
    """The seeded, fixed subset of ``rows`` (``params.max_points``), sorted by id: the same
    data version gives the same subset in every run."""
    keep = set(alignment_subset(rows["id"].astype(str).tolist(), params.max_points, params.seed))
    sub = rows[rows["id"].astype(str).isin(keep)]
    return sub.sort_values("id", key=lambda s: s.astype(str), kind="mergesort").reset_index(
        drop=True
    )


def compact_metrics(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The headline manifold ``metrics.json`` for ``dvc metrics``: the trustworthiness
    (``trust``) of the main layout, the penultimate embedding's first method
    (``manifold.methods[0]``). Every layout's numbers (k-NN accuracy, silhouette, ...) stay
    in ``metrics_details.json`` and the run. One short key, so that ``dvc metrics show`` of
    the three metrics files and ``dvc exp show`` fit a 120-column terminal."""
    layouts = doc.get("layouts", {})
    methods = doc.get("meta", {}).get("methods") or []
    main = f"penultimate/{methods[0]}" if methods else next(iter(layouts), None)
    value = (layouts.get(main, {}) if main else {}).get("trustworthiness")
    return {} if value is None else {"trust": value}


def reference_path(reference_dir: Path, data_version: str) -> Path:
    """Where the manifold reference layout of a data version lives (outside DVC outputs)."""
    return Path(reference_dir) / f"{data_version}.json"
