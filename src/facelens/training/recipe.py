"""One training recipe shared by the ``tune`` trials and the final ``train`` stage.

It composes the pieces (model builder, datasets, ``fit``) from typed params plus the
hyper-parameters a trial or ``best_params.json`` chose; it never imports mlflow or optuna
(reporting enters through ``callbacks``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facelens.constants import EXPRESSIONS
from facelens.data.dataset import FaceDataset
from facelens.data.targets import attribute_stats, target_columns
from facelens.data.transforms import make_transform
from facelens.device import DevicePolicy
from facelens.models.build import build_model
from facelens.models.cache import ActivationCache
from facelens.models.meta import ModelMeta
from facelens.models.norm import norm_stats
from facelens.models.params import ModelParams
from facelens.models.vgg import FaceVGG
from facelens.training.fit import fit
from facelens.training.history import Callback, History
from facelens.training.params import TrainParams

__all__ = ["Recipe", "TrainedModel", "make_recipe", "train_model"]

#: Keys of a trial / best_params.json that configure the model rather than the loop.
MODEL_KEYS = ("arch",)


@dataclass(frozen=True)
class Recipe:
    """Everything that defines one training run, resolved and validated."""

    task: str
    model: ModelParams
    train: TrainParams

    def describe(self) -> dict[str, Any]:
        """Flat, JSON-friendly description (for MLflow params)."""
        out = {f"model.{k}": v for k, v in self.model.model_dump(mode="json").items()}
        out.update({f"train.{k}": v for k, v in self.train.model_dump(mode="json").items()})
        out["task"] = self.task
        return out


@dataclass
class TrainedModel:
    """A fitted model, its metadata and its training history."""

    model: FaceVGG
    meta: ModelMeta
    history: History


def make_recipe(
    task: str,
    model: ModelParams,
    train: TrainParams,
    overrides: Mapping[str, Any] | None = None,
    *,
    keep_epochs: bool = False,
) -> Recipe:
    """Apply trial / best-params overrides to the params sections.

    Args:
        task: ``expression`` or ``attributes``.
        model: the ``model`` params section.
        train: the ``train`` params section.
        overrides: hyper-parameters chosen by a trial (keys of the search space).
        keep_epochs: keep ``train.epochs`` even when ``overrides`` has ``epochs`` (the final
            training uses its own epoch budget; tuning trials use the trial's cap).

    Raises:
        ValueError: an override key is neither a model nor a training parameter.
    """
    overrides = dict(overrides or {})
    model_upd = {k: overrides.pop(k) for k in MODEL_KEYS if k in overrides}
    if keep_epochs:
        overrides.pop("epochs", None)
    unknown = sorted(set(overrides) - set(TrainParams.model_fields))
    if unknown:
        allowed = ", ".join(sorted(set(TrainParams.model_fields) | set(MODEL_KEYS)))
        raise ValueError(f"unknown hyper-parameter(s) {unknown}; allowed: {allowed}")
    return Recipe(
        task=task,
        model=ModelParams.model_validate({**model.model_dump(), **model_upd}),
        train=TrainParams.model_validate({**train.model_dump(), **overrides}),
    )


def output_names(task: str, rows: pd.DataFrame) -> list[str]:
    """Class names (expression) or attribute names (attributes) the head predicts."""
    if task == "expression":
        return list(EXPRESSIONS)
    return [c.removeprefix("attr_") for c in target_columns(rows, task)]


def build_datasets(
    recipe: Recipe,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    root: Path,
    norm: tuple[tuple[float, ...], tuple[float, ...]],
    *,
    memo: dict[tuple[Any, ...], FaceDataset] | None = None,
) -> tuple[FaceDataset, FaceDataset, tuple[np.ndarray, np.ndarray] | None]:
    """Datasets for training (augmented per the recipe) and validation.

    Args:
        memo: decoded datasets shared by calls on the *same* rows (the trials of one study):
            images are decoded once per split and input size, then only the transform changes.
    """
    size = recipe.model.input_size
    stats = attribute_stats(train_rows) if recipe.task == "attributes" else None
    train_tf = make_transform(
        size, train=True, augment=recipe.train.augment, norm_mean=norm[0], norm_std=norm[1]
    )
    val_tf = make_transform(size, train=False, augment=0.0, norm_mean=norm[0], norm_std=norm[1])

    decoded_sets = {} if memo is None else memo

    def decoded(role: str, rows: pd.DataFrame) -> FaceDataset:
        key = (role, recipe.task, size)
        if key not in decoded_sets:
            decoded_sets[key] = FaceDataset(rows, root, recipe.task, size, None, target_stats=stats)
        return decoded_sets[key]

    train_ds = decoded("train", train_rows).with_transform(train_tf)
    val_ds = decoded("val", val_rows).with_transform(val_tf)
    return train_ds, val_ds, stats


def train_model(
    recipe: Recipe,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    root: Path,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: Path | None = None,
    cache: ActivationCache | None = None,
    data_version: str = "unknown",
    progress: bool = True,
    dataset_memo: dict[tuple[Any, ...], FaceDataset] | None = None,
    policy: DevicePolicy | None = None,
) -> TrainedModel:
    """Build the model of ``recipe`` and fit it on ``train_rows`` (``val_rows`` for selection).

    Args:
        recipe: resolved model and training params.
        train_rows: manifest rows of the training split.
        val_rows: manifest rows of the validation split.
        root: the prepared dataset directory (rows' ``file`` is relative to it).
        callbacks: ``fit`` callbacks (MLflow logging, Optuna pruning).
        checkpoint_dir: where per-epoch checkpoints go (resumed when present).
        cache: frozen-prefix activation cache (used only when blocks are frozen, no augmentation).
        data_version: hash of the prepared data, part of the activation-cache key.
        progress: show progress bars.
        dataset_memo: see :func:`build_datasets` (one dict per fixed pair of row sets).
        policy: device and precision of training (``None``: the CPU, ``train.precision``).
    """
    names = output_names(recipe.task, train_rows)
    model, weights_source = build_model(
        recipe.model,
        num_outputs=len(names),
        head=recipe.train.head,
        dropout=recipe.train.dropout,
        trainable_blocks=recipe.train.trainable_blocks,
        seed=recipe.train.seed,
    )
    norm = norm_stats(weights_source)
    train_ds, val_ds, stats = build_datasets(
        recipe, train_rows, val_rows, root, norm, memo=dataset_memo
    )
    key_fields = {
        "arch": recipe.model.arch,
        "weights_source": weights_source,
        "input_size": recipe.model.input_size,
        "data_version": data_version,
        "seed": recipe.train.seed,
    }
    history = fit(
        model,
        train_ds,
        val_ds,
        recipe.train,
        recipe.task,
        callbacks=callbacks,
        checkpoint_dir=checkpoint_dir,
        cache=cache,
        cache_key_fields=key_fields,
        progress=progress,
        policy=policy,
    )
    meta = ModelMeta.for_model(
        model,
        task=recipe.task,
        output_names=names,
        input_size=recipe.model.input_size,
        weights_source=weights_source,
        norm=norm,
        target_stats=stats,
    )
    return TrainedModel(model=model, meta=meta, history=history)
