"""MLflow runs: configuration, run states, epoch logging, datasets and lineage tags."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

from facelens._io import canonical_hash
from facelens.tracking.runs import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MlflowEpochLogger,
    configure,
    lineage_tags,
    log_dataset,
    tracked_run,
)


@pytest.fixture
def mlflow_store(sqlite_store) -> str:
    """A private sqlite tracking store under tmp_path."""
    return sqlite_store("test")


def _run(run_id: str) -> Any:
    return MlflowClient().get_run(run_id)


def test_configure_env_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tagged = SimpleNamespace(tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}, experiment_id="1")
    monkeypatch.setattr(mlflow, "set_experiment", lambda name=None, experiment_id=None: tagged)
    assert configure("sqlite:///from-params.db", "x") == "sqlite:///from-params.db"
    assert mlflow.get_tracking_uri() == "sqlite:///from-params.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert configure("sqlite:///from-params.db", "x") == f"sqlite:///{tmp_path}/env.db"


def test_configure_creates_experiment_with_artifact_location(mlflow_store, tmp_path) -> None:
    experiment = mlflow.get_experiment_by_name("test")
    assert experiment is not None
    assert str(tmp_path / "artifacts") in experiment.artifact_location


def test_experiments_open_on_model_training_not_genai(mlflow_store) -> None:
    """MLflow 3's UI picks an experiment's landing view from ``mlflow.experimentKind``: a
    new experiment gets the model-training kind, and so does an existing one without it."""
    client = MlflowClient()
    assert client.get_experiment_by_name("test").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    old = client.create_experiment("made-by-an-older-facelens")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    configure(None, "made-by-an-older-facelens")
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_workers_racing_to_tag_the_experiment_both_go_on(mlflow_store, monkeypatch) -> None:
    """Two tuning workers configuring a fresh experiment at once both insert the kind tag; a
    SQL store refuses the second insert (PostgreSQL: unique violation). The loser reads the
    winner's tag back instead of dying; any other failure to tag still raises."""
    client = MlflowClient()
    exp_id = client.create_experiment("raced")
    real = MlflowClient.set_experiment_tag

    def other_worker_won(self, experiment_id, key, value):
        real(self, experiment_id, key, value)  # the other worker's insert lands first
        raise MlflowException("duplicate key value violates unique constraint")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", other_worker_won)
    configure(None, "raced")
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    def store_down(self, experiment_id, key, value):
        raise MlflowException("the store refused the tag")

    client.create_experiment("untagged")
    monkeypatch.setattr(MlflowClient, "set_experiment_tag", store_down)
    with pytest.raises(MlflowException, match="refused"):
        configure(None, "untagged")


def test_losing_the_experiment_creation_race_still_selects_it(mlflow_store, monkeypatch) -> None:
    """MLflow's ``set_experiment`` returns the experiment another process created a moment
    earlier without making it active; runs must still land in it, not in Default."""
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    real = TrackingServiceClient.create_experiment

    def created_elsewhere(self, name, *args, **kwargs):
        real(self, name, *args, **kwargs)
        raise MlflowException("exists", error_code=RESOURCE_ALREADY_EXISTS)

    with monkeypatch.context() as patch:
        patch.setattr(TrackingServiceClient, "create_experiment", created_elsewhere)
        configure(None, "created-by-another-worker")
    with mlflow.start_run() as run:
        pass
    exp = MlflowClient().get_experiment_by_name("created-by-another-worker")
    assert run.info.experiment_id == exp.experiment_id


def test_tracked_run_finishes_and_sets_tags(mlflow_store) -> None:
    with tracked_run("ok", tags={"stage": "train"}) as run:
        mlflow.log_param("a", 1)
    got = _run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "ok"
    assert got.data.tags["stage"] == "train"
    assert mlflow.active_run() is None


def test_tracked_run_failed_on_exception_and_records_it(mlflow_store) -> None:
    with pytest.raises(RuntimeError, match="boom"), tracked_run("bad") as run:
        raise RuntimeError("boom")
    got = _run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["error"] == "RuntimeError: boom"
    assert mlflow.active_run() is None


def test_tracked_run_killed_on_keyboard_interrupt(mlflow_store) -> None:
    with pytest.raises(KeyboardInterrupt), tracked_run("stopped") as run:
        raise KeyboardInterrupt
    assert _run(run.info.run_id).info.status == "KILLED"


@pytest.mark.parametrize("error", [RuntimeError("evaluate broke"), KeyboardInterrupt()])
def test_a_later_stage_failing_in_a_finished_run_keeps_it_finished(mlflow_store, error) -> None:
    """evaluate / explain / manifold log into the finished train run; their failure is
    recorded as a tag and never turns the trained model's run FAILED or KILLED."""
    with tracked_run("train") as train:
        pass
    with (
        pytest.raises(type(error)),
        tracked_run("evaluate", run_id=train.info.run_id, keep_status_on_error=True),
    ):
        raise error
    got = _run(train.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.tags["error"].startswith(type(error).__name__)


def test_tracked_run_nested_and_resume(mlflow_store) -> None:
    with tracked_run("parent") as parent:
        with tracked_run("child", nested=True) as child:
            pass
        assert mlflow.active_run().info.run_id == parent.info.run_id
    assert _run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert _run(child.info.run_id).info.status == "FINISHED"

    with tracked_run("evaluate", run_id=parent.info.run_id) as resumed:
        assert resumed.info.run_id == parent.info.run_id
        assert _run(parent.info.run_id).info.status == "RUNNING"
        mlflow.log_param("resumed", "yes")
    got = _run(parent.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["resumed"] == "yes"
    assert got.info.run_name == "parent"


def test_tracked_run_closes_a_run_the_block_left_open(mlflow_store) -> None:
    with tracked_run("outer") as outer:
        mlflow.start_run(run_name="leaked", nested=True)  # a bug in the block: never ended
    assert _run(outer.info.run_id).info.status == "FINISHED"
    mlflow.end_run()


@dataclass
class _Epoch:
    epoch: int
    train_loss: float
    val_loss: float | None
    val_metric: float
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.5


def test_epoch_logger_logs_history_per_step(mlflow_store) -> None:
    logger = MlflowEpochLogger()
    with tracked_run("fit") as run:
        for epoch, (loss, metric) in enumerate([(1.0, 0.2), (0.5, 0.4), (0.25, 0.6)]):
            logger.on_epoch_end(
                _Epoch(
                    epoch,
                    loss,
                    None if epoch == 0 else loss + 0.1,
                    metric,
                    {"per_class_f1": [0.1, 0.2], "cm": {"n": 3}, "note": "x", "ok": True},
                )
            )
    client = MlflowClient()
    rid = run.info.run_id
    history = client.get_metric_history(rid, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert [m.step for m in client.get_metric_history(rid, "val_loss")] == [1, 2]
    assert client.get_metric_history(rid, "val_metric")[-1].value == pytest.approx(0.6)
    metrics = _run(rid).data.metrics
    assert metrics["per_class_f1/1"] == pytest.approx(0.2)
    assert metrics["cm/n"] == 3.0
    assert "note" not in metrics and "ok" not in metrics


def test_epoch_logger_prefix_and_run_id(mlflow_store) -> None:
    with tracked_run("target") as target:
        pass
    MlflowEpochLogger(prefix="trial", run_id=target.info.run_id).on_epoch_end(
        _Epoch(4, 0.3, 0.4, 0.5)
    )
    assert _run(target.info.run_id).data.metrics["trial/val_metric"] == 0.5


def test_log_dataset_records_digest_and_context(mlflow_store) -> None:
    df = pd.DataFrame({"id": ["a", "b"], "label": [0, 3]})
    digest = "0123456789abcdef0123456789abcdef.dir"
    with tracked_run("data") as run:
        log_dataset(df, name="splits/train", digest=digest, context="training", source="data/x")
    inputs = _run(run.info.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == "splits/train"
    assert inputs[0].dataset.digest == digest[:36]
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["digest"] == digest


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_lineage_tags(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "params.yaml").write_text("a: 1\n")
    _git(repo, "add", "params.yaml")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")

    tags = lineage_tags(repo, params={"b": 2, "a": 1}, data_version="0123abcd")
    assert len(tags["git_commit"]) == 40
    assert tags["git_dirty"] == "false"
    assert tags["data_version"] == "0123abcd"
    assert tags["params_hash"] == canonical_hash({"a": 1, "b": 2})
    assert tags["params_hash"] != canonical_hash({"a": 1, "b": 3})
    assert tags["torch_version"] != "unknown"
    assert all(isinstance(v, str) for v in tags.values())

    (repo / "params.yaml").write_text("a: 2\n")
    assert lineage_tags(repo, params={}, data_version="x")["git_dirty"] == "true"


def test_lineage_tags_outside_git(tmp_path: Path) -> None:
    tags = lineage_tags(tmp_path, params={}, data_version="0123abcd")
    assert tags["git_commit"] == "unknown"
    assert tags["git_dirty"] == "unknown"
