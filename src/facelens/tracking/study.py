"""A study recorded in MLflow: one parent run per study, one nested run per trial.

:class:`MlflowStudyTracker` is the :class:`facelens.tuning.study.StudyTracker` the ``tune``
stage passes to :func:`facelens.tuning.study.run_study`; the tuning code itself never sees
MLflow.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.entities import Param, Run
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState

from facelens.tracking.runs import tracked_run
from facelens.tracking.shared_runs import end_shared_run, reopen_shared_run, start_shared_run
from facelens.tuning.params import TuneParams
from facelens.tuning.study import BASE_RECIPE_ATTR, StudyResult, redact_url

__all__ = [
    "PARENT_RUN_ATTR",
    "TRIAL_NUMBER_ATTR",
    "TRIAL_RUN_ATTR",
    "WORKER_TAG",
    "MlflowStudyTracker",
]

#: Study user attribute holding the MLflow parent run id (so a resumed study reuses it).
PARENT_RUN_ATTR = "mlflow_parent_run_id"
#: Trial user attribute holding the trial's MLflow run id.
TRIAL_RUN_ATTR = "mlflow_run_id"
#: Trial user attribute holding the number of the trial whose params it first ran (kept by
#: the copy that retries a trial whose worker died).
TRIAL_NUMBER_ATTR = "first_trial_number"
#: Tag of a trial run (and of the parent run): ``<host>:<pid>`` of the worker that ran it.
WORKER_TAG = "facelens.worker"


class _TrialRun:
    """Logs one trial's per-epoch objective and its final value to the active nested run."""

    def epoch(self, epoch: int, value: float) -> None:
        mlflow.log_metric("objective", value, step=epoch)

    def complete(self, value: float) -> None:
        mlflow.set_tag("state", TrialState.COMPLETE.name)
        mlflow.log_metric("final_objective", value)


class MlflowStudyTracker:
    """One MLflow parent run per study, shared by all its workers, and one nested run per
    trial with the trial's params, ``trial_number``, per-epoch ``objective`` values and a
    ``state`` tag (``COMPLETE`` / ``PRUNED`` / ``FAIL``; a failure also gets ``error``).

    The parent's id is kept in the study's user attrs: the first worker to :meth:`join`
    creates it (under the study's lock, so two workers starting together create one), the
    others and a resumed study reuse it. No worker ends it while another runs a trial: the
    worker that leaves while none runs :meth:`close` s it with the tune settings as params,
    ``best_value`` and counts as metrics, the best params as tags and ``study/result.json``,
    ``study/trials.csv``, ``optimization_history.html``, ``parallel_coordinate.html`` and
    ``param_importances.html`` (when >= 2 complete trials vary a param).

    Needs :func:`facelens.tracking.runs.configure` first.

    Args:
        parent_run_name: the name of the parent run when one is created.
        tags: extra tags of the parent run and every trial run (e.g. the device used).
    """

    def __init__(self, parent_run_name: str, tags: Mapping[str, str] | None = None) -> None:
        self.parent_run_name = parent_run_name
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        self.notes: list[str] = []
        self._study_name = ""

    def join(self, study: optuna.Study, params: TuneParams) -> None:
        """Reuse the study's parent run or create it (the caller holds the study's lock)."""
        self._study_name = params.study_name
        stored_id = study.user_attrs.get(PARENT_RUN_ATTR)
        parent = _reusable(stored_id, self.notes) if stored_id else None
        if parent is None:
            tags = {
                **self.tags,
                "study_name": params.study_name,
                "storage": redact_url(params.storage),
                WORKER_TAG: _worker_id(),  # the worker that created it
            }
            self.run_id = start_shared_run(self.parent_run_name, tags=tags)
            study.set_user_attr(PARENT_RUN_ATTR, self.run_id)
            _log_settings(self.run_id, params)
            resumed: bool | None = False
        else:
            self.run_id = parent.info.run_id
            was_open = parent.info.status == "RUNNING"
            reopen_shared_run(self.run_id)
            resumed = None if was_open else True  # joining a running study is no resume
        client = mlflow.MlflowClient()
        client.set_tag(self.run_id, "n_trials_target", str(params.n_trials))
        if resumed is not None:
            client.set_tag(self.run_id, "resumed", str(resumed))

    @contextmanager
    def trial(self, trial: optuna.Trial, trial_params: Mapping[str, Any]) -> Iterator[_TrialRun]:
        """A nested run around one trial; a pruned trial's run ends ``FINISHED``."""
        pruned: optuna.TrialPruned | None = None
        tags = {
            **self.tags,
            "study_name": self._study_name,
            "trial_number": str(trial.number),
            WORKER_TAG: _worker_id(),
        }
        # A trial enqueued again after its worker died carries its original's user attrs.
        retry_of = trial.user_attrs.get(TRIAL_NUMBER_ATTR)
        if retry_of is not None:
            tags["retry_of"] = str(retry_of)
        if trial.user_attrs.get(BASE_RECIPE_ATTR):
            tags[BASE_RECIPE_ATTR] = "true"  # the untuned recipe, for comparison
        name = f"trial-{trial.number:03d}"
        with tracked_run(name, parent_run_id=self.run_id, tags=tags) as run:
            trial.set_user_attr(TRIAL_RUN_ATTR, run.info.run_id)
            if retry_of is None:
                trial.set_user_attr(TRIAL_NUMBER_ATTR, trial.number)
            mlflow.log_params({**trial_params, "trial_number": trial.number})
            try:
                yield _TrialRun()
            except optuna.TrialPruned as exc:
                pruned = exc  # a normal outcome: the run ends FINISHED with state PRUNED
                mlflow.set_tag("state", TrialState.PRUNED.name)
            except BaseException:
                mlflow.set_tag("state", TrialState.FAIL.name)
                raise
        if pruned is not None:
            raise pruned

    def trial_died(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """End the run of a trial whose worker died ``KILLED`` with state ``FAIL``."""
        run_id = trial.user_attrs.get(TRIAL_RUN_ATTR)
        if not run_id:
            return  # it died before its run started
        client = mlflow.MlflowClient()
        try:
            if client.get_run(run_id).info.status != "RUNNING":
                return  # already closed (a retried trial carries its original's id)
        except MlflowException:
            return
        client.set_tag(run_id, "state", TrialState.FAIL.name)
        client.set_tag(
            run_id, "error", f"worker died: trial {trial.number} sent no heartbeat in time"
        )
        client.set_terminated(run_id, status="KILLED")

    @staticmethod
    def stored_run_id(study: optuna.Study) -> str | None:
        """The id of the study's parent run (None before a worker joined it)."""
        return study.user_attrs.get(PARENT_RUN_ATTR)

    def is_open(self, study: optuna.Study) -> bool:
        """Whether the study's parent run is still ``RUNNING`` (no worker closed it)."""
        run_id = self.stored_run_id(study)
        if run_id is None:
            return False
        try:
            return mlflow.MlflowClient().get_run(run_id).info.status == "RUNNING"
        except MlflowException:
            return False

    def close(self, study: optuna.Study, result: StudyResult, error: BaseException | None) -> None:
        """Log the study's summary on the parent run and end it (``KILLED`` / ``FAILED``
        without a summary when this worker stops on ``error``)."""
        if self.run_id is None:
            return
        if error is not None:
            end_shared_run(self.run_id, error)
            return
        with tracked_run(self.parent_run_name, run_id=self.run_id):
            _log_study_artifacts(study, result.notes)
            _log_summary(study, result)
            if result.notes:
                mlflow.set_tag("notes", "; ".join(result.notes)[:5000])


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _reusable(run_id: str, notes: list[str]) -> Run | None:
    """The stored parent run when it can take more trials (else a note says why not)."""
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException as exc:  # gone, or another tracking store
        notes.append(f"parent run {run_id} not resumed: {exc.message}")
        return None
    active = mlflow.tracking.fluent._get_experiment_id()
    if run.info.lifecycle_stage != "active" or run.info.experiment_id != active:
        notes.append(
            f"parent run {run_id} not resumed: it is {run.info.lifecycle_stage} in experiment "
            f"{run.info.experiment_id} (active experiment: {active})"
        )
        return None
    return run


def _log_settings(run_id: str, params: TuneParams) -> None:
    client = mlflow.MlflowClient()
    settings = {
        "study_name": params.study_name,
        "sampler": params.sampler,
        "pruner": params.pruner,
        "seed": params.seed,
        "direction": params.direction,
        "n_startup_trials": params.n_startup_trials,
        "train_fraction": params.train_fraction,
    }
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in settings.items()])
    client.log_dict(run_id, params.space.model_dump(mode="json"), "study/search_space.json")


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _varying_params(study: optuna.Study) -> list[str]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({k for t in complete for k in t.params})
    return [n for n in names if len({repr(t.params.get(n)) for t in complete}) > 1]


def _log_study_artifacts(study: optuna.Study, notes: list[str]) -> None:
    """Log the trials table and the plotly figures (HTML) on the active (parent) run."""
    from optuna import visualization as vis

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if study.trials:
            study.trials_dataframe().to_csv(out / "trials.csv", index=False)
            mlflow.log_artifact(str(out / "trials.csv"), artifact_path="study")
        if not complete:
            notes.append("no complete trial: optimization history and plots skipped")
            return
        figures = {
            "optimization_history": lambda: vis.plot_optimization_history(study),
            "parallel_coordinate": lambda: vis.plot_parallel_coordinate(study),
        }
        varying = _varying_params(study)
        if len(complete) >= 2 and varying:
            figures["param_importances"] = lambda: vis.plot_param_importances(study, params=varying)
        else:
            notes.append(
                "param importances skipped: needs >= 2 complete trials with varying params "
                f"(have {len(complete)} complete, varying: {varying or 'none'})"
            )
        for name, build in figures.items():
            try:
                fig = build()
            except Exception as exc:  # a plot must never fail the study
                notes.append(f"{name} skipped: {type(exc).__name__}: {exc}")
                continue
            path = out / f"{name}.html"
            fig.write_html(str(path), include_plotlyjs=True)  # offline: embed plotly.js
            mlflow.log_artifact(str(path), artifact_path="study")


def _log_summary(study: optuna.Study, result: StudyResult) -> None:
    mlflow.log_metrics(
        {
            "n_complete": result.n_complete,
            "n_pruned": result.n_pruned,
            "n_failed": result.n_failed,
        }
    )
    if result.best_value is not None:
        mlflow.log_metric("best_value", result.best_value)
    # Params are immutable in MLflow and a resumed study may change its best trial, so the
    # best params go to a JSON artifact and to (mutable) tags.
    mlflow.log_dict(result.to_dict(), "study/result.json")
    best = _best(study)
    mlflow.set_tags(
        {
            "best_trial": str(best.number) if best else "none",
            **{f"best.{k}": str(v) for k, v in result.best_params.items()},
        }
    )
