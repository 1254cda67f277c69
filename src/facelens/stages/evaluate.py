"""The ``evaluate`` stage: test-split metrics for ``dvc metrics``, plot data for ``dvc plots``,
both logged to the train run with the figures drawn from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from facelens import plots
from facelens._io import write_json
from facelens.config import Params
from facelens.constants import reference_stats
from facelens.data.dataset import FaceDataset
from facelens.models.meta import ModelMeta
from facelens.stages.train_run import details_path, load_trained, train_run
from facelens.training.evaluation import predict
from facelens.training.metrics import classification_report, regression_report

__all__ = ["HEADLINE_KEYS", "ceiling_table", "headline", "run", "score"]

#: What ``reports/metrics.json`` (a DVC metric) holds per task; everything else (per class,
#: per attribute, CIs, test-set size) is in ``metrics_details.json`` beside it and in the run.
HEADLINE_KEYS = {
    "expression": ("accuracy", "macro_f1"),
    "attributes": ("mean_pearson", "mean_spearman"),
}

_PAPER_ALIASES = {"emotStable": "emotionally stable", "emotUnstable": "emotionally unstable"}


def ceiling_table(pearson: dict[str, float], reliability: dict[str, float]) -> list[dict[str, Any]]:
    """Per-attribute r beside the rater-reliability ceiling and the paper's columns.

    Args:
        pearson: attribute -> test Pearson r.
        reliability: attribute -> split-half rater reliability (empty when unknown).
    """
    ref = reference_stats()["paper_table_pearson_r"]
    columns, rows_ref = ref["columns"], ref["rows"]
    table = []
    for name, r in pearson.items():
        paper = rows_ref.get(name) or rows_ref.get(_PAPER_ALIASES.get(name, ""))
        row = {"attribute": name, "pearson": r, "rater_ceiling": reliability.get(name)}
        for col, val in zip(columns, paper or [None] * len(columns), strict=True):
            row[f"paper_{col}"] = val
        table.append(row)
    return table


def _rater_reliability(prepared_dir: Path) -> dict[str, float]:
    report = Path(prepared_dir) / "report.json"
    if not report.is_file():
        return {}
    synth = json.loads(report.read_text()).get("synth") or {}
    return synth.get("reliability") or {}


def score(
    meta: ModelMeta, y_true: np.ndarray, outputs: np.ndarray, reliability: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, pd.DataFrame]]:
    """Metrics of ``outputs`` against ``y_true`` (pure).

    Args:
        meta: the model's metadata (task, output names).
        y_true: (N,) class ids, or (N, A) attribute ratings.
        outputs: (N, C) logits, or (N, A) attribute scores on the rating scale.
        reliability: attribute -> rater reliability (attributes task; may be empty).

    Returns:
        ``(metrics, report, plot_tables)``: the ``metrics.json`` document (without ``n_test``),
        the full classification / regression report, and plot CSV name -> table.
    """
    names = list(meta.output_names)
    metrics: dict[str, Any] = {"task": meta.task}
    if meta.task == "expression":
        y_pred = outputs.argmax(axis=1)
        report = classification_report(y_true.astype(int), y_pred, names)
        per_class = {k: float(v) for k, v in report["per_class_f1"].items()}
        metrics.update(
            accuracy=float(report["accuracy"]),
            macro_f1=float(report["macro_f1"]),
            per_class_f1=per_class,
        )
        tables = {
            "confusion.csv": pd.DataFrame(
                {
                    "actual": [names[i] for i in y_true.astype(int)],
                    "predicted": [names[i] for i in y_pred],
                }
            ),
            "per_class_f1.csv": pd.DataFrame(
                {"class": list(per_class), "f1": list(per_class.values())}
            ),
        }
        return metrics, report, tables
    report = regression_report(y_true, outputs, names)
    table = ceiling_table(report["pearson"], reliability)
    ceilings = [r["rater_ceiling"] for r in table if r["rater_ceiling"] is not None]
    metrics.update(
        mean_pearson=float(report["mean_pearson"]),
        mean_spearman=float(report["mean_spearman"]),
        mean_rater_ceiling=float(np.mean(ceilings)) if ceilings else None,
        per_attribute=table,
        pearson_ci=report["pearson_ci"],
        spearman=report["spearman"],
    )
    return metrics, report, {"per_attribute_r.csv": pd.DataFrame(table)}


def headline(details: dict[str, Any]) -> dict[str, Any]:
    """The headline ``metrics.json`` of a full document (:data:`HEADLINE_KEYS` of its task)."""
    return {k: details[k] for k in HEADLINE_KEYS[details["task"]] if k in details}


def run(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    model_dir: Path,
    run_id: str,
    metrics_path: Path,
    plots_dir: Path,
) -> dict[str, Any]:
    """Score the exported model on the test split; write the headline ``metrics.json``
    (:func:`headline`), the full document beside it (``metrics_details.json``) and plot data;
    log them to the train run.

    Returns:
        The full document (``metrics_details.json``).
    """
    trained = load_trained(prepared_dir, splits_dir, model_dir, params.device)
    meta = trained.meta
    ds = FaceDataset(
        trained.test_rows,
        prepared_dir,
        meta.task,
        meta.input_size,
        meta.eval_transform(),
        target_stats=meta.target_stats(),
    )
    outputs = predict(trained.model, ds)  # (N, C) logits, or (N, A) on the 1-9 scale
    metrics, report, tables = score(
        meta, np.asarray(ds.raw_targets), outputs, _rater_reliability(prepared_dir)
    )
    metrics = {"task": meta.task, "n_test": len(trained.test_rows), **metrics}

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(plots_dir / name, index=False)
    write_json(details_path(metrics_path), metrics)
    write_json(metrics_path, headline(metrics))
    with train_run(params.tracking, run_id, trained.device_tags("evaluate")):
        _log_metrics(metrics)
        mlflow.log_artifact(str(metrics_path), "evaluation")
        mlflow.log_artifact(str(details_path(metrics_path)), "evaluation")
        for name in sorted(tables):
            mlflow.log_artifact(str(plots_dir / name), "evaluation/plots")
        _log_figure(metrics, report, meta)
    return metrics


def _log_metrics(metrics: dict[str, Any]) -> None:
    mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if isinstance(v, float)})
    if metrics["task"] == "expression":
        mlflow.log_metrics({f"test_f1_{k}": v for k, v in metrics["per_class_f1"].items()})
    else:
        mlflow.log_metrics(
            {f"test_r_{r['attribute']}": r["pearson"] for r in metrics["per_attribute"]}
        )


def _log_figure(metrics: dict[str, Any], report: dict[str, Any], meta: ModelMeta) -> None:
    if meta.task == "expression":
        fig = plots.confusion_figure(
            np.asarray(report["confusion_matrix"]), list(meta.output_names)
        )
        mlflow.log_figure(fig, "evaluation/confusion_matrix.png")
    else:
        fig = plots.attribute_r_figure(metrics["per_attribute"])
        mlflow.log_figure(fig, "evaluation/per_attribute_r.png")
    plt.close(fig)
