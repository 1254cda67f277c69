"""The Optuna study: storage, sampler, pruner, resume, workers, and the trials still missing.

:func:`create_study` opens (or resumes) a named study in ``tune.storage``
(:mod:`facelens.tuning.storage`); :func:`run_study` is one worker: it runs trials until the
study holds ``n_trials`` finished ones, whoever ran them, and summarizes the study. Any
number of workers, in processes on any hosts, may run it on one shared storage.

The objective is a plain function ``objective_fn(trial_params, report) -> float``: it trains
with ``trial_params`` and calls ``report(epoch, value)`` after each epoch; ``report`` raises
:class:`optuna.TrialPruned` when the pruner says so. It never sees Optuna or MLflow objects.

This module never imports MLflow: recording enters through a :class:`StudyTracker` that the
``tune`` stage passes in (:class:`facelens.tracking.study.MlflowStudyTracker`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from facelens._io import canonical_hash
from facelens.errors import ConfigError
from facelens.interrupts import raise_if_requested
from facelens.progress import note as progress_note
from facelens.progress import task as progress_task
from facelens.tuning.params import TuneParams
from facelens.tuning.samplers import make_pruner, make_sampler
from facelens.tuning.space import base_point
from facelens.tuning.storage import StaleTrialFn, liveness, make_storage, redact_url, study_lock
from facelens.tuning.trial import ObjectiveFn, TrialTracker, trial_objective

__all__ = [
    "BASE_RECIPE_ATTR",
    "StudyResult",
    "StudyTracker",
    "create_study",
    "enqueue_base",
    "make_pruner",
    "make_sampler",
    "redact_url",
    "run_study",
    "study_name_for",
]

_log = logging.getLogger(__name__)

#: Trials that count toward ``n_trials``; failed trials are retried by a later call.
_DONE = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class StudyResult:
    """Summary of a study after :func:`run_study` (counts cover the whole study)."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float | None
    n_complete: int
    n_pruned: int
    n_failed: int
    #: The tracker's run for the whole study (the MLflow parent run), when tracked.
    parent_run_id: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return asdict(self)


class StudyTracker(Protocol):
    """Where a study is recorded (e.g. one MLflow parent run, one nested run per trial).

    Every worker :meth:`join` s the study's record (created exactly once: the call holds the
    study's lock), records each trial it runs in :meth:`trial`, closes the records of trials
    whose worker died in :meth:`trial_died`, and the worker that leaves while no trial runs
    anywhere :meth:`close` s the record. A trial ends pruned when :class:`optuna.TrialPruned`
    leaves the :meth:`trial` block, failed on any other exception, complete after
    :meth:`TrialTracker.complete`.
    """

    #: Id of the record of the whole study once :meth:`join` returned.
    run_id: str | None
    #: Remarks for the user collected while recording (e.g. "parent run not resumed").
    notes: list[str]

    def join(self, study: optuna.Study, params: TuneParams) -> None:
        """Find the study's record or create it (called under the study's lock)."""
        ...

    def trial(
        self, trial: optuna.Trial, trial_params: Mapping[str, Any]
    ) -> AbstractContextManager[TrialTracker]:
        """Enclose one trial."""
        ...

    def trial_died(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Close the record of a trial that the heartbeat found dead (its worker is gone)."""
        ...

    def close(self, study: optuna.Study, result: StudyResult, error: BaseException | None) -> None:
        """Summarize and end the study's record (no trial is running; under the lock)."""
        ...


def study_name_for(base: str, *, task: str, data_version: str, sections: Mapping[str, Any]) -> str:
    """``<base>-<hash>``: identical data and search config resume the same study; a changed
    dataset, task, model, recipe or space starts a fresh one (old trials would mislead).

    Args:
        base: ``tune.study_name``.
        task: ``expression`` or ``attributes``.
        data_version: the prepared data's version.
        sections: the params that define a trial (e.g. ``model``, ``train``, ``space``,
            ``train_fraction``), JSON-able or pydantic models.
    """
    fingerprint = canonical_hash(
        {
            "task": task,
            "data": data_version,
            **{
                k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v
                for k, v in sections.items()
            },
        }
    )
    return f"{base}-{fingerprint[:8]}"


def create_study(
    params: TuneParams, *, on_stale: StaleTrialFn | None = None, worker: int = 0
) -> optuna.Study:
    """Create the study ``params.study_name`` or load it when it exists (resume, or join).

    Args:
        params: the ``tune`` section; ``storage`` is an Optuna storage URL
            (``sqlite:///optuna.db``, ``postgresql://...``), ``journal:<file>`` or None
            (in memory).
        on_stale: called with each trial whose worker died (see
            :func:`facelens.tuning.storage.make_storage`), e.g.
            :meth:`StudyTracker.trial_died`.
        worker: this worker's number (seeds the sampler apart from the other workers').

    Returns:
        The study, with the seeded sampler and the pruner attached.

    Raises:
        ConfigError: the stored study optimizes in the other direction, or bad liveness
            settings.
    """
    study = optuna.create_study(
        storage=make_storage(params, on_stale),
        study_name=params.study_name,
        direction=params.direction,
        pruner=make_pruner(params),
        load_if_exists=True,
    )
    stored = study.direction.name.lower()
    if stored != params.direction:
        raise ConfigError(
            f"study {params.study_name!r} in {redact_url(params.storage)} is stored with direction "
            f"{stored!r} but tune.direction is {params.direction!r}; use another study_name "
            "or the stored direction"
        )
    offset = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(params, offset=offset, worker=worker)
    return study


#: User attribute (and MLflow trial tag) of the trial that runs the untuned base recipe.
BASE_RECIPE_ATTR = "base_recipe"


def enqueue_base(study: optuna.Study, params: TuneParams, base: Mapping[str, Any]) -> str | None:
    """Enqueue the base recipe as the first trial of a new study (``tune.enqueue_base``).

    Only a study without any trial gets it (a resumed or joined study already has it), under
    the study's lock so that workers starting together enqueue it once.

    Returns:
        Why the base recipe was not enqueued although asked for, else None.
    """
    if not params.enqueue_base:
        return None
    point, outside = base_point(params.space, dict(base))
    if outside:
        note = f"base recipe not enqueued: tune.space does not contain {', '.join(outside)}"
        _log.warning("%s", note)
        return note
    with study_lock(params, "enqueue-base"):
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(point, user_attrs={BASE_RECIPE_ATTR: True})
    return None


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _poll(study: optuna.Study, heartbeat: bool) -> tuple[int, int]:
    """``(finished, running)`` trials of the study, after failing those whose worker died."""
    if heartbeat:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    counts = _counts(study)
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED], counts[TrialState.RUNNING]


def _trial_line(study: optuna.Study, params: TuneParams, trial: FrozenTrial) -> str:
    """``"trial 3 COMPLETE 0.8123 (4/20 finished in the study; best 0.8530, trial 1)"``."""
    done = len(study.get_trials(deepcopy=False, states=_DONE))
    value = "" if trial.value is None else f" {trial.value:.4f}"
    if trial.state == TrialState.PRUNED and trial.last_step is not None:
        value = f" at epoch {trial.last_step}"
    best = _best(study)
    where = "" if best is None else f"; best {best.value:.4f}, trial {best.number}"
    return (
        f"trial {trial.number} {trial.state.name}{value} "
        f"({done}/{params.n_trials} finished in the study{where})"
    )


def _missing(study: optuna.Study, params: TuneParams) -> tuple[int, list[str]]:
    """Finished trials still missing from ``n_trials``, and a note when some exist."""
    n_done = len(study.get_trials(deepcopy=False, states=_DONE))
    remaining = max(0, params.n_trials - n_done)
    notes: list[str] = []
    if remaining == 0:
        notes.append(f"study already has {n_done} finished trials (n_trials={params.n_trials})")
    elif n_done:
        notes.append(f"resumed: {n_done} finished trials kept, {remaining} more to run")
        _log.warning("study %s %s", params.study_name, notes[-1])
    return remaining, notes


def run_study(
    study: optuna.Study,
    params: TuneParams,
    objective_fn: ObjectiveFn,
    *,
    tracker: StudyTracker | None = None,
    progress: bool = True,
    max_trials: int | None = None,
) -> StudyResult:
    """Work on the study until it holds ``params.n_trials`` finished trials; summarize it.

    ``n_trials`` is a target for the study: trials already ``COMPLETE`` or ``PRUNED`` count,
    whoever ran them, so a resumed study only runs the remainder and several workers on one
    storage share it. A trial starts only while finished plus running trials are fewer than
    ``n_trials``; a trial enqueued again after its worker died (heartbeat) runs first. A
    failing trial is recorded as ``FAIL`` and the work goes on.

    The call ends when the study is done, after ``max_trials`` trials of its own (default:
    the trials missing when it started, so a trial that always fails cannot loop), or after
    ``params.timeout`` seconds. With heartbeats on, a worker that has nothing to start waits
    while other trials run: one may die, and its trial is then retried here. The worker that
    leaves while no trial runs closes the tracker's record of the study.

    Args:
        study: from :func:`create_study`.
        params: the ``tune`` section.
        objective_fn: ``(trial_params, report) -> final validation metric``.
        tracker: records the study and each trial (e.g. in MLflow); None records nothing.
        progress: show the trials (:mod:`facelens.progress`) and print one line per
            finished trial.
        max_trials: at most this many trials of this call.

    Returns:
        The :class:`StudyResult` of the whole study.

    Raises:
        KeyboardInterrupt: re-raised after the trial's and (if last) the study's records
            were closed.
    """
    remaining, notes = _missing(study, params)
    budget = remaining if max_trials is None else max_trials
    deadline = None if params.timeout is None else time.monotonic() + params.timeout

    def objective(trial: optuna.Trial) -> float:
        return trial_objective(trial, params, objective_fn, tracker)

    if tracker is not None:
        with study_lock(params, "parent-run"):
            tracker.join(study, params)
    try:
        _run_trials(study, params, objective, budget, deadline, progress)
    except BaseException as exc:
        _leave_on(exc, study, params, tracker, notes)
        raise
    return _leave(study, params, tracker, notes, None)


def _leave_on(
    error: BaseException,
    study: optuna.Study,
    params: TuneParams,
    tracker: StudyTracker | None,
    notes: list[str],
) -> None:
    """:func:`_leave` after the trials stopped on ``error``; a failure to close the study's
    record is logged and cannot replace ``error`` (a Ctrl-C stays one line, not a traceback)."""
    try:
        _leave(study, params, tracker, notes, error)
    except Exception as exc:
        _log.warning("the study's record was not closed after %s: %s", type(error).__name__, exc)


def _run_trials(
    study: optuna.Study,
    params: TuneParams,
    objective: Callable[[optuna.Trial], float],
    budget: int,
    deadline: float | None,
    progress: bool,
) -> None:
    """Start trials one at a time while the study needs them (at most ``budget``, until
    ``deadline``); with heartbeats, wait while other workers' trials run."""
    live = liveness(params)
    heartbeat = live.heartbeat_interval is not None
    ran = 0
    finished = len(study.get_trials(deepcopy=False, states=_DONE))
    with progress_task("trials", params.n_trials, done=finished, enabled=progress) as bar:
        while True:
            raise_if_requested()
            done, running = _poll(study, heartbeat)
            best = _best(study)
            bar.update(done, {} if best is None else {"best": float(best.value or 0.0)})
            may_run = ran < budget and (deadline is None or time.monotonic() < deadline)
            if may_run and done + running < params.n_trials:
                ended: list[FrozenTrial] = []
                study.optimize(
                    objective,
                    n_trials=1,
                    catch=(Exception,),
                    callbacks=[lambda _, t, ended=ended: ended.append(t)],
                )
                ran += 1
                if progress and ended:
                    progress_note(_trial_line(study, params, ended[0]))
            elif may_run and running and heartbeat:
                time.sleep(min(float(live.heartbeat_interval or 1), 5.0))
            else:
                return


def _leave(
    study: optuna.Study,
    params: TuneParams,
    tracker: StudyTracker | None,
    notes: list[str],
    error: BaseException | None,
) -> StudyResult:
    """The result; the last worker out (no trial running) closes the study's record."""
    if tracker is None:
        return _result(study, None, notes)
    with study_lock(params, "parent-run"):
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if running:
            notes.append(f"{running} trial(s) still running in other workers: they close the study")
        notes.extend(tracker.notes)
        result = _result(study, tracker.run_id, notes)
        if not running:
            tracker.close(study, result, error)
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
