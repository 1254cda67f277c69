"""Search space -> trial suggestions: the only ``trial.suggest_*`` calls.

The space itself (ranges and choices) is :class:`facelens.tuning.params.SearchSpace`.
"""

from __future__ import annotations

from typing import Any

import optuna

from facelens.tuning.params import FloatRange, IntRange, SearchSpace

__all__ = ["suggest"]


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
