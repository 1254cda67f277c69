"""SynthFACS photographic nuisance: pose, light, background, occluder, gaze, blur and noise of
one image (everything that is not the person or the expression), and drawing it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facelens.data.synthfacs.colours import Colour, as_colour
from facelens.data.synthfacs.params import SynthParams

__all__ = ["Nuisance", "sample_nuisance"]


@dataclass(frozen=True)
class Nuisance:
    """Everything about one photograph that is not the person or the expression."""

    rotation: float  # in-plane rotation, degrees (positive: clockwise on screen)
    scale: float
    shift: tuple[float, float]  # face offset in image-frame units
    light_strength: float
    light_angle: float  # radians
    exposure: float
    cast: Colour  # per-channel gain
    background: Colour
    clutter: tuple[tuple[float, ...], ...]  # (kind, cx, cy, w, h, angle, r, g, b)
    occluder: tuple[float, ...] | None  # (cx, cy, rx, ry, angle, r, g, b)
    gaze: tuple[float, float]  # iris offset, -1..1
    blur_sigma: float  # output pixels; 0: no blur
    noise_std: float  # fraction of full scale
    noise_seed: int


def _clutter(rng: np.random.Generator, clutter: float) -> tuple[tuple[float, ...], ...]:
    """Background shapes: (kind, cx, cy, w, h, angle, r, g, b), a Poisson number of them."""
    u = rng.uniform
    n_clutter = int(rng.poisson(5.0 * clutter))
    return tuple(
        (
            float(rng.integers(3)),
            float(u(-1.0, 1.0)),
            float(u(-1.0, 1.0)),
            float(u(0.05, 0.4)),
            float(u(0.05, 0.4)),
            float(u(0.0, math.pi)),
            *(float(c) for c in u(0.0, 255.0, 3)),
        )
        for _ in range(n_clutter)
    )


def _occluder(rng: np.random.Generator, occlusion_prob: float) -> tuple[float, ...] | None:
    """An occluding blob (cx, cy, rx, ry, angle, r, g, b), always drawn, kept with the prob."""
    u = rng.uniform
    occ = (
        float(u(-0.5, 0.5)),
        float(u(-0.5, 0.6)),
        float(u(0.05, 0.11)),
        float(u(0.05, 0.11)),
        float(u(0.0, math.pi)),
        *(float(c) for c in u(0.0, 255.0, 3)),
    )
    return occ if rng.random() < occlusion_prob else None


def sample_nuisance(rng: np.random.Generator, params: SynthParams | None = None) -> Nuisance:
    """Draw the photographic nuisance of one image (pose, light, background, noise, ...).

    Args:
        rng: randomness (a fixed number of draws per call, whatever the outcome).
        params: nuisance strengths.

    Returns:
        A frozen :class:`Nuisance`.
    """
    p = params or SynthParams()
    u = rng.uniform
    rotation = float(u(-p.rotation_deg, p.rotation_deg))
    scale = float(1.0 + u(-p.scale_jitter, p.scale_jitter))
    shift = (float(u(-p.shift, p.shift)), float(u(-p.shift, p.shift)))
    light_strength = float(u(0.0, p.lighting))
    light_angle = float(u(0.0, 2.0 * math.pi))
    exposure = float(u(0.85, 1.12))
    cast = as_colour(1.0 + u(-0.06, 0.06, 3))
    background = as_colour(u(30.0, 225.0, 3))
    clutter = _clutter(rng, p.clutter)
    occluder = _occluder(rng, p.occlusion_prob)
    gaze = (float(u(-1.0, 1.0)), float(u(-1.0, 1.0)))
    blur = float(u(0.3, 0.75))
    blur_sigma = blur if rng.random() < p.blur_prob else 0.0
    noise_std = float(p.noise_std * u(0.3, 1.0))
    return Nuisance(
        rotation=rotation,
        scale=scale,
        shift=shift,
        light_strength=light_strength,
        light_angle=light_angle,
        exposure=exposure,
        cast=cast,
        background=background,
        clutter=clutter,
        occluder=occluder,
        gaze=gaze,
        blur_sigma=blur_sigma,
        noise_std=noise_std,
        noise_seed=int(rng.integers(2**32)),
    )
