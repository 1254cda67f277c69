"""The ``tune`` params section: study identity, storage, budget, sampler, pruner and the
search space (``params.yaml: tune``).

A dimension of the space is a range (``{low, high, log}``) or an explicit list of choices.
A list with one element fixes the value but still goes through ``suggest_categorical``, so
every trial records every hyper-parameter and trials stay comparable in the MLflow UI.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

__all__ = ["FloatRange", "IntRange", "SearchSpace", "TuneParams"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatRange(_Closed):
    """A continuous dimension ``[low, high]``, sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0, description="Discretization step (not with log).")

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntRange(_Closed):
    """An integer dimension ``[low, high]`` (inclusive), stepped by ``step``."""

    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite, got low={low}, high={high}")
    if not low < high:
        raise ValueError(
            f"low must be < high, got low={low}, high={high}; "
            "for a fixed value use a one-element list, e.g. [0.1]"
        )
    if log and low <= 0:
        raise ValueError(f"log=true needs low > 0, got low={low}; raise low or set log: false")
    if log and step is not None:
        raise ValueError("step cannot be combined with log=true; drop one of them")


def _check_choices(value: Any) -> Any:
    if isinstance(value, list):
        if not value:
            raise ValueError("a list of choices must not be empty; give at least one value")
        if len(set(value)) != len(value):
            raise ValueError(f"choices must be unique, got {value}")
    return value


def _kind(value: Any) -> str:
    # Route lists to the choices branch and everything else to the range branch, so a bad
    # value reports one precise error instead of one per union member.
    return "choices" if isinstance(value, list | tuple) else "range"


FloatDim = Annotated[
    Annotated[FloatRange, Tag("range")] | Annotated[list[float], Tag("choices")],
    Discriminator(_kind),
]
IntDim = Annotated[
    Annotated[IntRange, Tag("range")] | Annotated[list[int], Tag("choices")],
    Discriminator(_kind),
]


class SearchSpace(_Closed):
    """One field per tuned hyper-parameter; each a range or a list of choices.

    The keys are the names a trial's parameters get (``best_params.json``, MLflow params) and
    must match the training recipe's override keys.
    """

    lr: FloatDim = FloatRange(low=3.0e-4, high=3.0e-3, log=True)
    weight_decay: FloatDim = FloatRange(low=1.0e-5, high=1.0e-2, log=True)
    optimizer: list[str] = ["adamw", "sgd"]
    batch_size: IntDim = [32, 64]
    trainable_blocks: IntDim = [5]
    backbone_lr_mult: FloatDim = [1.0]
    head: list[str] = ["pooled", "classifier"]
    dropout: FloatDim = FloatRange(low=0.0, high=0.5)
    label_smoothing: FloatDim = FloatRange(low=0.0, high=0.1)
    augment: FloatDim = FloatRange(low=0.0, high=0.6)
    epochs: IntDim = [2]
    arch: list[str] = ["vgg16_bn"]

    @field_validator("*", mode="after")
    @classmethod
    def _check_lists(cls, value: Any) -> Any:
        return _check_choices(value)


class TuneParams(_Closed):
    """The ``tune`` section: study identity, storage, budget, sampler, pruner and space."""

    study_name: str = Field("facelens-expression", min_length=1)
    storage: str | None = Field(
        "sqlite:///optuna.db",
        description="Optuna storage URL (sqlite:///..., postgresql://...); null = in memory.",
    )
    n_trials: int = Field(6, ge=1, description="Target number of finished (complete+pruned).")
    timeout: float | None = Field(None, gt=0, description="Seconds for one tune call.")
    seed: int = 0
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(2, ge=0, description="Random trials before TPE/pruning.")
    n_warmup_steps: int = Field(0, ge=0, description="Epochs before the median pruner acts.")
    direction: Literal["maximize", "minimize"] = "maximize"
    train_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="Share of the train split each trial trains on."
    )
    workers: int = Field(
        1, ge=1, description="Worker processes the tune stage starts on this host (shared study)."
    )
    heartbeat_interval: int | Literal["auto"] | None = Field(
        "auto",
        description=(
            "Seconds between a running trial's heartbeats (Optuna RDBStorage); auto = 60 for "
            "PostgreSQL/MySQL, off (null) for SQLite, journal and in-memory storages."
        ),
    )
    grace_period: int | None = Field(
        None, ge=1, description="Seconds without heartbeat before a trial is failed (2x interval)."
    )
    retry_failed: int | Literal["auto"] = Field(
        "auto",
        description=(
            "Times a trial whose worker died is run again with the same params; "
            "auto = 1 when heartbeats are on, else 0."
        ),
    )
    enqueue_base: bool = Field(
        True,
        description=(
            "Run the base recipe (the train section) as the study's first trial, so the "
            "study's best is never a recipe that scored below it in trials."
        ),
    )
    space: SearchSpace = SearchSpace()

    @field_validator("heartbeat_interval", "retry_failed")
    @classmethod
    def _check_positive(cls, value: Any, info: Any) -> Any:
        least = 1 if info.field_name == "heartbeat_interval" else 0
        if isinstance(value, int) and value < least:
            raise ValueError(f"must be 'auto', null or an integer >= {least}, got {value}")
        return value
