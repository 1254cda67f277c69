"""The ``model`` params section: backbone architecture, weights policy and input size."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Arch", "ModelParams"]

Arch = Literal["vgg16", "vgg16_bn"]


class ModelParams(BaseModel):
    """The ``model`` params section: backbone architecture, weights policy and input size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Arch = "vgg16_bn"
    #: ``auto`` | ``imagenet`` | ``pretrained`` | ``none`` | a path to a ``.pt``/``.pth`` state
    #: dict. ``auto``: ImageNet when obtainable, else the SynthFACS-pretrained backbone in
    #: ``pretrained``, else random initialisation, each fallback with a warning.
    weights: str = "auto"
    #: Folder of the ``pretrain`` stage's backbones (``<arch>.pt`` + ``meta.json``).
    pretrained: str = "models/pretrained"
    input_size: int = Field(default=64, ge=32, le=512)

    @field_validator("weights")
    @classmethod
    def _weights_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "weights must be 'auto', 'imagenet', 'pretrained', 'none' or a path to a "
                ".pt/.pth state dict; "
                "got an empty string"
            )
        return value.strip()
