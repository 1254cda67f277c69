"""The ``tune`` stage: an Optuna study over the VGG16 fine-tuning space, every trial a nested
MLflow run under one parent run per study.

The study lives in ``tune.storage`` (default ``sqlite:///optuna.db``) under a name derived from
the data version and the tuning config, so a killed ``dvc repro`` resumes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from facelens.config import Params
from facelens.data.dataset import FaceDataset
from facelens.data.manifest import data_version
from facelens.data.split import stratified_subset
from facelens.data.split_csv import load_splits
from facelens.device import DevicePolicy, device_tags
from facelens.models.cache import ActivationCache
from facelens.tracking.runs import configure_stage
from facelens.tracking.study import MlflowStudyTracker
from facelens.training.history import EpochResult
from facelens.training.recipe import make_recipe, train_model
from facelens.tuning.study import StudyResult, create_study, run_study, study_name_for

__all__ = ["CACHE_DTYPES", "run", "study_name"]

#: Storage types of the activation cache: float16 halves its memory; float32 makes cached
#: trials train on exactly the activations an uncached trial computes.
CACHE_DTYPES = ("float16", "bfloat16", "float32")


class _PruningReporter:
    """``fit`` callback forwarding each epoch's validation metric to the study's reporter."""

    def __init__(self, report: Callable[[int, float], None]) -> None:
        self._report = report

    def on_epoch_end(self, result: EpochResult) -> None:
        self._report(result.epoch, float(result.val_metric))


def study_name(params: Params, version: str) -> str:
    """The study of this data version and tuning config (``<tune.study_name>-<hash>``)."""
    return study_name_for(
        params.tune.study_name,
        task=params.task,
        data_version=version,
        sections={
            "model": params.model,
            "train": params.train,
            "space": params.tune.space,
            "train_fraction": params.tune.train_fraction,
        },
    )


def run(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    *,
    cache_dir: Path,
    use_cache: bool = True,
    cache_dtype: str = "float16",
    progress: bool = True,
) -> StudyResult:
    """Run (or resume) the study; every trial is a nested MLflow run.

    Trials whose recipe freezes the first blocks and does not augment train on activations
    of the frozen prefix cached under ``cache_dir`` (computed once, shared by all trials);
    ``use_cache=False`` recomputes them every step (for the benchmark).

    Args:
        cache_dtype: one of :data:`CACHE_DTYPES`.

    Returns:
        The :class:`~facelens.tuning.study.StudyResult` of the whole study.
    """
    if cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"cache_dtype must be one of {CACHE_DTYPES}; got {cache_dtype!r}")
    train_rows, val_rows = load_splits(prepared_dir, splits_dir, ("train", "val"))
    train_rows = stratified_subset(train_rows, params.tune.train_fraction, params.tune.seed)
    version = data_version(prepared_dir)
    configure_stage(params.tracking.tracking_uri, params.tracking.experiment)
    tune = params.tune.model_copy(update={"study_name": study_name(params, version)})
    cache = ActivationCache(cache_dir, dtype=getattr(torch, cache_dtype)) if use_cache else None
    decoded: dict[tuple[Any, ...], FaceDataset] = {}  # images decoded once per study

    policy = DevicePolicy.resolve(params.device, params.train.precision)

    def objective(trial_params: dict[str, Any], report: Callable[[int, float], None]) -> float:
        recipe = make_recipe(params.task, params.model, params.train, trial_params)
        trained = train_model(
            recipe,
            train_rows,
            val_rows,
            prepared_dir,
            callbacks=[_PruningReporter(report)],
            cache=cache,
            data_version=version,
            progress=False,
            dataset_memo=decoded,
            policy=policy,
        )
        return float(trained.history.best_val_metric)

    tracker = MlflowStudyTracker(f"tune {tune.study_name}", tags=device_tags(policy))
    return run_study(create_study(tune), tune, objective, tracker=tracker, progress=progress)
