"""Search space -> trial suggestions: the only ``trial.suggest_*`` calls.

The space itself (ranges and choices) is :class:`facelens.tuning.params.SearchSpace`.
"""

from __future__ import annotations

from typing import Any

import optuna

from facelens.tuning.params import FloatRange, IntRange, SearchSpace

__all__ = ["base_point", "for_task", "suggest"]


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Draw one value per dimension of ``space`` from ``trial``.

    Args:
        trial: the Optuna trial to ask.
        space: the validated search space.

    Returns:
        ``{name: value}`` in the field order of :class:`SearchSpace`; plain Python scalars.
    """
    out: dict[str, Any] = {}
    for name in type(space).model_fields:
        dim = getattr(space, name)
        if isinstance(dim, FloatRange):
            out[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log, step=dim.step)
        elif isinstance(dim, IntRange):
            out[name] = trial.suggest_int(name, dim.low, dim.high, step=dim.step, log=dim.log)
        else:
            out[name] = trial.suggest_categorical(name, list(dim))
    return out


def for_task(space: SearchSpace, task: str, label_smoothing: float) -> SearchSpace:
    """The space a study of ``task`` searches: on ``attributes`` (an MSE loss) label smoothing
    does nothing, so it is fixed to the ``train`` section's value instead of spending trials
    and sampler dimensions on it.

    Args:
        space: the validated ``tune.space``.
        task: ``expression`` or ``attributes``.
        label_smoothing: the ``train`` section's value (what the base recipe uses).
    """
    if task != "attributes":
        return space
    return space.model_copy(update={"label_smoothing": [float(label_smoothing)]})


def _contains(dim: Any, value: Any) -> bool:
    if isinstance(dim, FloatRange | IntRange):
        return isinstance(value, int | float) and dim.low <= value <= dim.high
    return value in list(dim)


def base_point(space: SearchSpace, base: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The base recipe as a point of ``space``, for ``study.enqueue_trial``.

    Args:
        space: the validated search space.
        base: ``{name: value}`` of the untuned recipe (the ``train`` section, the model's
            ``arch``, the trial's epoch cap).

    Returns:
        ``(point, outside)``: the point, and ``"name=value"`` for each base value the space
        does not contain (the point is then not enqueued; the caller says why).
    """
    point = {name: base[name] for name in type(space).model_fields}
    outside = [
        f"{name}={value!r}"
        for name, value in point.items()
        if not _contains(getattr(space, name), value)
    ]
    return point, outside
