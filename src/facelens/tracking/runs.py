"""MLflow runs: configuration, lineage tags and logging helpers.

This is the only module that starts MLflow runs. Runs are opened by :func:`tracked_run`, a
context manager that always closes them (``FINISHED``, ``FAILED`` or ``KILLED``), and
training reports through :class:`MlflowEpochLogger`, a ``fit()`` callback, so training code
never imports mlflow.

Every run started or resumed here carries its owner's stamp and heartbeat
(:mod:`facelens.tracking.reaper`), so a run whose process died is found and closed by
:func:`configure_stage`, which every stage calls before its first run.

Under ``mlflow run`` (an ``MLproject`` entry point), MLflow exports ``MLFLOW_RUN_ID``, the
project's run, to the command, and a plain ``mlflow.start_run()`` would *resume* that run in
every stage, collapsing all of them into it. :func:`tracked_run` instead starts each stage's new
top-level run as a child of it (``mlflow.parentRunId``): the project's run is the parent of the
stages' runs, and those of their nested runs (tuning trials) one level further down.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from facelens._io import canonical_hash, flatten_metrics
from facelens.errors import ConfigError
from facelens.tracking.reaper import Heartbeat, Owner, Reaped, owner_tags, reap
from facelens.tracking.workspace import check_workspace

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "LAUNCHER_RUN_ENV",
    "MlflowEpochLogger",
    "configure",
    "configure_stage",
    "launcher_parent",
    "lineage_tags",
    "log_dataset",
    "tracked_run",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Set by ``mlflow run`` to the project's run id (MLflow's own name for it).
LAUNCHER_RUN_ENV = "MLFLOW_RUN_ID"
_ERROR_TAG = "error"
_MAX_TAG_CHARS = 5000
_UNKNOWN = "unknown"


#: The experiment tag MLflow 3's UI reads to choose an experiment's landing view, and the
#: value that opens it on runs and training charts (not the GenAI overview).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


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

    Raises:
        ConfigError: the experiment's artifacts lie in another workspace, the one this one
            was copied or moved from (:func:`~facelens.tracking.workspace.check_workspace`).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    if artifact_location is not None and mlflow.get_experiment_by_name(experiment) is None:
        try:
            mlflow.create_experiment(experiment, artifact_location=artifact_location)
        except MlflowException:
            # Another process (a second tuning worker) created it between the lookup and
            # the create; use theirs.
            if mlflow.get_experiment_by_name(experiment) is None:
                raise
    exp = mlflow.set_experiment(experiment)
    # When two processes create the experiment at once, MLflow's loser returns it without
    # making it the active one; select it by id so runs never land in the Default experiment.
    mlflow.set_experiment(experiment_id=exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        _set_kind_tag(exp.experiment_id)
    check_workspace(exp.experiment_id, uri)  # a copied workspace
    return uri


def _set_kind_tag(experiment_id: str) -> None:
    """Tag the experiment as a model-training one (MLflow 3's UI opens an experiment without
    the tag on its GenAI overview): on new experiments and on existing ones the first time a
    stage logs to them. Processes starting together (tuning workers) race to insert the same
    tag, and a SQL store refuses the second insert with a unique-key error: the loser reads
    the tag back and accepts the winner's value."""
    client = mlflow.MlflowClient()
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except MlflowException:
        tags = client.get_experiment(experiment_id).tags
        if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            raise


def configure_stage(tracking_uri: str | None, experiment: str) -> list[Reaped]:
    """:func:`configure`, then close the experiment's dead runs (:func:`reaper.reap
    <facelens.tracking.reaper.reap>`), printing one line per run on stderr: what every stage
    that records to MLflow calls before its first run.

    Returns:
        The runs closed.
    """
    configure(tracking_uri, experiment)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    closed = reap(client, [exp.experiment_id]) if exp is not None else []
    for dead in closed:
        print(f"reaped {dead.line()}", file=sys.stderr)
    return closed


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


def launcher_parent(
    env: Mapping[str, str], *, run_id: str | None, nested: bool, active: bool
) -> str | None:
    """The run a new run must be nested under because this process was launched inside it
    (``MLFLOW_RUN_ID``, exported by ``mlflow run``), or None.

    Only a new top-level run gets one: a resumed run keeps its parent and a nested run's parent
    is the active run.
    """
    if run_id is not None or nested or active:
        return None
    return env.get(LAUNCHER_RUN_ENV) or None


@contextmanager
def _launcher_hidden() -> Iterator[None]:
    """``MLFLOW_RUN_ID`` out of the environment around ``mlflow.start_run``, which would
    otherwise resume it, and ``mlflow.end_run``; both delete it for the rest of the process and
    its children, where later runs must still find their parent."""
    launcher = os.environ.pop(LAUNCHER_RUN_ENV, None)
    try:
        yield
    finally:
        if launcher is not None:
            os.environ[LAUNCHER_RUN_ENV] = launcher


def _start(
    name: str,
    tags: dict[str, str],
    *,
    nested: bool,
    run_id: str | None,
    parent_run_id: str | None = None,
) -> mlflow.ActiveRun:
    parent = parent_run_id or launcher_parent(
        os.environ, run_id=run_id, nested=nested, active=mlflow.active_run() is not None
    )
    try:
        with _launcher_hidden():
            return mlflow.start_run(
                run_id=run_id,
                run_name=None if run_id else name,  # a resumed run keeps its name
                nested=nested,
                parent_run_id=parent,
                tags=tags,
            )
    except MlflowException as exc:
        if parent is None:
            raise
        raise ConfigError(
            f"{LAUNCHER_RUN_ENV}={parent}: cannot nest run {name!r} under it in "
            f"{mlflow.get_tracking_uri()} ({exc.message.splitlines()[0]}); unset "
            f"{LAUNCHER_RUN_ENV} or point MLFLOW_TRACKING_URI at the store that holds it"
        ) from None


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
    exception propagates. While it is open the run carries this process's owner stamp and a
    heartbeat, so that if the process dies :func:`facelens.tracking.reaper.reap` closes it.
    A new top-level run started inside ``mlflow run`` is nested under the project's run
    (:func:`launcher_parent`).

    Args:
        name: the name of a new run (a resumed run keeps the name it has).
        tags: tags to set on the run.
        nested: start it as a child of the active run.
        run_id: resume this run instead of creating one.
        parent_run_id: nest the new run under this run (e.g. a :func:`start_shared_run`
            run that is not active in this process).
        keep_status_on_error: end ``FINISHED`` even when the block fails (the failure goes
            to the ``error`` tag): for a later stage logging into a run that already
            finished, whose own outcome must not change (nor does the reaper's, should this
            process die).

    Yields:
        The active run.
    """
    on_death = RunStatus.FINISHED if keep_status_on_error else RunStatus.KILLED
    all_tags = {k: str(v) for k, v in (tags or {}).items()}
    all_tags.update(owner_tags(Owner.current(RunStatus.to_string(on_death))))
    run = _start(name, all_tags, nested=nested, run_id=run_id, parent_run_id=parent_run_id)
    own_id = run.info.run_id
    error: BaseException | None = None
    try:
        with Heartbeat(own_id, mlflow.get_tracking_uri()):
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
            with _launcher_hidden():  # end_run deletes MLFLOW_RUN_ID too
                mlflow.end_run(status=status)
        else:  # the block ended our run itself or left a child open: close ours by id
            client.set_terminated(own_id, status=status)


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
