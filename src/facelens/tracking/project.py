"""The project's run of an ``mlflow run`` (``MLproject``): MLflow creates and ends it; facelens
checks where it is, stamps it with its owner and heartbeat while DVC runs the stages, and gives
it the stages' lineage tags.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import mlflow
from mlflow.entities import RunStatus, RunTag
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from facelens.errors import ConfigError
from facelens.tracking.params import TrackingParams
from facelens.tracking.reaper import Heartbeat, Owner, owner_tags
from facelens.tracking.runs import configure_stage, lineage_tags

__all__ = ["DVC_EXPERIMENT_TAG", "ENTRY_POINT_TAG", "ProjectRun"]

#: The MLproject entry point of a project run.
ENTRY_POINT_TAG = "facelens.entry_point"
#: The DVC experiment (``dvc exp show``) a project run recorded.
DVC_EXPERIMENT_TAG = "dvc.experiment"


class ProjectRun:
    """The run ``run_id`` that ``mlflow run`` created for an entry point, held by this process
    for the ``with`` block.

    Entering configures tracking like a stage (closing dead runs), checks that the run is in
    ``tracking.experiment`` and stamps it; the block runs DVC.

    Raises:
        ConfigError: the run does not exist in the tracking store, or it is in another
            experiment than the one the stages record to (their runs could not be its
            children in the MLflow UI).
    """

    def __init__(
        self, run_id: str, tracking: TrackingParams, entry: str, dvc_experiment: str | None
    ) -> None:
        self.run_id = run_id
        self.tracking = tracking
        self.entry = entry
        self.dvc_experiment = dvc_experiment
        self._heartbeat: Heartbeat | None = None

    def __enter__(self) -> ProjectRun:
        configure_stage(self.tracking.tracking_uri, self.tracking.experiment)
        client = mlflow.MlflowClient()
        uri = mlflow.get_tracking_uri()
        try:
            run = client.get_run(self.run_id)
        except MlflowException as exc:
            raise ConfigError(
                f"MLFLOW_RUN_ID={self.run_id}: no such run in {uri} ({exc.message.splitlines()[0]})"
            ) from None
        experiment = client.get_experiment(run.info.experiment_id).name
        if experiment != self.tracking.experiment:
            raise ConfigError(
                f"the project run {self.run_id} is in MLflow experiment {experiment!r} but the "
                f"stages record to tracking.experiment {self.tracking.experiment!r}: run "
                f"`mlflow run . --experiment-name {self.tracking.experiment} ...`"
            )
        tags = owner_tags(Owner.current(RunStatus.to_string(RunStatus.KILLED)))
        tags.update({ENTRY_POINT_TAG: self.entry, "facelens.stage": "mlproject"})
        if self.dvc_experiment:
            tags[DVC_EXPERIMENT_TAG] = self.dvc_experiment
        client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self._heartbeat = Heartbeat(self.run_id, uri).__enter__()
        return self

    def tag_lineage(self, repo_dir: Path, params: BaseModel, task: str, data_version: str) -> None:
        """Give the run the lineage tags a stage's run has (:func:`lineage_tags`), from the
        code, params and data as DVC left them, and ``facelens.task``."""
        tags = lineage_tags(repo_dir, params=params, data_version=data_version)
        tags["facelens.task"] = task
        mlflow.MlflowClient().log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._heartbeat is not None:
            self._heartbeat.__exit__(exc_type, exc, tb)
