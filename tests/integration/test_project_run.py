"""Runs started inside ``mlflow run`` (``MLFLOW_RUN_ID`` exported): nested under the project's
run instead of resuming it; the project run checked and stamped by ``ProjectRun``."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from facelens.errors import ConfigError
from facelens.tracking.params import TrackingParams
from facelens.tracking.project import DVC_EXPERIMENT_TAG, ENTRY_POINT_TAG, ProjectRun
from facelens.tracking.reaper import HOST_TAG, PID_TAG
from facelens.tracking.runs import tracked_run


@pytest.fixture
def launcher(sqlite_store, monkeypatch) -> str:
    """A project run as ``mlflow run`` leaves it: RUNNING, its id in ``MLFLOW_RUN_ID``."""
    sqlite_store("facelens")
    client = MlflowClient()
    exp = client.get_experiment_by_name("facelens").experiment_id
    run_id = client.create_run(exp, tags={"mlflow.project.entryPoint": "train"}).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    return run_id


def test_stage_runs_nest_under_the_launcher_instead_of_resuming_it(launcher) -> None:
    client = MlflowClient()
    with tracked_run("tune study") as parent, tracked_run("trial-000", nested=True) as trial:
        pass
    with tracked_run("train expression") as train:
        pass
    runs = {r: client.get_run(r) for r in (parent.info.run_id, trial.info.run_id)}
    assert parent.info.run_id != launcher and train.info.run_id != launcher
    tags = runs[parent.info.run_id].data.tags
    assert tags["mlflow.parentRunId"] == launcher
    assert runs[trial.info.run_id].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert client.get_run(train.info.run_id).data.tags["mlflow.parentRunId"] == launcher
    project = client.get_run(launcher)
    assert project.info.status == "RUNNING"  # never resumed, never ended by a stage
    assert project.data.tags.get("mlflow.runName") not in ("tune study", "train expression")
    assert os.environ["MLFLOW_RUN_ID"] == launcher  # still there for later runs and children

    # A resumed run keeps its own parent.
    with tracked_run("evaluate", run_id=train.info.run_id, keep_status_on_error=True):
        pass
    assert client.get_run(train.info.run_id).data.tags["mlflow.parentRunId"] == launcher


def test_a_launcher_run_missing_from_the_store_is_one_clear_error(launcher, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)
    with (
        pytest.raises(ConfigError, match=r"MLFLOW_RUN_ID=0{32}.*unset MLFLOW_RUN_ID"),
        tracked_run("train"),
    ):
        pass
    assert mlflow.active_run() is None


def test_project_run_is_stamped_and_checked(launcher) -> None:
    client = MlflowClient()
    tracking = TrackingParams(experiment="facelens")
    with ProjectRun(launcher, tracking, "train", "mlflow-abc") as project:
        tags = client.get_run(launcher).data.tags
        assert tags[ENTRY_POINT_TAG] == "train" and tags[DVC_EXPERIMENT_TAG] == "mlflow-abc"
        assert tags[PID_TAG] and tags[HOST_TAG]
        project.tag_lineage(Path.cwd(), tracking, "expression", "v" * 16)
    tags = client.get_run(launcher).data.tags
    assert tags["data_version"] == "v" * 16 and tags["facelens.task"] == "expression"
    assert {"git_commit", "params_hash", "mlflow_version"} <= set(tags)


def test_project_run_in_another_experiment_is_refused(launcher) -> None:
    tracking = TrackingParams(experiment="elsewhere")
    with pytest.raises(ConfigError, match="--experiment-name elsewhere"):
        ProjectRun(launcher, tracking, "train", None).__enter__()
