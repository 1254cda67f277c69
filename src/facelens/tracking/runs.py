"""MLflow runs: configuration, lineage tags and logging helpers.

This is the only module that starts MLflow runs. Runs are opened by :func:`tracked_run`, a
context manager that always closes them (``FINISHED``, ``FAILED`` or ``KILLED``), and
training reports through :class:`MlflowEpochLogger`, a ``fit()`` callback, so training code
never imports mlflow.
"""

from __future__ import annotations

import os
import platform
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from pydantic import BaseModel

from facelens._io import canonical_hash, flatten_metrics

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowEpochLogger",
    "configure",
    "end_shared_run",
    "lineage_tags",
    "log_dataset",
    "reopen_shared_run",
    "start_shared_run",
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


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return _UNKNOWN


def lineage_tags(
    repo_dir: Path,
    *,
    params: Mapping[str, Any] | BaseModel,
    data_version: str,
) -> dict[str, str]:
    """Tags that tie a run to its code, data and parameters.

    Args:
        repo_dir: the repository root (holds ``.git``).
        params: the parameters of the run (hashed, not logged).
        data_version: the prepared data's version
            (:func:`facelens.data.manifest.data_version`).

    Returns:
        ``git_commit`` (sha or ``unknown``), ``git_dirty`` (``true``/``false``/``unknown``:
        tracked files modified), ``data_version``, ``params_hash`` (sha256 of the params'
        canonical JSON), ``python_version``, ``torch_version`` and ``mlflow_version``.
    """
    repo_dir = Path(repo_dir)
    commit = _git(repo_dir, "rev-parse", "HEAD")
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit or _UNKNOWN,
        "git_dirty": _UNKNOWN if status is None else str(bool(status)).lower(),
        "data_version": data_version,
        "params_hash": canonical_hash(params),
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
    parent_run_id: str | None = None,
    keep_status_on_error: bool = False,
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
        parent_run_id: nest the new run under this run (e.g. a :func:`start_shared_run`
            run that is not active in this process).
        keep_status_on_error: end ``FINISHED`` even when the block fails (the failure goes
            to the ``error`` tag): for a later stage logging into a run that already
            finished, whose own outcome must not change.

    Yields:
        The active run.
    """
    run = mlflow.start_run(
        run_id=run_id,
        run_name=None if run_id else name,  # a resumed run keeps its name
        nested=nested,
        parent_run_id=parent_run_id,
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
        status = _exit_status(None if keep_status_on_error else error)
        client = mlflow.MlflowClient()
        if error is not None and _exit_status(error) != RunStatus.to_string(RunStatus.FINISHED):
            message = f"{type(error).__name__}: {error}"[:_MAX_TAG_CHARS]
            client.set_tag(own_id, _ERROR_TAG, message)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == own_id:
            mlflow.end_run(status=status)
        else:  # the block ended our run itself or left a child open: close ours by id
            client.set_terminated(own_id, status=status)


def start_shared_run(name: str, *, tags: Mapping[str, str] | None = None) -> str:
    """Create a ``RUNNING`` run in the active experiment without making it this process's
    active run, and return its id.

    Processes on any host nest their runs under it (``tracked_run(parent_run_id=...)``); it
    stays open until one of them ends it (:func:`end_shared_run`, or ``tracked_run(run_id=...)``
    around its last logging), so no process ends it while others still log under it.
    """
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.tracking.fluent import _get_experiment_id  # what mlflow.start_run uses

    resolved = resolve_tags({k: str(v) for k, v in (tags or {}).items()})
    run = mlflow.MlflowClient().create_run(_get_experiment_id(), tags=resolved, run_name=name)
    return run.info.run_id


def reopen_shared_run(run_id: str) -> mlflow.entities.Run:
    """Mark a shared run ``RUNNING`` again (a resumed study) and return it.

    Raises:
        MlflowException: no such run in the tracking store.
    """
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    return run


def end_shared_run(run_id: str, error: BaseException | None = None) -> None:
    """End a shared run as :func:`tracked_run` would after ``error`` (None: ``FINISHED``)."""
    client = mlflow.MlflowClient()
    if error is not None and _exit_status(error) != RunStatus.to_string(RunStatus.FINISHED):
        client.set_tag(run_id, _ERROR_TAG, f"{type(error).__name__}: {error}"[:_MAX_TAG_CHARS])
    client.set_terminated(run_id, status=_exit_status(error))


class MlflowEpochLogger:
    """A ``fit()`` callback that logs each epoch's losses and metrics with ``step=epoch``.

    Logs ``train_loss``, ``val_loss``, ``val_metric``, ``epoch_seconds`` and the numeric
    entries of ``result.metrics`` (flattened with ``/``); None and non-finite values are
    skipped.

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
        flat = flatten_metrics(values)  # drops None and NaN: no point worth plotting
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
