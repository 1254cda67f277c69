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
    #: ``auto`` | ``imagenet`` | ``none`` | a path to a ``.pt``/``.pth`` state dict.
    weights: str = "auto"
    input_size: int = Field(default=64, ge=32, le=512)

    @field_validator("weights")
    @classmethod
    def _weights_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "weights must be 'auto', 'imagenet', 'none' or a path to a .pt/.pth state dict; "
                "got an empty string"
            )
        return value.strip()
