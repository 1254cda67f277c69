"""The ``explain`` params section: CAM methods, target layer and targets, probe set, and the
faithfulness checks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facelens.constants import ATTRIBUTES, EXPRESSIONS

__all__ = ["CamLayer", "CamMethod", "ExplainParams"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CamMethod = Literal[
    "gradcam",
    "guidedgradcam",
    "gradcam++",
    "hirescam",
    "layercam",
    "xgradcam",
    "eigencam",
    "eigengradcam",
    "scorecam",
]
CamLayer = Literal["auto", "block1", "block2", "block3", "block4", "block5"]
_Randomize = Literal["auto", "head", "block1", "block2", "block3", "block4", "block5"]


class ExplainParams(_Closed):
    """Grad-CAM explanations and their faithfulness checks (the ``explain`` stage)."""

    methods: tuple[CamMethod, ...] = Field(
        ("gradcam", "guidedgradcam", "gradcam++", "hirescam", "layercam", "eigencam", "scorecam"),
        min_length=1,
        description="CAM methods (facelens.explain.cams.METHODS); the first is the headline.",
    )
    layer: CamLayer = Field(
        "auto",
        description="Target layer: the last ReLU of this block; auto = block5 when its maps are "
        ">= 7x7 (input >= 112 px), else block4.",
    )
    target: str = Field(
        "predicted", description="Expression target: predicted | true | an expression name."
    )
    per_class: int = Field(3, ge=1, le=20, description="Expression probe images per class.")
    attribute_probes: int = Field(
        12, ge=1, le=64, description="Attributes task: number of fixed probe images."
    )
    attributes: tuple[str, ...] = Field(
        ("trustworthy", "aggressive", "happy", "attractive"),
        min_length=1,
        description="Attributes task: attributes explained with signed (+/-) targets.",
    )
    scorecam_images: int = Field(
        1, ge=1, le=32, description="ScoreCAM (one forward pass per channel) on this many probes."
    )
    randomize: tuple[_Randomize, ...] = Field(
        ("auto",),
        min_length=1,
        description="Sanity check: layers re-initialised; auto = head + the target block and up.",
    )
    sanity_threshold: float = Field(0.3, ge=-1.0, le=1.0)
    removal_fractions: tuple[float, ...] = Field(
        (0.2, 0.5, 0.8), min_length=1, description="ROAD: fractions of pixels removed."
    )
    road: bool = Field(True, description="ROAD deletion metrics (one sparse solve per image).")
    seed: int = 0
    batch_size: int = Field(16, ge=1)

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"methods must not repeat a method, got {list(value)}")
        return value

    @field_validator("randomize")
    @classmethod
    def _auto_alone(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "auto" in value and len(value) > 1:
            raise ValueError(f"'auto' cannot be combined with named layers, got {list(value)}")
        return value

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        allowed = ("predicted", "true", *EXPRESSIONS)
        if value not in allowed:
            raise ValueError(f"target must be one of {list(allowed)}, got {value!r}")
        return value

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [a for a in value if a not in ATTRIBUTES]
        if unknown:
            raise ValueError(
                f"unknown attribute(s) {unknown}; allowed: {list(ATTRIBUTES)} (constants.py)"
            )
        return value

    @field_validator("removal_fractions")
    @classmethod
    def _fractions_open_unit(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < f < 1.0 for f in value):
            raise ValueError(f"each removal fraction must lie in (0, 1), got {list(value)}")
        return value
