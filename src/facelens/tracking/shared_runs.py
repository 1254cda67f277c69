"""Runs shared by processes: a tuning study's parent run, created by one worker, under which
every worker on any host nests its trials, and ended by whichever finishes last."""

from __future__ import annotations

import os
from collections.abc import Mapping

import mlflow
from mlflow.entities import RunStatus

from facelens.tracking.runs import _ERROR_TAG, _MAX_TAG_CHARS, _exit_status, launcher_parent

__all__ = ["end_shared_run", "reopen_shared_run", "start_shared_run"]


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
    launcher = launcher_parent(os.environ, run_id=None, nested=False, active=False)
    if launcher is not None:  # under `mlflow run`: the study nests under the project's run
        resolved.setdefault("mlflow.parentRunId", launcher)
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
