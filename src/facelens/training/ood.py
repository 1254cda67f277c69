"""Calibrate the out-of-distribution detector of a trained model (:mod:`facelens.models.ood`)
on its training and validation splits and save it with the exported model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facelens.data.dataset import FaceDataset
from facelens.device import model_device, model_input
from facelens.interrupts import raise_if_requested
from facelens.models.export import attach_ood, export_model
from facelens.models.meta import ModelMeta
from facelens.models.ood import DEFAULT_FALSE_ALARM, OodDetector, fit_ood
from facelens.models.vgg import FaceVGG
from facelens.training.recipe import TrainedModel

__all__ = ["calibrate_ood", "embed_dataset", "export_with_ood", "fit_split_ood"]


def embed_dataset(model: FaceVGG, ds: FaceDataset, *, batch_size: int = 128) -> np.ndarray:
    """``(N, D)`` float64 penultimate features (:meth:`FaceVGG.embed`) of every item of ``ds``,
    in eval mode and fp32 on the model's device, as the served model computes them."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for idx in torch.split(torch.arange(len(ds)), batch_size):
                raise_if_requested()
                x, _ = ds.get_batch(idx)
                feats = model.embed(model_input(x, device))
                out.append(feats.float().cpu().numpy().astype(np.float64))
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.embedding_dim), np.float64)
    return np.concatenate(out)


def fit_split_ood(
    model: FaceVGG,
    meta: ModelMeta,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    root: Path,
    *,
    false_alarm: float = DEFAULT_FALSE_ALARM,
) -> OodDetector:
    """Fit the detector on the training split's features (class means by expression label;
    one mean for attributes) and set its threshold on the validation split."""
    transform = meta.eval_transform()

    def dataset(rows: pd.DataFrame) -> FaceDataset:
        return FaceDataset(rows, root, meta.task, meta.input_size, transform)

    train_ds = dataset(train_rows)
    labels = train_ds.labels if meta.task == "expression" else None
    return fit_ood(
        embed_dataset(model, train_ds),
        labels,
        embed_dataset(model, dataset(val_rows)),
        false_alarm=false_alarm,
    )


def calibrate_ood(
    trained: TrainedModel,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    root: Path,
    model_dir: Path,
    *,
    false_alarm: float = DEFAULT_FALSE_ALARM,
) -> TrainedModel:
    """Fit the detector of an exported model (:func:`fit_split_ood`) and attach it to
    ``model_dir`` (``ood.npz``, threshold in ``meta.json``).

    Returns:
        ``trained`` with the updated meta (what the served signature is made from).
    """
    detector = fit_split_ood(
        trained.model, trained.meta, train_rows, val_rows, root, false_alarm=false_alarm
    )
    meta = attach_ood(model_dir, trained.meta, detector)
    return dataclasses.replace(trained, meta=meta)


def export_with_ood(
    trained: TrainedModel,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    root: Path,
    model_dir: Path,
    *,
    false_alarm: float = DEFAULT_FALSE_ALARM,
) -> TrainedModel:
    """Export ``trained`` to ``model_dir`` (:func:`~facelens.models.export.export_model`) and
    attach its calibrated detector (:func:`calibrate_ood`): what the train stage saves.

    Returns:
        ``trained`` with the meta written to ``model_dir/meta.json``.
    """
    export_model(trained.model, trained.meta, model_dir)
    return calibrate_ood(trained, train_rows, val_rows, root, model_dir, false_alarm=false_alarm)
