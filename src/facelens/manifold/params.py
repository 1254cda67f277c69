"""The ``manifold`` params section: layouts of the test split's embeddings and their quality."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facelens.constants import ATTRIBUTES

__all__ = ["ManifoldParams"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifoldParams(_Closed):
    """Embedding layouts of the test split (the ``manifold`` stage)."""

    methods: tuple[Literal["pca", "tsne", "umap", "umap3d"], ...] = Field(
        ("pca", "tsne", "umap", "umap3d"), min_length=1, description="umap3d = 3-D UMAP."
    )
    colour_attribute: str = Field(
        "attractive", description="Attribute pole colouring the plots (attr_<name> column)."
    )
    max_points: int = Field(600, ge=10, description="Seeded, fixed subset of the test split.")
    anchors: int = Field(300, ge=3, description="Ids aligning layouts across runs (Procrustes).")
    k: int = Field(5, ge=1, description="Neighbourhood size of trustworthiness and kNN accuracy.")
    thumbnail_size: int = Field(48, ge=8, le=256, description="Hover thumbnails (px).")
    seed: int = 0

    @field_validator("colour_attribute")
    @classmethod
    def _known_attribute(cls, value: str) -> str:
        if value not in ATTRIBUTES:
            raise ValueError(
                f"unknown attribute {value!r}; allowed: {list(ATTRIBUTES)} (constants.py)"
            )
        return value
