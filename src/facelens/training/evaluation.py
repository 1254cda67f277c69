"""Predictions and the metrics report of a trained model on a dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from facelens.models.vgg import FaceVGG
from facelens.training.loop import TASKS, collect_outputs
from facelens.training.metrics import classification_report, regression_report
from facelens.training.sources import ImageSource, eval_view

__all__ = ["evaluate", "predict"]


def predict(model: FaceVGG, ds: Dataset, *, batch_size: int = 128) -> np.ndarray:
    """Model outputs for every item of ``ds``, in order.

    Args:
        model: the model (its train/eval mode is restored afterwards).
        ds: a dataset (``FaceDataset`` preferred); an augmenting ``ImageTransform`` is
            replaced by its non-augmenting counterpart.
        batch_size: inference batch size.

    Returns:
        ``(N, num_outputs)`` float32: logits (expression) or attribute predictions
        de-standardised with ``ds.target_stats`` when the dataset has them.
    """
    out, _ = collect_outputs(model, ImageSource(eval_view(ds)), batch_size)
    pred = out.numpy().astype(np.float32)
    stats = getattr(ds, "target_stats", None)
    if stats is not None:
        pred = pred * np.asarray(stats[1], np.float32) + np.asarray(stats[0], np.float32)
    return pred


def evaluate(model: FaceVGG, ds: Dataset, task: str) -> dict[str, Any]:
    """The :mod:`~facelens.training.metrics` report of ``model`` on ``ds``.

    Args:
        model: the model.
        ds: a ``FaceDataset`` (uses ``raw_targets`` and ``target_names``).
        task: ``expression`` (classification report) or ``attributes`` (regression report).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    pred = predict(model, ds)
    raw = getattr(ds, "raw_targets", None)
    names = getattr(ds, "target_names", None) or [str(i) for i in range(pred.shape[1])]
    if raw is None:
        raise ValueError("evaluate needs a dataset with raw_targets (a FaceDataset)")
    if task == "expression":
        return classification_report(raw, pred.argmax(axis=1), names)
    return regression_report(raw, pred, names)
