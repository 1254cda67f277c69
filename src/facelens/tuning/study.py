"""The Optuna study: storage, sampler, pruner, resume, and the trials still missing.

:func:`create_study` opens (or resumes) a named study in any Optuna storage URL;
:func:`run_study` runs the trials still missing from ``n_trials`` and summarizes the study.

The objective is a plain function ``objective_fn(trial_params, report) -> float``: it trains
with ``trial_params`` and calls ``report(epoch, value)`` after each epoch; ``report`` raises
:class:`optuna.TrialPruned` when the pruner says so. It never sees Optuna or MLflow objects.

This module never imports MLflow: recording enters through a :class:`StudyTracker` that the
``tune`` stage passes in (:class:`facelens.tracking.study.MlflowStudyTracker`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from facelens._io import canonical_hash
from facelens.errors import ConfigError
from facelens.interrupts import raise_if_requested
from facelens.tuning.params import TuneParams
from facelens.tuning.space import suggest

__all__ = [
    "ObjectiveFn",
    "ReportFn",
    "StudyResult",
    "StudyTracker",
    "TrialTracker",
    "create_study",
    "make_pruner",
    "make_sampler",
    "redact_url",
    "run_study",
    "study_name_for",
    "trial_objective",
]

_log = logging.getLogger(__name__)

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
    #: The tracker's run for the whole study (the MLflow parent run), when tracked.
    parent_run_id: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return asdict(self)


class TrialTracker(Protocol):
    """Records one trial while it runs (yielded by :meth:`StudyTracker.trial`)."""

    def epoch(self, epoch: int, value: float) -> None:
        """The objective after ``epoch`` (finite values only)."""
        ...

    def complete(self, value: float) -> None:
        """The trial finished with ``value``."""
        ...


class StudyTracker(Protocol):
    """Where a study is recorded (e.g. one MLflow parent run, one nested run per trial).

    :func:`run_study` enters :meth:`study` around the whole call and :meth:`trial` around each
    trial; a trial ends pruned when :class:`optuna.TrialPruned` leaves the :meth:`trial`
    block, failed on any other exception, complete after :meth:`TrialTracker.complete`.
    """

    #: Id of the record of the whole study once :meth:`study` is entered.
    run_id: str | None
    #: Remarks for the user collected while recording (e.g. "parent run not resumed").
    notes: list[str]

    def study(self, study: optuna.Study, params: TuneParams) -> AbstractContextManager[Any]:
        """Enclose a :func:`run_study` call."""
        ...

    def trial(
        self, trial: optuna.Trial, trial_params: Mapping[str, Any]
    ) -> AbstractContextManager[TrialTracker]:
        """Enclose one trial."""
        ...

    def summary(self, study: optuna.Study, result: StudyResult) -> None:
        """Record the study's summary (called inside :meth:`study`, after the trials)."""
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
        ConfigError: the stored study optimizes in the other direction.
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
        raise ConfigError(
            f"study {params.study_name!r} in {redact_url(params.storage)} is stored with direction "
            f"{stored!r} but tune.direction is {params.direction!r}; use another study_name "
            "or the stored direction"
        )
    study.sampler = make_sampler(params, offset=len(study.get_trials(deepcopy=False)))
    return study


def redact_url(url: str | None) -> str:
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
    tracker: StudyTracker | None = None,
) -> float:
    """Run one trial: suggest, train through ``objective_fn``, record it with ``tracker``.

    Returns:
        The final validation metric.

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
        Exception: whatever ``objective_fn`` raised (the trial is then ``FAIL``).
    """
    raise_if_requested()
    trial_params = suggest(trial, params.space)
    scope = tracker.trial(trial, trial_params) if tracker is not None else nullcontext(None)
    with scope as recorder:

        def report(epoch: int, value: float) -> None:
            value = float(value)
            trial.report(value, step=int(epoch))
            if recorder is not None and math.isfinite(value):
                recorder.epoch(int(epoch), value)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {epoch}")

        value = _check_value(objective_fn(dict(trial_params), report))
        if recorder is not None:
            recorder.complete(value)
    return value


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def run_study(
    study: optuna.Study,
    params: TuneParams,
    objective_fn: ObjectiveFn,
    *,
    tracker: StudyTracker | None = None,
    progress: bool = True,
) -> StudyResult:
    """Run the trials still missing from ``params.n_trials`` and summarize the study.

    ``n_trials`` is a target for the study: trials already ``COMPLETE`` or ``PRUNED`` count,
    so a resumed study only runs the remainder (failed trials are run again). A failing
    trial is recorded as ``FAIL`` and the study goes on. ``params.timeout`` bounds this call.

    Args:
        study: from :func:`create_study`.
        params: the ``tune`` section.
        objective_fn: ``(trial_params, report) -> final validation metric``.
        tracker: records the study and each trial (e.g. in MLflow); None records nothing.
        progress: show Optuna's progress bar.

    Returns:
        The :class:`StudyResult` of the whole study.

    Raises:
        KeyboardInterrupt: re-raised after the tracker has closed its records.
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
        return trial_objective(trial, params, objective_fn, tracker)

    scope = tracker.study(study, params) if tracker is not None else nullcontext()
    with scope:
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
        if tracker is not None:
            notes.extend(tracker.notes)
        result = _result(study, tracker.run_id if tracker is not None else None, notes)
        if tracker is not None:
            tracker.summary(study, result)
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
