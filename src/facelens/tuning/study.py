"""The Optuna study: storage, sampler, pruner, MLflow wiring and resume.

:func:`create_study` opens (or resumes) a named study in any Optuna storage URL;
:func:`run_study` runs the trials still missing, each as a nested MLflow run under one parent
run per study, and logs the study's summary and plots on the parent.

The objective is a plain function ``objective_fn(trial_params, report) -> float``: it trains
with ``trial_params`` and calls ``report(epoch, value)`` after each epoch; ``report`` raises
:class:`optuna.TrialPruned` when the pruner says so. It never sees Optuna or MLflow objects.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.exceptions import MlflowException
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from facelens.interrupts import raise_if_requested
from facelens.tracking.runs import tracked_run
from facelens.tuning.space import TuneParams, suggest

__all__ = [
    "PARENT_RUN_ATTR",
    "ReportFn",
    "StudyResult",
    "create_study",
    "make_pruner",
    "make_sampler",
    "run_study",
    "trial_objective",
]

_log = logging.getLogger(__name__)

#: Study user attribute holding the MLflow parent run id (so a resumed study reuses it).
PARENT_RUN_ATTR = "mlflow_parent_run_id"
#: Trial user attribute holding the trial's MLflow run id.
_TRIAL_RUN_ATTR = "mlflow_run_id"
#: Trials that count toward ``n_trials``; failed trials are retried by a later call.
_DONE = (TrialState.COMPLETE, TrialState.PRUNED)

ReportFn = Callable[[int, float], None]
ObjectiveFn = Callable[[dict[str, Any], ReportFn], float]


@dataclass
class StudyResult:
    """Summary of a study after :func:`run_study` (counts cover the whole study)."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float | None
    n_complete: int
    n_pruned: int
    n_failed: int
    parent_run_id: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return asdict(self)


def make_sampler(params: TuneParams, *, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler of ``params``, seeded with ``seed + offset``.

    Pass the number of trials already in the study as ``offset`` so a resumed study does not
    replay the random start-up points of the first session.
    """
    seed = params.seed + offset
    if params.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=params.n_startup_trials, seed=seed)


def make_pruner(params: TuneParams) -> optuna.pruners.BasePruner:
    """The pruner of ``params`` (``median``, ``hyperband`` or ``none``)."""
    if params.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=params.n_startup_trials, n_warmup_steps=params.n_warmup_steps
        )
    if params.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    return optuna.pruners.NopPruner()


def create_study(params: TuneParams) -> optuna.Study:
    """Create the study ``params.study_name`` or load it when it exists (resume).

    Args:
        params: the ``tune`` section; ``storage`` is any Optuna storage URL
            (``sqlite:///optuna.db``, ``postgresql://...``) or None for in-memory.

    Returns:
        The study, with the seeded sampler and the pruner attached.

    Raises:
        ValueError: the stored study optimizes in the other direction.
    """
    study = optuna.create_study(
        storage=params.storage,
        study_name=params.study_name,
        direction=params.direction,
        pruner=make_pruner(params),
        load_if_exists=True,
    )
    stored = study.direction.name.lower()
    if stored != params.direction:
        raise ValueError(
            f"study {params.study_name!r} in {_redact(params.storage)} is stored with direction "
            f"{stored!r} but tune.direction is {params.direction!r}; use another study_name "
            "or the stored direction"
        )
    study.sampler = make_sampler(params, offset=len(study.get_trials(deepcopy=False)))
    return study


def _redact(url: str | None) -> str:
    if url is None:
        return "<in-memory>"
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)  # hide a password in the URL


def _check_value(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the objective must return a number, got {type(value).__name__}") from None
    if not math.isfinite(out):
        raise ValueError(f"the objective returned {out}; a finite validation metric is needed")
    return out


def trial_objective(
    trial: optuna.Trial,
    params: TuneParams,
    objective_fn: ObjectiveFn,
    *,
    log_to_mlflow: bool,
) -> float:
    """Run one trial: suggest, train through ``objective_fn``, record it.

    With ``log_to_mlflow`` the trial is a nested run of the active run with the trial's
    params, ``trial_number``, per-epoch ``objective`` values and a ``state`` tag
    (``COMPLETE`` / ``PRUNED`` / ``FAIL``; a failure also gets the ``error`` tag).

    Returns:
        The final validation metric.

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
        Exception: whatever ``objective_fn`` raised (the trial is then ``FAIL``).
    """
    raise_if_requested()
    trial_params = suggest(trial, params.space)

    def report(epoch: int, value: float) -> None:
        value = float(value)
        trial.report(value, step=int(epoch))
        if log_to_mlflow and math.isfinite(value):
            mlflow.log_metric("objective", value, step=int(epoch))
        if trial.should_prune():
            raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {epoch}")

    if not log_to_mlflow:
        return _check_value(objective_fn(dict(trial_params), report))

    pruned: optuna.TrialPruned | None = None
    tags = {"study_name": params.study_name, "trial_number": str(trial.number)}
    with tracked_run(f"trial-{trial.number:03d}", nested=True, tags=tags) as run:
        trial.set_user_attr(_TRIAL_RUN_ATTR, run.info.run_id)
        mlflow.log_params({**trial_params, "trial_number": trial.number})
        try:
            value = _check_value(objective_fn(dict(trial_params), report))
        except optuna.TrialPruned as exc:
            pruned = exc  # a normal outcome: the run ends FINISHED with state PRUNED
            mlflow.set_tag("state", TrialState.PRUNED.name)
        except BaseException:
            mlflow.set_tag("state", TrialState.FAIL.name)
            raise
        else:
            mlflow.set_tag("state", TrialState.COMPLETE.name)
            mlflow.log_metric("final_objective", value)
    if pruned is not None:
        raise pruned
    return value


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def _best(study: optuna.Study) -> FrozenTrial | None:
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


def run_study(
    study: optuna.Study,
    params: TuneParams,
    objective_fn: ObjectiveFn,
    *,
    parent_run_name: str,
    log_to_mlflow: bool = True,
    progress: bool = True,
) -> StudyResult:
    """Run the trials still missing from ``params.n_trials`` and summarize the study.

    ``n_trials`` is a target for the study: trials already ``COMPLETE`` or ``PRUNED`` count,
    so a resumed study only runs the remainder (failed trials are run again). A failing
    trial is recorded as ``FAIL`` and the study goes on. ``params.timeout`` bounds this call.

    With ``log_to_mlflow`` (needs :func:`facelens.tracking.runs.configure` first) one parent
    run holds the study: it is created once and its id stored in the study's user attrs, so
    later calls resume it. Each trial is a nested run (:func:`trial_objective`). The parent
    gets the tune settings as params, ``best_value`` and counts as metrics, the best params as
    tags and ``study/result.json``, and ``study/trials.csv``, ``optimization_history.html``,
    ``parallel_coordinate.html`` and ``param_importances.html`` (when >= 2 complete trials
    vary a param; otherwise a note in ``StudyResult.notes``).

    Args:
        study: from :func:`create_study`.
        params: the ``tune`` section.
        objective_fn: ``(trial_params, report) -> final validation metric``.
        parent_run_name: name of the parent run when one is created.
        log_to_mlflow: record runs in MLflow.
        progress: show Optuna's progress bar.

    Returns:
        The :class:`StudyResult` of the whole study.

    Raises:
        KeyboardInterrupt: re-raised after the runs are closed as ``KILLED``.
    """
    n_done = len(study.get_trials(deepcopy=False, states=_DONE))
    remaining = max(0, params.n_trials - n_done)
    notes: list[str] = []
    if remaining == 0:
        notes.append(f"study already has {n_done} finished trials (n_trials={params.n_trials})")
    elif n_done:
        notes.append(f"resumed: {n_done} finished trials kept, {remaining} more to run")
        _log.warning("study %s %s", params.study_name, notes[-1])

    def objective(trial: optuna.Trial) -> float:
        return trial_objective(trial, params, objective_fn, log_to_mlflow=log_to_mlflow)

    def optimize() -> None:
        if remaining:
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=params.timeout,
                catch=(Exception,),
                # Other workers on a shared storage may finish the remainder first.
                callbacks=[MaxTrialsCallback(params.n_trials, states=_DONE)],
                show_progress_bar=progress,
            )

    if not log_to_mlflow:
        optimize()
        return _result(study, None, notes)

    tags = {"study_name": params.study_name, "storage": _redact(params.storage)}
    with ExitStack() as stack:
        parent, resumed = None, False
        stored_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if stored_id:
            try:
                parent = stack.enter_context(
                    tracked_run(parent_run_name, tags=tags, run_id=stored_id)
                )
                resumed = True
            except MlflowException as exc:  # gone, deleted or in another experiment
                notes.append(f"parent run {stored_id} not resumed: {exc.message}")
        if parent is None:
            parent = stack.enter_context(tracked_run(parent_run_name, tags=tags))
            study.set_user_attr(PARENT_RUN_ATTR, parent.info.run_id)
            mlflow.log_params(
                {
                    "study_name": params.study_name,
                    "sampler": params.sampler,
                    "pruner": params.pruner,
                    "seed": params.seed,
                    "direction": params.direction,
                    "n_startup_trials": params.n_startup_trials,
                    "train_fraction": params.train_fraction,
                }
            )
            mlflow.log_dict(params.space.model_dump(mode="json"), "study/search_space.json")
        mlflow.set_tags({"n_trials_target": str(params.n_trials), "resumed": str(resumed)})
        optimize()
        result = _result(study, parent.info.run_id, notes)
        _log_study_artifacts(study, result.notes)
        _log_summary(study, result)
        if result.notes:
            mlflow.set_tag("notes", "; ".join(result.notes)[:5000])
    return result


def _result(study: optuna.Study, parent_run_id: str | None, notes: list[str]) -> StudyResult:
    counts = _counts(study)
    best = _best(study)
    return StudyResult(
        study_name=study.study_name,
        best_params=dict(best.params) if best else {},
        best_value=float(best.value) if best and best.value is not None else None,
        n_complete=counts[TrialState.COMPLETE],
        n_pruned=counts[TrialState.PRUNED],
        n_failed=counts[TrialState.FAIL],
        parent_run_id=parent_run_id,
        notes=notes,
    )
