"""Polygon primitives of SynthFACS, in any 2-D frame: bands between curves, (super)ellipses,
thick strokes and clipped discs (pure numpy, no pixels)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np

__all__ = ["band", "clipped_disc", "ellipse", "frozen", "stroke"]


def frozen(a: np.ndarray) -> np.ndarray:
    """``a``, made read-only (for cached and module-level constant arrays)."""
    a.flags.writeable = False
    return a


def band(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Polygon between two curves sampled at the same x, shape (2n, 2)."""
    upper = np.stack([x, top], axis=1)
    lower = np.stack([x[::-1], bottom[::-1]], axis=1)
    return np.concatenate([upper, lower])


@cache
def _unit_superellipse(n: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / power
    return frozen(np.sign(c) * np.abs(c) ** e), frozen(np.sign(s) * np.abs(s) ** e)


def ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 32, angle: float = 0.0, power: float = 2.0
) -> np.ndarray:
    """(Super)ellipse polygon, shape (n, 2); ``power`` > 2 gives rounded rectangles."""
    ux, uy = _unit_superellipse(n, power)
    x = rx * ux
    y = ry * uy
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        x, y = ca * x - sa * y, sa * x + ca * y
    return np.stack([cx + x, cy + y], axis=1)


def stroke(x: np.ndarray, y: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Polygon of a thick polyline (width may vary along it), shape (2n, 2)."""
    p = np.empty((len(x), 2))
    p[:, 0], p[:, 1] = x, y
    d = np.empty_like(p)  # central differences, one-sided at the ends
    d[1:-1] = p[2:] - p[:-2]
    d[0], d[-1] = p[1] - p[0], p[-1] - p[-2]
    scale = (np.asarray(width) / 2.0) / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-12)
    normal = np.empty_like(p)
    normal[:, 0], normal[:, 1] = -d[:, 1] * scale, d[:, 0] * scale
    return np.concatenate([p + normal, (p - normal)[::-1]])


def clipped_disc(
    cx: float,
    cy: float,
    r: float,
    x0: float,
    x1: float,
    top: Callable[[np.ndarray], np.ndarray],
    bottom: Callable[[np.ndarray], np.ndarray],
    n: int = 15,
) -> np.ndarray | None:
    """A disc clipped to the region between curves ``top(x)`` and ``bottom(x)``."""
    lo, hi = max(cx - r, x0), min(cx + r, x1)
    if hi <= lo:
        return None
    x = np.linspace(lo, hi, n)
    half = np.sqrt(np.maximum(r * r - (x - cx) ** 2, 0.0))
    t = np.maximum(cy - half, top(x))
    b = np.minimum(cy + half, bottom(x))
    if not np.any(b > t):
        return None
    mid = (t + b) / 2.0
    t, b = np.where(b > t, t, mid), np.where(b > t, b, mid)
    return band(x, t, b)
