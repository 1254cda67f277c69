"""The ``train`` params section: the base training recipe (also what a tuning trial sets),
and the ``pretrain`` section: the SynthFACS identity pool a backbone is pretrained on."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facelens.models.params import Arch

__all__ = ["DEFAULT_TASK", "TASK_EPOCHS", "PretrainParams", "TrainParams"]

#: The task of a params.yaml that names none.
DEFAULT_TASK = "expression"

#: What ``train.epochs: auto`` in params.yaml trains, per task: expression converges in 6
#: epochs (the 15-minute ``make repro``); the 40-attribute regression is still climbing there
#: (test mean r 0.69 at 6 epochs, 0.71 at 10, 0.73 at 16: benchmarks/README.md).
TASK_EPOCHS = {"expression": 6, "attributes": 16}
_AUTO_HINT = ", ".join(f"{n} on {task}" for task, n in TASK_EPOCHS.items())


class TrainParams(BaseModel):
    """The ``train`` params section (also the hyper-parameters a tuning trial sets)."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adamw", "sgd", "rmsprop"] = "adamw"
    lr: float = Field(default=1e-3, gt=0, le=10)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=64, ge=2)
    #: Epochs of the final training (``auto`` in params.yaml: :data:`TASK_EPOCHS` of the task).
    epochs: int = Field(default=TASK_EPOCHS[DEFAULT_TASK], ge=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    augment: float = Field(default=0.5, ge=0, le=1)
    head: Literal["classifier", "pooled"] = "pooled"
    dropout: float = Field(default=0.3, ge=0, lt=1)
    trainable_blocks: int = Field(default=5, ge=0, le=5)
    #: The trained convolutional blocks learn at ``lr x backbone_lr_mult`` (the head at
    #: ``lr``): fine-tuning a pretrained backbone gently while the new head learns fast.
    backbone_lr_mult: float = Field(default=1.0, gt=0, le=1)
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

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs_word(cls, value: object) -> object:
        """A word other than a number gets the allowed forms (``auto`` is resolved per task
        by :class:`facelens.config.Params` before this section is read)."""
        if isinstance(value, str) and not value.strip().isdigit():
            raise ValueError(
                f"expected a whole number of epochs (at least 1) or auto ({_AUTO_HINT})"
            )
        return value


class PretrainParams(BaseModel):
    """The ``pretrain`` params section: the identity pool and how the backbone learns it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: What the backbone learns: ``geometry`` (where each face part is and how it is shaped,
    #: from the region masks) or ``identity`` (which pool person a face shows).
    objective: Literal["geometry", "identity"] = "geometry"
    #: Architectures to pretrain (``model.arch`` and every ``tune.space.arch`` choice that
    #: should start from a pretrained backbone).
    archs: list[Arch] = Field(default_factory=lambda: ["vgg16_bn"], min_length=1)
    n_identities: int = Field(160, ge=2, le=20_000)
    images_per_identity: int = Field(12, ge=2, le=70)
    #: Images per identity held out to measure identity accuracy (model selection).
    val_per_identity: int = Field(2, ge=1)
    image_size: int = Field(64, ge=32, le=512)
    epochs: int = Field(4, ge=1)
    lr: float = Field(2.0e-3, gt=0)
    weight_decay: float = Field(1.0e-4, ge=0)
    batch_size: int = Field(64, ge=2)
    augment: float = Field(0.5, ge=0, le=1)
    seed: int = Field(0, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
