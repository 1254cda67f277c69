"""The ``train`` params section: the base training recipe (also what a tuning trial sets)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainParams"]


class TrainParams(BaseModel):
    """The ``train`` params section (also the hyper-parameters a tuning trial sets)."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adamw", "sgd", "rmsprop"] = "adamw"
    lr: float = Field(default=1e-3, gt=0, le=10)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=64, ge=2)
    epochs: int = Field(default=6, ge=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    augment: float = Field(default=0.5, ge=0, le=1)
    head: Literal["classifier", "pooled"] = "pooled"
    dropout: float = Field(default=0.3, ge=0, lt=1)
    trainable_blocks: int = Field(default=5, ge=0, le=5)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    #: Stop after this many epochs without a better validation metric (None: never).
    patience: int | None = Field(default=None, ge=1)
    seed: int = 0
    num_threads: int | None = Field(default=None, ge=1)
    #: Numeric precision of training steps and forward passes: ``fp32``, ``bf16`` / ``fp16``
    #: autocast, or ``auto`` (bf16 where the device has native bf16 units, see
    #: :mod:`facelens.device`). Explanations always run in fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: Run the training and validation forward passes through ``torch.compile`` (off: see
    #: benchmarks/README.md for what it costs and gains here).
    compile: bool = False
    #: Deterministic kernels (``torch.use_deterministic_algorithms``, no cuDNN autotuning):
    #: the same seed gives the same weights on a GPU too, at a cost in speed there. The CPU
    #: kernels used here are deterministic either way.
    deterministic: bool = False
