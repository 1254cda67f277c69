"""Typed, closed parameters of the ``data`` and ``split`` sections of ``params.yaml``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from facelens.data.synthfacs.params import SynthParams

__all__ = ["SOURCES", "DataParams", "SplitParams"]

#: The dataset sources ``prepare`` understands.
SOURCES: tuple[str, ...] = ("synth", "imagefolder", "fer2013_csv", "attributes_table")


class DataParams(BaseModel):
    """Where the images come from and how ``prepare`` canonicalises them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["synth", "imagefolder", "fer2013_csv", "attributes_table"] = Field(
        "synth",
        description="synth (SynthFACS), imagefolder (FER layout), fer2013_csv, attributes_table.",
    )
    path: str | None = Field(
        None,
        description="Image folder, FER2013 CSV, or images folder of attributes_table.",
    )
    table: str | None = Field(
        None, description="attributes_table only: the CSV/XLSX of attribute scores."
    )
    image_size: int = Field(64, ge=16, le=512, description="Side of the square images written.")
    max_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted width*height of a source image."
    )
    min_size: int = Field(16, ge=1, description="Smallest accepted shorter side, in pixels.")
    near_duplicate_distance: int = Field(
        4, ge=0, le=64, description="pHash Hamming distance at or below which images are near."
    )
    synth: SynthParams = Field(default_factory=SynthParams)

    @model_validator(mode="after")
    def _check_paths(self) -> Self:
        if self.source != "synth" and not self.path:
            what = {
                "imagefolder": "the image folder",
                "fer2013_csv": "the FER2013 CSV file",
                "attributes_table": "the images folder",
            }[self.source]
            raise ValueError(f"data.path is required for source {self.source!r}: set it to {what}")
        if self.source == "attributes_table" and not self.table:
            raise ValueError(
                "data.table is required for source 'attributes_table': set it to the CSV/XLSX "
                "whose first column names the image files"
            )
        if self.table and self.source != "attributes_table":
            raise ValueError(
                f"data.table is only used by source 'attributes_table' (source is "
                f"{self.source!r}); remove it or change the source"
            )
        return self


class SplitParams(BaseModel):
    """How the ``split`` stage divides the manifest into train/val/test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="Seed of the grouped, stratified assignment.")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="Share of images in val.")
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="Share of images in test.")
    use_source_split: bool = Field(
        True, description="Keep the split a source prescribes (FER2013 Usage, split folders)."
    )

    @model_validator(mode="after")
    def _check_fractions(self) -> Self:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 to leave images for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self
