"""MLflow runs: configuration, lineage tags and logging helpers.

This is the only module that starts MLflow runs. Runs are opened by :func:`tracked_run`, a
context manager that always closes them (``FINISHED``, ``FAILED`` or ``KILLED``), and
training reports through :class:`MlflowEpochLogger`, a ``fit()`` callback, so training code
never imports mlflow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from numbers import Real
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow.entities import RunStatus
from pydantic import BaseModel

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowEpochLogger",
    "configure",
    "flatten_metrics",
    "lineage_tags",
    "log_dataset",
    "params_digest",
    "tracked_run",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_ERROR_TAG = "error"
_MAX_TAG_CHARS = 5000
_UNKNOWN = "unknown"


def configure(
    tracking_uri: str | None = None,
    experiment: str = "facelens",
    *,
    artifact_location: str | None = None,
) -> str:
    """Point MLflow at a tracking store and select (or create) the experiment.

    ``MLFLOW_TRACKING_URI`` in the environment wins over ``tracking_uri``, which wins over
    :data:`DEFAULT_TRACKING_URI`.

    Args:
        tracking_uri: the URI from params (``tracking.tracking_uri``), or None.
        experiment: the experiment name.
        artifact_location: where a *new* experiment stores artifacts (ignored when the
            experiment already exists; MLflow's default when None).

    Returns:
        The tracking URI in use.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    if artifact_location is not None and mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    return uri


def params_digest(params: Mapping[str, Any] | BaseModel) -> str:
    """Return the sha256 of the canonical JSON of ``params`` (sorted keys, no spaces).

    Args:
        params: a mapping or a pydantic model (dumped in JSON mode).

    Returns:
        64 hex characters; equal params give equal digests regardless of key order.
    """
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else dict(params)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _dvc_md5(lock_file: Path, stage: str) -> str:
    try:
        lock = yaml.safe_load(lock_file.read_text()) or {}
        md5 = lock["stages"][stage]["outs"][0]["md5"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return _UNKNOWN
    return str(md5) if md5 else _UNKNOWN


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return _UNKNOWN


def lineage_tags(
    repo_dir: Path,
    *,
    params: Mapping[str, Any] | BaseModel,
    data_stage: str = "prepare",
) -> dict[str, str]:
    """Tags that tie a run to its code, data and parameters.

    Args:
        repo_dir: the repository root (holds ``.git`` and ``dvc.lock``).
        params: the parameters of the run (hashed, not logged).
        data_stage: the ``dvc.lock`` stage whose first output is the dataset.

    Returns:
        ``git_commit`` (sha or ``unknown``), ``git_dirty`` (``true``/``false``/``unknown``:
        tracked files modified), ``data_version`` (md5 of ``stages.<data_stage>.outs[0]`` in
        ``dvc.lock``, or ``unknown``), ``data_stage``, ``params_hash``, ``python_version``,
        ``torch_version`` and ``mlflow_version``.
    """
    repo_dir = Path(repo_dir)
    commit = _git(repo_dir, "rev-parse", "HEAD")
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit or _UNKNOWN,
        "git_dirty": _UNKNOWN if status is None else str(bool(status)).lower(),
        "data_version": _dvc_md5(repo_dir / "dvc.lock", data_stage),
        "data_stage": data_stage,
        "params_hash": params_digest(params),
        "python_version": platform.python_version(),
        "torch_version": _version("torch"),
        "mlflow_version": _version("mlflow"),
    }


def _exit_status(exc: BaseException | None) -> str:
    if exc is None:
        return RunStatus.to_string(RunStatus.FINISHED)
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.to_string(RunStatus.KILLED)
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return RunStatus.to_string(RunStatus.FINISHED)
    return RunStatus.to_string(RunStatus.FAILED)


@contextmanager
def tracked_run(
    name: str,
    *,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume) an MLflow run and always end it.

    The run ends ``FINISHED`` when the block completes, ``KILLED`` on ``KeyboardInterrupt``
    and ``FAILED`` on any other exception (with the exception in the ``error`` tag); the
    exception propagates.

    Args:
        name: the name of a new run (a resumed run keeps the name it has).
        tags: tags to set on the run.
        nested: start it as a child of the active run.
        run_id: resume this run instead of creating one.

    Yields:
        The active run.
    """
    run = mlflow.start_run(
        run_id=run_id,
        run_name=None if run_id else name,  # a resumed run keeps its name
        nested=nested,
        tags={k: str(v) for k, v in (tags or {}).items()},
    )
    own_id = run.info.run_id
    error: BaseException | None = None
    try:
        yield run
    except BaseException as exc:
        error = exc
        raise
    finally:
        status = _exit_status(error)
        client = mlflow.MlflowClient()
        if error is not None and status != RunStatus.to_string(RunStatus.FINISHED):
            message = f"{type(error).__name__}: {error}"[:_MAX_TAG_CHARS]
            client.set_tag(own_id, _ERROR_TAG, message)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == own_id:
            mlflow.end_run(status=status)
        else:  # the block ended our run itself or left a child open: close ours by id
            client.set_terminated(own_id, status=status)


_KEY_BAD = re.compile(r"[^0-9A-Za-z_\-. /]")


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested metrics to ``{"a/b": value}``, keeping only real numbers.

    Mappings nest with ``/``; lists and tuples of numbers index with ``/0``, ``/1``...;
    booleans, strings, None and other objects are dropped. Key characters MLflow rejects are
    replaced by ``_``.

    Args:
        metrics: possibly nested metrics.
        prefix: prepended to every key (``prefix/key``) when not empty.

    Returns:
        A new flat dict of floats.
    """
    out: dict[str, float] = {}

    def visit(key: str, value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, Real):
            out[_KEY_BAD.sub("_", key)] = float(value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                visit(f"{key}/{k}" if key else str(k), v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                visit(f"{key}/{i}", v)
        elif hasattr(value, "item") and getattr(value, "size", None) == 1:  # numpy/torch scalar
            visit(key, value.item())

    visit(prefix, metrics)
    return out


class MlflowEpochLogger:
    """A ``fit()`` callback that logs each epoch's losses and metrics with ``step=epoch``.

    Logs ``train_loss``, ``val_loss``, ``val_metric``, ``epoch_seconds`` and the numeric
    entries of ``result.metrics`` (flattened with ``/``); None and non-finite values of the
    three headline numbers are skipped.

    Args:
        prefix: prepended to every metric name (``prefix/name``), e.g. ``"trial"``.
        run_id: log to this run instead of the active one.
    """

    def __init__(self, prefix: str = "", run_id: str | None = None) -> None:
        self.prefix = prefix
        self.run_id = run_id

    def on_epoch_end(self, result: Any) -> None:
        """Log one ``EpochResult`` (duck-typed: ``epoch``, losses, ``metrics``, ``seconds``)."""
        values: dict[str, Any] = {
            "train_loss": getattr(result, "train_loss", None),
            "val_loss": getattr(result, "val_loss", None),
            "val_metric": getattr(result, "val_metric", None),
            "epoch_seconds": getattr(result, "seconds", None),
        }
        flat = {
            k: v
            for k, v in flatten_metrics(values).items()
            if math.isfinite(v)  # a NaN loss is not a point worth plotting
        }
        flat.update(flatten_metrics(getattr(result, "metrics", None) or {}))
        if self.prefix:
            flat = {f"{self.prefix}/{k}": v for k, v in flat.items()}
        if flat:
            mlflow.log_metrics(flat, step=int(result.epoch), run_id=self.run_id)


def log_dataset(
    df: pd.DataFrame,
    *,
    name: str,
    digest: str,
    context: str,
    source: str,
) -> None:
    """Record a dataset as an input of the active run (``mlflow.log_input``).

    Args:
        df: the rows (e.g. a split CSV); only its schema and profile are stored.
        name: dataset name, e.g. ``"splits/train"``.
        digest: the data hash (e.g. the DVC md5); the UI shows its first 36 characters, the
            input tag ``digest`` keeps it whole.
        context: ``"training"``, ``"validation"``, ``"test"``...
        source: where the data lives (a path or URI).
    """
    with warnings.catch_warnings():
        # A local path matches two equivalent source types and integer columns trigger a
        # schema hint meant for model signatures; neither applies to a logged dataset.
        warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer.*")
        # The store keeps 36 characters of digest; the full one goes to the input's tags.
        dataset = mlflow.data.from_pandas(df, source=source, name=name, digest=digest[:36])
        mlflow.log_input(dataset, context=context, tags={"digest": digest})
