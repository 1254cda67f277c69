"""What the stages after ``train`` share: the trained model with the test split, and logging
into the train run (``models/run.json``), so that one MLflow run holds the model, its test
metrics, its explanations and its manifolds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from matplotlib.figure import Figure

from facelens.data.dataset import FaceDataset
from facelens.data.manifest import data_version
from facelens.data.split_csv import load_splits
from facelens.device import DevicePolicy, device_tags, model_device, resolve_device
from facelens.errors import DataError
from facelens.models.export import load_exported
from facelens.models.meta import ModelMeta
from facelens.models.vgg import FaceVGG
from facelens.tracking.params import TrackingParams
from facelens.tracking.runs import configure_stage, tracked_run

__all__ = [
    "FIGURE_DPI",
    "IMAGE_STEP",
    "TrainedOnTest",
    "details_path",
    "load_trained",
    "log_to_train_run",
    "save_figure",
    "train_run",
]

#: Resolution of every figure the stages write.
FIGURE_DPI = 90
#: The step of every image logged with a key: one image per key and run (the trained model's),
#: so the chart view lines the runs up at the same step.
IMAGE_STEP = 0
#: MLflow accepts at most 1000 metrics per batch.
_METRICS_PER_BATCH = 500


@dataclass
class TrainedOnTest:
    """The exported model, its metadata, the test split and the data version."""

    model: FaceVGG
    meta: ModelMeta
    test_rows: pd.DataFrame
    data_version: str

    def device_tags(self, stage: str) -> dict[str, str]:
        """``facelens.<stage>.device``... tags: where ``stage`` ran this model (in fp32)."""
        return device_tags(DevicePolicy(model_device(self.model)), stage)

    def dataset(self, rows: pd.DataFrame, prepared_dir: Path) -> FaceDataset:
        """uint8 images of ``rows`` at the model's input size (callers normalise them with
        ``meta.eval_transform()``; attribute targets are not standardised)."""
        return FaceDataset(rows, prepared_dir, self.meta.task, self.meta.input_size, None)


def load_trained(
    prepared_dir: Path, splits_dir: Path, model_dir: Path, device: str = "auto"
) -> TrainedOnTest:
    """Load the exported model onto ``device`` (see :mod:`facelens.device`) and the test split.

    Raises:
        MissingInputError: the split, the prepared data or the model is missing.
        DataError: the test split is empty.
    """
    (test_rows,) = load_splits(prepared_dir, splits_dir, ("test",))
    if test_rows.empty:
        raise DataError(
            f"{Path(splits_dir) / 'test.csv'} has no rows; the evaluate, explain and manifold "
            "stages need a test split (check split.test_fraction)."
        )
    model, meta = load_exported(model_dir, resolve_device(device))
    return TrainedOnTest(model, meta, test_rows, data_version(prepared_dir))


@contextmanager
def train_run(
    tracking: TrackingParams, run_id: str, tags: Mapping[str, str] | None = None
) -> Iterator[Any]:
    """Reopen the train run ``run_id`` to log into it; it ends ``FINISHED`` again.

    A failure inside the block is raised, and the train run is closed as it was found
    (``FINISHED``): a stage that fails after training never marks the trained model's run as
    failed.
    """
    configure_stage(tracking.tracking_uri, tracking.experiment)
    with tracked_run("train", run_id=run_id, keep_status_on_error=True) as run:
        if tags:
            mlflow.set_tags(dict(tags))
        yield run


def log_to_train_run(
    tracking: TrackingParams,
    run_id: str,
    artifact_dir: str,
    files: Mapping[str, Sequence[Path]],
    documents: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    images: Mapping[str, Any] | None = None,
) -> None:
    """Log ``metrics``, ``files`` (sub-folder of ``artifact_dir`` -> files), JSON
    ``documents`` (file name -> document, stored as ``<artifact_dir>/<name>``), ``tags`` and
    ``images`` (MLflow image key -> array or PIL image, at step :data:`IMAGE_STEP`: the
    experiment's chart view shows one card per key with every selected run's image) to the
    train run.
    """
    with train_run(tracking, run_id, tags):
        for key, image in (images or {}).items():
            mlflow.log_image(image, key=key, step=IMAGE_STEP, synchronous=True)
        items = sorted(metrics.items())
        for start in range(0, len(items), _METRICS_PER_BATCH):
            mlflow.log_metrics(dict(items[start : start + _METRICS_PER_BATCH]))
        for sub, paths in files.items():
            target = f"{artifact_dir}/{sub}" if sub else artifact_dir
            for path in paths:
                mlflow.log_artifact(str(path), target)
        for name, doc in documents.items():
            mlflow.log_dict(dict(doc), f"{artifact_dir}/{name}")


def save_figure(fig: Figure, path: Path) -> None:
    """Save ``fig`` at the stages' resolution."""
    fig.savefig(path, dpi=FIGURE_DPI)


def details_path(metrics_path: Path) -> Path:
    """``reports/x/metrics.json`` -> ``reports/x/metrics_details.json``: the full document
    beside the compact one that ``dvc metrics`` shows."""
    metrics_path = Path(metrics_path)
    return metrics_path.with_name(f"{metrics_path.stem}_details{metrics_path.suffix}")
