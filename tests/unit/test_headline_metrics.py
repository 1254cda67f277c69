"""The DVC metrics files hold headline numbers only (short keys, so that ``dvc metrics show``
fits a 120-column terminal); the details stay beside them. Also the training-curve table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facelens.explain.report import faithfulness_metrics, method_table
from facelens.manifold.features import compact_metrics
from facelens.stages.evaluate import headline
from facelens.training.history import EpochResult, History


def test_evaluate_headline_keeps_the_task_headline_only() -> None:
    expression = {
        "task": "expression",
        "n_test": 10,
        "accuracy": 0.8,
        "macro_f1": 0.7,
        "per_class_f1": {"happy": 0.9, "sad": 0.5},
    }
    assert headline(expression) == {"accuracy": 0.8, "macro_f1": 0.7}
    attributes = {
        "task": "attributes",
        "n_test": 10,
        "mean_pearson": 0.4,
        "mean_spearman": 0.35,
        "mean_rater_ceiling": 0.8,
        "per_attribute": [{"attribute": "happy", "pearson": 0.6}],
    }
    assert headline(attributes) == {"mean_pearson": 0.4, "mean_spearman": 0.35}


def _summary(with_localization: bool) -> dict:
    summary = {
        "meta": {"layer": "block4"},
        "sanity": {
            "gradcam": {"spearman_mean": 0.1, "passed": True},
            "layercam": {"spearman_mean": 0.7, "passed": False},
        },
        "deletion": {
            "gradcam": {"road_combined": 0.2, "confidence_drop": 0.3},
            "layercam": {"road_combined": 0.1, "confidence_drop": 0.05},
        },
        "headline": {
            "method": "gradcam",
            "localization_lift": 2.5 if with_localization else None,
            "localization_lift_in_face": 1.2 if with_localization else None,
            "sanity_spearman": 0.1,
            "road_combined": 0.2,
            "confidence_drop": 0.3,
        },
    }
    if with_localization:
        summary["localization"] = {
            "gradcam": {"mean_lift": 2.5, "mean_lift_in_face": 1.2, "per_class": {"happy": 3.0}},
            "layercam": {"mean_lift": 1.5, "mean_lift_in_face": float("nan")},
        }
    return summary


def test_faithfulness_metrics_are_the_headline_method_only() -> None:
    assert faithfulness_metrics(_summary(True)) == {"lift": 2.5, "sanity_rho": 0.1, "road": 0.2}
    # no masks (attributes task): no lift key rather than a null column
    assert faithfulness_metrics(_summary(False)) == {"sanity_rho": 0.1, "road": 0.2}


def test_method_table_holds_every_method_for_the_details() -> None:
    table = method_table(_summary(True))
    assert list(table) == ["gradcam", "layercam"]
    assert table["layercam"] == {
        "localization_lift": 1.5,
        "localization_lift_in_face": None,  # NaN -> None (strict JSON)
        "sanity_spearman": 0.7,
        "sanity_passed": False,
        "road_combined": 0.1,
        "confidence_drop": 0.05,
    }
    assert method_table(_summary(False))["gradcam"]["localization_lift"] is None


def test_manifold_headline_is_the_main_layout() -> None:
    doc = {
        "meta": {"methods": ["tsne", "pca"]},
        "layouts": {
            "penultimate/pca": {"trustworthiness": 0.9, "knn_accuracy": 0.5, "silhouette": 0.1},
            "penultimate/tsne": {"trustworthiness": 0.95, "knn_accuracy": 0.6},
            "attributes/tsne": {"trustworthiness": 0.99, "knn_accuracy": 0.7},
        },
    }
    assert compact_metrics(doc) == {"trust": 0.95}
    assert compact_metrics({"meta": {"methods": ["pca"]}, "layouts": {}}) == {}


def _epoch(i: int, lr: float | None) -> EpochResult:
    metrics = {"train_img_per_s": 100.0} if lr is None else {"lr": lr, "train_img_per_s": 100.0}
    return EpochResult(i, train_loss=1.0 / i, val_loss=1.5 / i, val_metric=0.1 * i, metrics=metrics)


def test_history_curves_one_row_per_epoch() -> None:
    rows = History(epochs=[_epoch(1, 1e-3), _epoch(2, 5e-4)]).curves()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1] == {
        "epoch": 2,
        "train_loss": 0.5,
        "val_loss": 0.75,
        "val_metric": pytest.approx(0.2),
        "lr": 5e-4,
    }
    (row,) = History(epochs=[_epoch(1, None)]).curves()
    assert math.isnan(row["lr"])
    assert np.isfinite(row["train_loss"])
