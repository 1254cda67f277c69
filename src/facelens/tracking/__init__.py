"""MLflow tracking: runs and lineage (``runs``), model logging and the registry (``registry``)."""

from facelens.tracking.registry import log_pytorch_pyfunc, promote, register
from facelens.tracking.runs import (
    DEFAULT_TRACKING_URI,
    MlflowEpochLogger,
    configure,
    lineage_tags,
    log_dataset,
    tracked_run,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowEpochLogger",
    "configure",
    "lineage_tags",
    "log_dataset",
    "log_pytorch_pyfunc",
    "promote",
    "register",
    "tracked_run",
]
