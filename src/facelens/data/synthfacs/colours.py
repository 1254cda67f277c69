"""RGB colours of SynthFACS (0..255 floats): the type, clipping an array to one, shading one."""

from __future__ import annotations

import numpy as np

__all__ = ["Colour", "as_colour", "scaled"]

Colour = tuple[float, float, float]


def as_colour(values: np.ndarray) -> Colour:
    """The first three values, clipped to 0..255, as a colour tuple."""
    c = np.clip(values, 0.0, 255.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def scaled(colour: Colour, k: float | tuple[float, float, float]) -> Colour:
    """``colour`` times ``k`` (one factor or one per channel), clipped to 0..255."""
    kk = (k, k, k) if isinstance(k, int | float) else k
    r, g, b = (min(max(c * f, 0.0), 255.0) for c, f in zip(colour, kk, strict=True))
    return (r, g, b)
