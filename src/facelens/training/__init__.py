"""Training loops (``fit``, ``predict``, ``evaluate``) and pure metrics."""

from facelens.training.fit import (
    Callback,
    EpochResult,
    History,
    TrainParams,
    evaluate,
    fit,
    predict,
)
from facelens.training.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    correlation_ci,
    macro_f1,
    mean_r,
    pearson_columns,
    per_class_f1,
    regression_report,
    spearman_columns,
)

__all__ = [
    "Callback",
    "EpochResult",
    "History",
    "TrainParams",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "correlation_ci",
    "evaluate",
    "fit",
    "macro_f1",
    "mean_r",
    "pearson_columns",
    "per_class_f1",
    "predict",
    "regression_report",
    "spearman_columns",
]
