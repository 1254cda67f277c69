"""The ``register`` stage: register the train run's model; the new version gets the
challenger alias, and the champion alias when it beats the current champion."""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient

from facelens.config import Params
from facelens.tracking.registry import promote, register
from facelens.tracking.runs import configure_stage

__all__ = ["HEADLINE_TEST_METRICS", "run"]

#: Test metrics copied into the decision (whichever the task has).
HEADLINE_TEST_METRICS = ("macro_f1", "accuracy", "mean_pearson")


def run(params: Params, train_run: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """Register ``train_run["model_uri"]`` as a new version of ``params.registered_model_name``
    and promote it by its validation metric (aliases from the ``registry`` params).

    Args:
        params: all params (``registry`` and ``tracking`` are used).
        train_run: the ``models/run.json`` document written by the train stage.
        metrics: the ``reports/metrics.json`` document written by the evaluate stage.

    Returns:
        The decision (written to ``reports/registry.json``).
    """
    configure_stage(params.tracking.tracking_uri, params.tracking.experiment)
    name = params.registered_model_name
    version = register(
        train_run["model_uri"],
        name,
        tags={
            "data_version": train_run["data_version"],
            "task": train_run["task"],
            "run_id": train_run["run_id"],
        },
    )
    decision = promote(
        MlflowClient(),
        name,
        version.version,
        metric_name="val_metric",
        metric_value=float(train_run["best_val_metric"]),
        data_version=train_run["data_version"],
        challenger_alias=params.registry.challenger_alias,
        champion_alias=params.registry.champion_alias,
    )
    decision["test_metrics"] = {k: metrics[k] for k in HEADLINE_TEST_METRICS if k in metrics}
    return decision


def summary(decision: dict[str, Any]) -> str:
    """The stage's one line: the version, whether it became champion, and why."""
    head = f"{decision['name']} v{decision['version']}"
    if decision["decision"] == "promoted":
        return f"{head} is the new champion ({decision['reason']})"
    champion = decision["champion_version"]
    return f"{head} is challenger; champion stays v{champion} ({decision['reason']})"
