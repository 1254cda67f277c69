"""Image normalisation statistics (mean, std) and the ones that match a weights source."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEFAULT_NORM", "IMAGENET_NORM", "norm_stats"]

#: Image normalisation (mean, std) for ImageNet-pretrained backbones.
IMAGENET_NORM: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
)
#: Image normalisation (mean, std) for backbones trained from scratch.
DEFAULT_NORM: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.5, 0.5, 0.5),
    (0.25, 0.25, 0.25),
)


def norm_stats(weights_source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Image normalisation (mean, std) that matches a ``weights_source``.

    ImageNet statistics for ``imagenet``; for ``file:`` sources the ``norm_mean``/``norm_std``
    of a ``meta.json`` next to the file when there is one (a facelens export), ImageNet
    statistics otherwise (torchvision checkpoints); (0.5, 0.25) per channel for random init.
    """
    if weights_source == "imagenet":
        return IMAGENET_NORM
    if weights_source.startswith("file:"):
        path = Path(weights_source.removeprefix("file:").rsplit("#sha256:", 1)[0])
        meta_path = path.parent / "meta.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                return tuple(meta["norm_mean"]), tuple(meta["norm_std"])
            except (ValueError, KeyError, TypeError):
                pass
        return IMAGENET_NORM
    return DEFAULT_NORM
