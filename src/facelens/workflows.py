"""The cores of the model stages (``tune``, ``train``, ``evaluate``, ``register``).

Each function is one named unit of work with explicit arguments; the thin scripts in
``pipelines/`` parse arguments, call one of these and save the result. Tracking goes through
:mod:`facelens.tracking`; the training code underneath never sees MLflow or Optuna.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facelens.config import Params, params_hash
from facelens.constants import reference_stats

__all__ = [
    "data_version_of",
    "evaluate_model",
    "load_splits",
    "register_model",
    "study_name_for",
    "train_final",
    "tune_study",
]


def data_version_of(prepared_dir: Path) -> str:
    """A content hash of the prepared dataset: the sha256 of its manifest (which holds every
    image's pixel hash). Used as MLflow dataset digest and activation-cache key."""
    manifest = Path(prepared_dir) / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest}: prepared manifest not found (run `dvc repro prepare`)"
        )
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]


def load_splits(prepared_dir: Path, splits_dir: Path, names: tuple[str, ...]) -> list[pd.DataFrame]:
    """Read split CSVs (``train``, ``val``, ``test``) written by the ``split`` stage."""
    from facelens.data.dataset import load_split

    return [load_split(Path(splits_dir) / f"{n}.csv", Path(prepared_dir)) for n in names]


def _subsample(rows: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded, label-stratified subset (all rows when ``fraction >= 1``)."""
    if fraction >= 1.0:
        return rows
    key = rows["label"] if "label" in rows and rows["label"].notna().all() else None
    if key is None:
        return rows.sample(frac=fraction, random_state=seed).sort_index()
    parts = [
        g.sample(n=max(1, round(len(g) * fraction)), random_state=seed)
        for _, g in rows.groupby(key, sort=True)
    ]
    return pd.concat(parts).sort_index()


def study_name_for(params: Params, data_version: str) -> str:
    """``<tune.study_name>-<hash>``: identical data and search config resume the same study;
    a changed dataset, task, model or space starts a fresh one (old trials would mislead)."""
    fingerprint = params_hash(
        {
            "task": params.task,
            "data": data_version,
            "model": params.model.model_dump(mode="json"),
            "train": params.train.model_dump(mode="json"),
            "space": params.tune.space.model_dump(mode="json"),
            "train_fraction": params.tune.train_fraction,
        }
    )
    return f"{params.tune.study_name}-{fingerprint[:8]}"


class _PruningReporter:
    """``fit`` callback forwarding each epoch's validation metric to the study's reporter."""

    def __init__(self, report: Callable[[int, float], None]) -> None:
        self._report = report

    def on_epoch_end(self, result: Any) -> None:
        self._report(result.epoch, float(result.val_metric))


def tune_study(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    *,
    cache_dir: Path,
    use_cache: bool = True,
    cache_dtype: str = "float16",
    progress: bool = True,
) -> Any:
    """Run (or resume) the Optuna study; every trial is a nested MLflow run.

    Trials whose recipe freezes the first blocks and does not augment train on activations
    of the frozen prefix cached under ``cache_dir`` (computed once, shared by all trials);
    ``use_cache=False`` recomputes them every step (for the benchmark). ``cache_dtype``
    ``float16`` halves the cache's memory; ``float32`` makes cached trials train on exactly the
    activations an uncached trial computes.

    Returns:
        The :class:`facelens.tuning.study.StudyResult`.
    """
    import torch

    from facelens.models.cache import ActivationCache
    from facelens.tracking.runs import configure
    from facelens.training.recipe import make_recipe, train_model
    from facelens.tuning.study import create_study, run_study

    train_rows, val_rows = load_splits(prepared_dir, splits_dir, ("train", "val"))
    train_rows = _subsample(train_rows, params.tune.train_fraction, params.tune.seed)
    data_version = data_version_of(prepared_dir)
    configure(params.tracking.tracking_uri, params.tracking.experiment)
    tune_params = params.tune.model_copy(
        update={"study_name": study_name_for(params, data_version)}
    )
    if cache_dtype not in ("float16", "bfloat16", "float32"):
        raise ValueError(f"cache_dtype must be float16, bfloat16 or float32; got {cache_dtype!r}")
    cache = ActivationCache(cache_dir, dtype=getattr(torch, cache_dtype)) if use_cache else None
    decoded: dict[tuple[Any, ...], Any] = {}  # images decoded once per study, not per trial

    def objective(trial_params: dict[str, Any], report: Callable[[int, float], None]) -> float:
        recipe = make_recipe(params.task, params.model, params.train, trial_params)
        trained = train_model(
            recipe,
            train_rows,
            val_rows,
            prepared_dir,
            callbacks=[_PruningReporter(report)],
            cache=cache,
            data_version=data_version,
            progress=False,
            dataset_memo=decoded,
        )
        return float(trained.history.best_val_metric)

    study = create_study(tune_params)
    return run_study(
        study,
        tune_params,
        objective,
        parent_run_name=f"tune {tune_params.study_name}",
        progress=progress,
    )


def _input_example(prepared_dir: Path, rows: pd.DataFrame) -> pd.DataFrame:
    import base64

    path = Path(prepared_dir) / rows.iloc[0]["file"]
    return pd.DataFrame({"image": [base64.b64encode(path.read_bytes()).decode("ascii")]})


def train_final(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    best_params: dict[str, Any],
    model_dir: Path,
    *,
    checkpoint_root: Path,
) -> dict[str, Any]:
    """Retrain with the best params, checkpointing every epoch; resume after an interruption.

    The checkpoint directory is keyed by the recipe and the data version, and remembers the
    MLflow run id, so a resumed training continues the same run.

    Returns:
        ``{"run_id", "model_uri", "best_val_metric", "best_epoch", "resumed_from_epoch"
        (0 = not resumed), "data_version", "weights_source", "task"}`` (written to ``models/run.json``).
    """
    import mlflow

    from facelens.models.vgg import export_model
    from facelens.serving.pyfunc import model_signature
    from facelens.tracking.registry import log_pytorch_pyfunc
    from facelens.tracking.runs import (
        MlflowEpochLogger,
        configure,
        lineage_tags,
        log_dataset,
        tracked_run,
    )
    from facelens.training.recipe import make_recipe, train_model

    train_rows, val_rows = load_splits(prepared_dir, splits_dir, ("train", "val"))
    data_version = data_version_of(prepared_dir)
    recipe = make_recipe(params.task, params.model, params.train, best_params, keep_epochs=True)
    key = params_hash({"recipe": recipe.describe(), "data": data_version})[:16]
    ckpt_dir = Path(checkpoint_root) / key
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_id_file = ckpt_dir / "mlflow_run_id"
    resume_id = run_id_file.read_text().strip() if run_id_file.is_file() else None

    configure(params.tracking.tracking_uri, params.tracking.experiment)
    tags = lineage_tags(Path.cwd(), params=params.model_dump(mode="json"))
    tags.update(
        {"facelens.stage": "train", "facelens.task": params.task, "data_version": data_version}
    )
    with tracked_run(f"train {params.task}", tags=tags, run_id=resume_id) as run:
        run_id = run.info.run_id
        run_id_file.write_text(run_id)
        if resume_id is None:
            mlflow.log_params(recipe.describe())
            log_dataset(
                train_rows,
                name="train",
                digest=data_version,
                context="training",
                source=str(prepared_dir),
            )
            log_dataset(
                val_rows,
                name="val",
                digest=data_version,
                context="validation",
                source=str(prepared_dir),
            )
        trained = train_model(
            recipe,
            train_rows,
            val_rows,
            prepared_dir,
            callbacks=[MlflowEpochLogger()],
            checkpoint_dir=ckpt_dir,
            data_version=data_version,
        )
        mlflow.set_tag("weights_source", trained.meta.weights_source)
        history = trained.history
        if history.resumed_from:
            mlflow.set_tag("resumed_from_epoch", str(history.resumed_from))
        mlflow.log_metrics(
            {
                "best_val_metric": float(history.best_val_metric),
                "best_epoch": float(history.best_epoch),
            }
        )
        mlflow.log_dict(history.to_dict(), "history.json")
        export_model(trained.model, trained.meta, model_dir)
        info = log_pytorch_pyfunc(
            model_dir,
            name="model",
            input_example=_input_example(prepared_dir, val_rows),
            signature=model_signature(trained.meta),
        )
    return {
        "run_id": run_id,
        "model_uri": info.model_uri,
        "best_val_metric": float(history.best_val_metric),
        "best_epoch": int(history.best_epoch),
        "resumed_from_epoch": int(history.resumed_from),
        "data_version": data_version,
        "weights_source": trained.meta.weights_source,
        "task": params.task,
    }


def _ceiling_table(report: dict[str, Any], prepared_dir: Path) -> list[dict[str, Any]]:
    """Per-attribute r beside the rater-reliability ceiling and the paper's columns."""
    ref = reference_stats()["paper_table_pearson_r"]
    columns = ref["columns"]
    rows_ref = ref["rows"]
    prepared_report = Path(prepared_dir) / "report.json"
    reliability: dict[str, float] = {}
    if prepared_report.is_file():
        synth = json.loads(prepared_report.read_text()).get("synth") or {}
        reliability = synth.get("reliability") or {}
    aliases = {"emotStable": "emotionally stable", "emotUnstable": "emotionally unstable"}
    table = []
    for name, r in report["pearson"].items():
        paper = rows_ref.get(name) or rows_ref.get(aliases.get(name, ""))
        row = {"attribute": name, "pearson": r, "rater_ceiling": reliability.get(name)}
        for col, val in zip(columns, paper or [None] * len(columns), strict=True):
            row[f"paper_{col}"] = val
        table.append(row)
    return table


def evaluate_model(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    model_dir: Path,
    run_id: str,
    metrics_path: Path,
    plots_dir: Path,
) -> dict[str, Any]:
    """Score the exported model on the test split; write ``metrics.json`` and plot data; log
    both to the train run.

    Returns:
        The metrics written to ``metrics_path``.
    """
    import mlflow

    from facelens.data.dataset import FaceDataset, make_transform
    from facelens.models.vgg import load_exported
    from facelens.tracking.runs import configure, tracked_run
    from facelens.training.fit import predict
    from facelens.training.metrics import classification_report, regression_report

    (test_rows,) = load_splits(prepared_dir, splits_dir, ("test",))
    model, meta = load_exported(model_dir)
    tf = make_transform(
        meta.input_size, train=False, augment=0.0, norm_mean=meta.norm_mean, norm_std=meta.norm_std
    )
    stats = None
    if meta.target_mean is not None:
        stats = (np.asarray(meta.target_mean), np.asarray(meta.target_std))
    ds = FaceDataset(test_rows, prepared_dir, meta.task, meta.input_size, tf, target_stats=stats)
    outputs = predict(model, ds)  # (N, C) logits, or (N, A) attribute scores on the 1-9 scale
    names = list(meta.output_names)
    if meta.task == "expression":
        y_true = np.asarray(ds.raw_targets).astype(int)
        y_pred = outputs.argmax(axis=1)
        report = classification_report(y_true, y_pred, names)
    else:
        report = regression_report(np.asarray(ds.raw_targets), outputs, names)

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"task": meta.task, "n_test": len(test_rows)}
    if meta.task == "expression":
        metrics.update(
            accuracy=float(report["accuracy"]),
            macro_f1=float(report["macro_f1"]),
            per_class_f1={k: float(v) for k, v in report["per_class_f1"].items()},
        )
        pd.DataFrame(
            {"actual": [names[i] for i in y_true], "predicted": [names[i] for i in y_pred]}
        ).to_csv(plots_dir / "confusion.csv", index=False)
        pd.DataFrame(
            {"class": list(metrics["per_class_f1"]), "f1": list(metrics["per_class_f1"].values())}
        ).to_csv(plots_dir / "per_class_f1.csv", index=False)
    else:
        table = _ceiling_table(report, prepared_dir)
        ceilings = [r["rater_ceiling"] for r in table if r["rater_ceiling"] is not None]
        metrics.update(
            mean_pearson=float(report["mean_pearson"]),
            mean_spearman=float(report["mean_spearman"]),
            mean_rater_ceiling=float(np.mean(ceilings)) if ceilings else None,
            per_attribute=table,
            pearson_ci=report["pearson_ci"],
            spearman=report["spearman"],
        )
        pd.DataFrame(table).to_csv(plots_dir / "per_attribute_r.csv", index=False)

    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")

    configure(params.tracking.tracking_uri, params.tracking.experiment)
    with tracked_run("train", run_id=run_id):
        flat = {f"test_{k}": v for k, v in metrics.items() if isinstance(v, float)}
        mlflow.log_metrics(flat)
        if meta.task == "expression":
            mlflow.log_metrics({f"test_f1_{k}": v for k, v in metrics["per_class_f1"].items()})
        else:
            mlflow.log_metrics(
                {f"test_r_{r['attribute']}": r["pearson"] for r in metrics["per_attribute"]}
            )
        mlflow.log_artifact(str(metrics_path), "evaluation")
        for f in sorted(plots_dir.glob("*.csv")):
            mlflow.log_artifact(str(f), "evaluation/plots")
        _log_eval_figures(metrics, report, meta)
    return metrics


def _log_eval_figures(metrics: dict[str, Any], report: dict[str, Any], meta: Any) -> None:
    import mlflow

    from facelens import plots

    if meta.task == "expression":
        fig = plots.confusion_figure(
            np.asarray(report["confusion_matrix"]), list(meta.output_names)
        )
        mlflow.log_figure(fig, "evaluation/confusion_matrix.png")
    else:
        fig = plots.attribute_r_figure(metrics["per_attribute"])
        mlflow.log_figure(fig, "evaluation/per_attribute_r.png")
    import matplotlib.pyplot as plt

    plt.close(fig)


def register_model(params: Params, run: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """Register the train run's model; alias ``challenger``; ``champion`` only if it beats the
    current champion on the validation metric of the same data version.

    Returns:
        The decision (written to ``reports/registry.json``).
    """
    from mlflow import MlflowClient

    from facelens.tracking.registry import promote, register
    from facelens.tracking.runs import configure

    configure(params.tracking.tracking_uri, params.tracking.experiment)
    name = params.registered_model_name
    version = register(
        run["model_uri"],
        name,
        tags={"data_version": run["data_version"], "task": run["task"], "run_id": run["run_id"]},
    )
    decision = promote(
        MlflowClient(),
        name,
        version.version,
        metric_name="val_metric",
        metric_value=float(run["best_val_metric"]),
        data_version=run["data_version"],
    )
    test_keys = ("macro_f1", "accuracy", "mean_pearson")
    decision["test_metrics"] = {k: metrics[k] for k in test_keys if k in metrics}
    return decision
