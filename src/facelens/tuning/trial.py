"""One tuning trial: suggest its parameters, train through the objective, record it, and say
why it failed (the Optuna user attribute :data:`FAIL_REASON_ATTR`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Protocol

import optuna

from facelens.interrupts import raise_if_requested
from facelens.tuning.params import TuneParams
from facelens.tuning.space import suggest

if TYPE_CHECKING:
    from facelens.tuning.study import StudyTracker

__all__ = ["FAIL_REASON_ATTR", "ObjectiveFn", "ReportFn", "TrialTracker", "trial_objective"]

ReportFn = Callable[[int, float], None]
ObjectiveFn = Callable[[dict[str, Any], ReportFn], float]


class TrialTracker(Protocol):
    """Records one trial while it runs (yielded by :meth:`StudyTracker.trial`)."""

    def epoch(self, epoch: int, value: float) -> None:
        """The objective after ``epoch`` (finite values only)."""
        ...

    def complete(self, value: float) -> None:
        """The trial finished with ``value``."""
        ...


def _check_value(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the objective must return a number, got {type(value).__name__}") from None
    if not math.isfinite(out):
        raise ValueError(f"the objective returned {out}; a finite validation metric is needed")
    return out


#: User attribute of a failed trial: the exception that failed it (type and message).
FAIL_REASON_ATTR = "fail_reason"


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

        try:
            value = _check_value(objective_fn(dict(trial_params), report))
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # the study records FAIL; say why where Optuna users look
            trial.set_user_attr(FAIL_REASON_ATTR, f"{type(exc).__name__}: {exc}"[:1000])
            raise
        if recorder is not None:
            recorder.complete(value)
    return value
