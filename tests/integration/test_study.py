"""Optuna study + MLflow: nested runs, pruning, failures, resume, artifacts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient

from facelens.tracking.study import PARENT_RUN_ATTR, MlflowStudyTracker
from facelens.tuning.params import SearchSpace, TuneParams
from facelens.tuning.study import (
    BASE_RECIPE_ATTR,
    create_study,
    enqueue_base,
    redact_url,
    run_study,
)
from facelens.tuning.trial import FAIL_REASON_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    "optimizer": ["adamw", "sgd"],
    "batch_size": [8],
    "epochs": [3],
}


@pytest.fixture
def mlflow_store(sqlite_store) -> str:
    """A private sqlite tracking store under tmp_path."""
    return sqlite_store("tune-test")


def _params(tmp_path: Path, **kw) -> TuneParams:
    raw = {
        "study_name": "s",
        "storage": f"sqlite:///{tmp_path}/optuna.db",
        "n_trials": 3,
        "seed": 0,
        "sampler": "random",
        "pruner": "median",
        "n_startup_trials": 1,
        "space": SPACE,
    }
    raw.update(kw)
    return TuneParams.model_validate(raw)


def _scripted(curves: list[list[float] | Exception]) -> Callable:
    """An objective that plays one scripted learning curve per call (raising for exceptions)."""
    calls: list[dict] = []

    def objective(trial_params: dict, report: Callable[[int, float], None]) -> float:
        script = curves[len(calls) % len(curves)]
        calls.append(dict(trial_params))
        if isinstance(script, BaseException):
            raise script
        for epoch, value in enumerate(script):
            report(epoch, value)
        return script[-1]

    objective.calls = calls  # type: ignore[attr-defined]
    return objective


def _children(parent_id: str) -> list:
    runs = MlflowClient().search_runs(
        experiment_ids=[mlflow.get_experiment_by_name("tune-test").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
    )
    return sorted(runs, key=lambda r: int(r.data.params["trial_number"]))


def _artifacts(run_id: str, path: str = "study") -> set[str]:
    return {Path(f.path).name for f in MlflowClient().list_artifacts(run_id, path)}


def test_pruned_and_complete_trials_become_nested_runs(mlflow_store, tmp_path) -> None:
    params = _params(tmp_path)
    # Trial 0 sets the median; trial 1 is far below it at epoch 0 -> pruned; trial 2 completes.
    objective = _scripted([[0.5, 0.7, 0.8], [0.01, 0.02, 0.03], [0.6, 0.8, 0.9]])
    study = create_study(params)
    result = run_study(study, params, objective, tracker=MlflowStudyTracker("tune"), progress=False)

    assert (result.n_complete, result.n_pruned, result.n_failed) == (2, 1, 0)
    assert result.best_value == pytest.approx(0.9)
    assert result.best_params == study.best_trial.params
    assert set(result.best_params) == set(SearchSpace.model_fields)
    assert result.to_dict()["study_name"] == "s"

    parent = MlflowClient().get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(0.9)
    assert parent.data.params["sampler"] == "random"
    assert parent.data.tags["best_trial"] == "2"
    assert study.user_attrs[PARENT_RUN_ATTR] == result.parent_run_id

    children = _children(result.parent_run_id)
    assert [c.data.tags["state"] for c in children] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert children[0].data.params["optimizer"] in ("adamw", "sgd")
    assert children[0].data.params["epochs"] == "3"
    history = MlflowClient().get_metric_history(children[0].info.run_id, "objective")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.7), (2, 0.8)]
    pruned_history = MlflowClient().get_metric_history(children[1].info.run_id, "objective")
    assert len(pruned_history) == 1  # stopped at the first report
    assert "final_objective" not in children[1].data.metrics

    files = _artifacts(result.parent_run_id)
    assert {"optimization_history.html", "parallel_coordinate.html", "trials.csv"} <= files
    assert {"param_importances.html", "result.json", "search_space.json"} <= files

    # Pruned trials count as done: running the study again has nothing left to do.
    run_study(
        create_study(params), params, objective, tracker=MlflowStudyTracker("tune"), progress=False
    )
    assert len(objective.calls) == 3


def test_failed_trial_is_recorded_and_study_goes_on(mlflow_store, tmp_path) -> None:
    params = _params(tmp_path, pruner="none")
    objective = _scripted([[0.4], RuntimeError("CUDA out of memory"), [0.6]])
    study = create_study(params)
    result = run_study(study, params, objective, tracker=MlflowStudyTracker("tune"), progress=False)

    assert (result.n_complete, result.n_pruned, result.n_failed) == (2, 0, 1)
    assert len(objective.calls) == 3
    children = _children(result.parent_run_id)
    failed = children[1]
    assert failed.data.tags["state"] == "FAIL"
    assert failed.info.status == "FAILED"
    assert "CUDA out of memory" in failed.data.tags["error"]
    assert [c.data.tags["state"] for c in children] == ["COMPLETE", "FAIL", "COMPLETE"]
    (trial,) = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert trial.user_attrs[FAIL_REASON_ATTR] == "RuntimeError: CUDA out of memory"
    assert MlflowClient().get_run(result.parent_run_id).info.status == "FINISHED"


def test_nan_objective_is_a_failure(mlflow_store, tmp_path) -> None:
    params = _params(tmp_path, n_trials=1, pruner="none")
    study = create_study(params)
    result = run_study(
        study,
        params,
        lambda p, report: float("nan"),
        tracker=MlflowStudyTracker("t"),
        progress=False,
    )
    assert result.n_failed == 1
    assert result.best_value is None and result.best_params == {}
    assert any("no complete trial" in n for n in result.notes)
    (child,) = _children(result.parent_run_id)
    assert child.data.tags["state"] == "FAIL"
    (trial,) = study.trials
    assert "the objective returned nan" in trial.user_attrs[FAIL_REASON_ATTR]


def test_resume_runs_only_the_remainder_in_the_same_parent(mlflow_store, tmp_path) -> None:
    objective = _scripted([[0.3], [0.5], [0.4], [0.45]])
    first = run_study(
        create_study(_params(tmp_path, n_trials=2, pruner="none")),
        _params(tmp_path, n_trials=2, pruner="none"),
        objective,
        tracker=MlflowStudyTracker("tune"),
        progress=False,
    )
    assert first.n_complete == 2

    params3 = _params(tmp_path, n_trials=3, pruner="none")
    study = create_study(params3)  # a new process would do exactly this
    assert len(study.trials) == 2
    second = run_study(
        study, params3, objective, tracker=MlflowStudyTracker("tune"), progress=False
    )

    assert len(objective.calls) == 3  # only one new trial
    assert second.n_complete == 3
    assert second.parent_run_id == first.parent_run_id
    parent = MlflowClient().get_run(second.parent_run_id)
    assert parent.data.tags["resumed"] == "True"
    assert parent.data.tags["n_trials_target"] == "3"
    assert parent.info.status == "FINISHED"
    assert [c.data.params["trial_number"] for c in _children(second.parent_run_id)] == [
        "0",
        "1",
        "2",
    ]

    again = run_study(create_study(params3), params3, objective, tracker=MlflowStudyTracker("tune"))
    assert len(objective.calls) == 3  # nothing left to do
    assert any("already has 3 finished trials" in n for n in again.notes)


def test_interrupted_study_is_killed_then_resumed(mlflow_store, tmp_path) -> None:
    params = _params(tmp_path, n_trials=3, pruner="none")
    objective = _scripted([[0.3], KeyboardInterrupt(), [0.5], [0.6]])
    with pytest.raises(KeyboardInterrupt):
        run_study(
            create_study(params), params, objective, tracker=MlflowStudyTracker("t"), progress=False
        )
    study = create_study(params)
    parent_id = study.user_attrs[PARENT_RUN_ATTR]
    assert MlflowClient().get_run(parent_id).info.status == "KILLED"
    assert mlflow.active_run() is None

    result = run_study(study, params, objective, tracker=MlflowStudyTracker("t"), progress=False)
    assert result.parent_run_id == parent_id
    assert result.n_complete == 3
    states = [c.info.status for c in _children(parent_id)]
    assert states.count("KILLED") == 1 and states.count("FINISHED") == 3


def test_an_interrupt_stays_an_interrupt_when_the_study_record_cannot_close(
    mlflow_store, tmp_path, monkeypatch, caplog
) -> None:
    """Ctrl-C must reach the stage as ``KeyboardInterrupt`` (one line, exit 130) even when
    closing the parent run fails on the way out (e.g. the tracking store is locked)."""
    params = _params(tmp_path, n_trials=3, pruner="none")
    tracker = MlflowStudyTracker("t")

    def broken_close(*args) -> None:
        raise RuntimeError("tracking store locked")

    monkeypatch.setattr(tracker, "close", broken_close)
    objective = _scripted([[0.3], KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        run_study(create_study(params), params, objective, tracker=tracker, progress=False)
    assert "not closed after KeyboardInterrupt: tracking store locked" in caplog.text
    assert [t.state.name for t in create_study(params).trials] == ["COMPLETE", "FAIL"]


def test_parent_in_another_store_is_not_resumed(mlflow_store, tmp_path) -> None:
    params = _params(tmp_path, n_trials=1, pruner="none")
    study = create_study(params)
    study.set_user_attr(PARENT_RUN_ATTR, "0" * 32)  # e.g. the MLflow DB was wiped
    result = run_study(
        study, params, lambda p, r: 1.0, tracker=MlflowStudyTracker("t"), progress=False
    )
    assert result.parent_run_id != "0" * 32
    assert study.user_attrs[PARENT_RUN_ATTR] == result.parent_run_id
    assert any("not resumed" in n for n in result.notes)


def test_importances_skipped_with_a_note_when_nothing_varies(mlflow_store, tmp_path) -> None:
    fixed = {
        "lr": [1e-3],
        "weight_decay": [0.0],
        "optimizer": ["adamw"],
        "batch_size": [8],
        "trainable_blocks": [5],
        "head": ["pooled"],
        "dropout": [0.1],
        "label_smoothing": [0.0],
        "augment": [0.0],
        "epochs": [2],
        "arch": ["vgg16_bn"],
    }
    params = _params(tmp_path, n_trials=2, pruner="none", space=fixed)
    result = run_study(
        create_study(params),
        params,
        lambda p, r: 0.5,
        tracker=MlflowStudyTracker("t"),
        progress=False,
    )
    assert any("param importances skipped" in n for n in result.notes)
    files = _artifacts(result.parent_run_id)
    assert "param_importances.html" not in files
    assert "optimization_history.html" in files


def test_timeout_bounds_the_call(tmp_path) -> None:
    params = _params(tmp_path, n_trials=50, timeout=0.3, pruner="none", storage=None)

    def slow(trial_params, report) -> float:
        time.sleep(0.1)
        return 1.0

    result = run_study(create_study(params), params, slow, progress=False)
    assert 1 <= result.n_complete < 50  # 50 trials of 0.1 s would take 5 s: the timeout stopped it
    assert result.parent_run_id is None


def test_direction_mismatch_is_refused(tmp_path) -> None:
    create_study(_params(tmp_path))
    with pytest.raises(ValueError, match="direction 'maximize'"):
        create_study(_params(tmp_path, direction="minimize"))


def test_resumed_sampler_does_not_replay_start_points(tmp_path) -> None:
    params = _params(tmp_path, n_trials=2, pruner="none")
    quiet = {"progress": False}
    run_study(create_study(params), params, lambda p, r: 1.0, **quiet)
    more = _params(tmp_path, n_trials=4, pruner="none")
    study = create_study(more)
    run_study(study, more, lambda p, r: 1.0, **quiet)
    lrs = [t.params["lr"] for t in study.trials]
    assert len(set(lrs)) == 4


def test_storage_password_is_not_logged(mlflow_store, tmp_path) -> None:
    assert redact_url("postgresql://optuna:s3cret@db:5432/optuna") == (
        "postgresql://optuna:***@db:5432/optuna"
    )
    assert redact_url("sqlite:///optuna.db") == "sqlite:///optuna.db"
    params = _params(tmp_path, n_trials=1, pruner="none")
    result = run_study(
        create_study(params), params, lambda p, r: 1.0, tracker=MlflowStudyTracker("t")
    )
    tags = MlflowClient().get_run(result.parent_run_id).data.tags
    assert tags["storage"] == params.storage


def _base(**kw) -> dict:
    base = {"lr": 1.0e-3, "optimizer": "adamw", "batch_size": 8, "epochs": 3}
    for name, dim in SearchSpace().model_dump().items():  # fixed choices: their first value
        if name not in ("lr", "optimizer", "batch_size", "epochs"):
            base[name] = dim[0] if isinstance(dim, list) else dim["low"]
    base.update(kw)
    return base


def test_base_recipe_is_trial_zero_once_and_tagged(mlflow_store, tmp_path) -> None:
    params = _params(tmp_path, space={**SPACE, "lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    study = create_study(params)
    assert enqueue_base(study, params, _base()) is None
    assert enqueue_base(study, params, _base(lr=2e-3)) is None  # not a second time
    objective = _scripted([[0.5, 0.6, 0.7]])
    tracker = MlflowStudyTracker("tune s")
    result = run_study(study, params, objective, tracker=tracker, progress=False)
    assert objective.calls[0]["lr"] == 1.0e-3 and objective.calls[0]["optimizer"] == "adamw"
    assert [c["lr"] for c in objective.calls].count(1.0e-3) == 1
    runs = _children(result.parent_run_id)
    assert [r.data.tags.get(BASE_RECIPE_ATTR) for r in runs] == ["true", None, None]
    resumed = create_study(_params(tmp_path, n_trials=4, space=params.space.model_dump()))
    enqueue_base(resumed, params, _base())  # a resumed study is not given it again
    assert all(t.state != optuna.trial.TrialState.WAITING for t in resumed.get_trials())


def test_base_recipe_outside_the_space_is_named_not_enqueued(tmp_path) -> None:
    params = _params(tmp_path)
    study = create_study(params)
    note = enqueue_base(study, params, _base(lr=0.5, optimizer="rmsprop"))
    assert note == (
        "base recipe not enqueued: tune.space does not contain lr=0.5, optimizer='rmsprop'"
    )
    assert study.get_trials() == []
    off = _params(tmp_path, enqueue_base=False, study_name="t")
    off_study = create_study(off)
    assert enqueue_base(off_study, off, _base()) is None and off_study.get_trials() == []


def test_tune_stage_studies_attributes_without_label_smoothing() -> None:
    """The stage's study on attributes fixes label smoothing to the train section's value (its
    name hashes that space, its base recipe is inside it); expression keeps the written space."""
    from facelens.config import load_params
    from facelens.stages.tune import base_recipe, study_name, study_params
    from facelens.tuning.space import base_point

    params = load_params()
    attrs = params.model_copy(update={"task": "attributes"})
    tune = study_params(attrs, "v1")
    assert tune.space.label_smoothing == [params.train.label_smoothing]
    assert tune.study_name == study_name(attrs, "v1")
    assert base_point(tune.space, base_recipe(attrs))[1] == []
    assert study_params(params, "v1").space == params.tune.space
    assert study_params(params, "v1").study_name == study_name(params, "v1")
