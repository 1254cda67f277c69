"""Hyper-parameter tuning: the search space (``space``) and the Optuna study (``study``).

``study`` imports MLflow, so its names are loaded on first access; ``facelens.config`` only
needs :class:`TuneParams` and stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from facelens.tuning.space import FloatRange, IntRange, SearchSpace, TuneParams, suggest

if TYPE_CHECKING:
    from facelens.tuning.study import StudyResult, create_study, run_study

__all__ = [
    "FloatRange",
    "IntRange",
    "SearchSpace",
    "StudyResult",
    "TuneParams",
    "create_study",
    "run_study",
    "suggest",
]

_LAZY = {"StudyResult", "create_study", "run_study"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from facelens.tuning import study

        return getattr(study, name)
    raise AttributeError(f"module 'facelens.tuning' has no attribute {name!r}")
