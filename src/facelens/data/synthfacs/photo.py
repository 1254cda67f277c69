"""The SynthFACS photograph: box-downsampling the drawn canvas to the output size, then the
smooth photometric nuisance at output resolution (lighting gradient, exposure, colour cast,
Gaussian blur, sensor noise)."""

from __future__ import annotations

import math
from functools import cache

import cv2
import numpy as np

from facelens.data.synthfacs.nuisance import Nuisance

__all__ = ["photograph"]


@cache
def _light_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) / (size / 2.0)
    return coords[None, :], coords[:, None]  # x varies along columns, y along rows


def photograph(canvas: np.ndarray, size: int, supersample: int, nuisance: Nuisance) -> np.ndarray:
    """``(size, size, 3)`` uint8 RGB from the supersampled uint8 ``canvas`` and the nuisance."""
    img = canvas.astype(np.float32)
    if supersample > 1:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    gx, gy = _light_grid(size)
    ls, la = nuisance.light_strength, nuisance.light_angle
    gain = 1.0 + np.float32(ls * math.cos(la)) * gx + np.float32(ls * math.sin(la)) * gy
    gain *= np.float32(nuisance.exposure / 255.0)
    img *= gain[..., None] * np.asarray(nuisance.cast, np.float32)
    if nuisance.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=nuisance.blur_sigma)
    if nuisance.noise_std > 0:
        noise = np.random.default_rng(nuisance.noise_seed).standard_normal(img.shape, np.float32)
        img += noise * np.float32(nuisance.noise_std)
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
