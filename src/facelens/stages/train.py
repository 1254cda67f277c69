"""The ``train`` stage: retrain with the best params, checkpointed and resumable, tracked in
MLflow with lineage, and logged as a servable pyfunc model."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from facelens._io import atomic_write_text, canonical_hash
from facelens.config import Params
from facelens.data.manifest import data_version, read_manifest
from facelens.data.split_csv import load_splits
from facelens.device import DevicePolicy, device_tags
from facelens.serving.log_model import log_pyfunc_model
from facelens.serving.schema import model_signature
from facelens.tracking.runs import (
    MlflowEpochLogger,
    configure_stage,
    lineage_tags,
    log_dataset,
    tracked_run,
)
from facelens.training.history import History
from facelens.training.ood import export_with_ood
from facelens.training.pretrain import backbone_fingerprint, check_backbone_pool
from facelens.training.recipe import Recipe, make_recipe, train_model

__all__ = ["checkpoint_dir", "run"]

_CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_metric", "lr")


def checkpoint_dir(checkpoint_root: Path, recipe: Recipe, version: str, backbone: str = "") -> Path:
    """Where the checkpoints of one (recipe, data version, pretrained backbone) live: a rerun
    with the same inputs resumes from them; changed inputs start afresh in another folder."""
    identity: dict[str, str] = {"recipe": recipe.describe(), "data": version}
    if backbone:  # keys of runs without a pretrained backbone stay those of earlier versions
        identity["backbone"] = backbone
    key = canonical_hash(identity)[:16]
    return Path(checkpoint_root) / key


def _input_example(prepared_dir: Path, rows: pd.DataFrame) -> pd.DataFrame:
    path = Path(prepared_dir) / rows.iloc[0]["file"]
    return pd.DataFrame({"image": [base64.b64encode(path.read_bytes()).decode("ascii")]})


def _log_inputs(recipe: Recipe, splits: dict[str, pd.DataFrame], version: str, src: str) -> None:
    mlflow.log_params(recipe.describe())
    for name, context in (("train", "training"), ("val", "validation")):
        log_dataset(splits[name], name=name, digest=version, context=context, source=src)


def _log_history(history: History, weights_source: str) -> None:
    mlflow.set_tag("weights_source", weights_source)
    if history.resumed_from:
        mlflow.set_tag("resumed_from_epoch", str(history.resumed_from))
    mlflow.log_metrics(
        {
            "best_val_metric": float(history.best_val_metric),
            "best_epoch": float(history.best_epoch),
        }
    )
    mlflow.log_dict(history.to_dict(), "history.json")


def run(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    best_params: dict[str, Any],
    model_dir: Path,
    *,
    checkpoint_root: Path,
    curves_path: Path | None = None,
) -> dict[str, Any]:
    """Retrain with the best params, checkpointing every epoch; resume after an interruption.

    The checkpoint folder is keyed by the recipe and the data version and remembers the
    MLflow run id, so a resumed training continues the same run. With ``curves_path`` the
    per-epoch training curves (:meth:`History.curves`) are written there as CSV, for
    ``dvc plots``.

    Returns:
        ``{"run_id", "model_uri", "best_val_metric", "best_epoch", "resumed_from_epoch"
        (0 = not resumed), "data_version", "weights_source", "task"}`` (``models/run.json``).
    """
    train_rows, val_rows = load_splits(prepared_dir, splits_dir, ("train", "val"))
    version = data_version(prepared_dir)
    recipe = make_recipe(params.task, params.model, params.train, best_params, keep_epochs=True)
    model = params.model
    check_backbone_pool(
        model.weights,
        model.pretrained,
        read_manifest(Path(prepared_dir) / "manifest.csv"),
        str(prepared_dir),
    )
    backbone = backbone_fingerprint(model.weights, model.pretrained)
    ckpt_dir = checkpoint_dir(checkpoint_root, recipe, version, backbone)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_id_file = ckpt_dir / "mlflow_run_id"
    resume_id = run_id_file.read_text().strip() if run_id_file.is_file() else None

    configure_stage(params.tracking.tracking_uri, params.tracking.experiment)
    tags = lineage_tags(Path.cwd(), params=params, data_version=version)
    tags.update({"facelens.stage": "train", "facelens.task": params.task})
    policy = DevicePolicy.resolve(params.device, recipe.train.precision)
    tags.update(device_tags(policy))
    with tracked_run(f"train {params.task}", tags=tags, run_id=resume_id) as tracked:
        run_id = tracked.info.run_id
        run_id_file.write_text(run_id)
        if resume_id is None:
            splits = {"train": train_rows, "val": val_rows}
            _log_inputs(recipe, splits, version, str(prepared_dir))
        trained = train_model(
            recipe,
            train_rows,
            val_rows,
            prepared_dir,
            callbacks=[MlflowEpochLogger()],
            checkpoint_dir=ckpt_dir,
            data_version=version,
            policy=policy,
        )
        _log_history(trained.history, trained.meta.weights_source)
        trained = export_with_ood(trained, train_rows, val_rows, prepared_dir, model_dir)
        info = log_pyfunc_model(
            model_dir,
            name="model",
            input_example=_input_example(prepared_dir, val_rows),
            signature=model_signature(trained.meta),
        )
    history = trained.history
    if curves_path is not None:
        table = pd.DataFrame(history.curves(), columns=list(_CURVE_COLUMNS))
        atomic_write_text(Path(curves_path), table.to_csv(index=False))
    return {
        "run_id": run_id,
        "model_uri": info.model_uri,
        "best_val_metric": float(history.best_val_metric),
        "best_epoch": int(history.best_epoch),
        "resumed_from_epoch": int(history.resumed_from),
        "data_version": version,
        "weights_source": trained.meta.weights_source,
        "task": params.task,
    }
