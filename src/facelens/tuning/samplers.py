"""The sampler and the pruner of a study, from the ``tune`` params."""

from __future__ import annotations

import warnings

import optuna

from facelens.tuning.params import TuneParams
from facelens.tuning.storage import SHARED_KINDS, storage_kind

__all__ = ["make_pruner", "make_sampler"]


def make_sampler(
    params: TuneParams, *, offset: int = 0, worker: int = 0
) -> optuna.samplers.BaseSampler:
    """The sampler of ``params``, seeded with ``seed + offset`` (and the worker's number).

    Pass the number of trials already in the study as ``offset`` so a resumed study does not
    replay the random start-up points of the first session; workers starting together get
    distinct seeds through ``worker``, and TPE's constant liar keeps them from sampling next
    to each other's running trials.
    """
    seed = params.seed + offset + 7919 * worker
    if params.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    shared = params.workers > 1 or storage_kind(params.storage) in SHARED_KINDS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            n_startup_trials=params.n_startup_trials, seed=seed, constant_liar=shared
        )


def make_pruner(params: TuneParams) -> optuna.pruners.BasePruner:
    """The pruner of ``params`` (``median``, ``hyperband`` or ``none``)."""
    if params.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=params.n_startup_trials, n_warmup_steps=params.n_warmup_steps
        )
    if params.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    return optuna.pruners.NopPruner()
