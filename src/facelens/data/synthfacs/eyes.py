"""SynthFACS eye-region geometry (pure, face frame): eye placement and lid apertures, each
eye (white, iris, pupil, lashes, lids, crease, cheek), each brow with its glabellar furrow, and
the forehead wrinkles above the brows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelens.data.synthfacs.identity import Identity
from facelens.data.synthfacs.shapes import band, clipped_disc, ellipse, frozen, stroke

__all__ = ["EyeShape", "add_brow", "add_eye", "eye_shape", "forehead_wrinkles"]

# Constant sample positions along the parametric curves (read-only).
_EYE_X = frozen(np.linspace(-1.0, 1.0, 21))  # across the eye, corner to corner
_BROW_T = frozen(np.linspace(0.0, 1.0, 16))  # inner end (0) to outer end (1)
_FOREHEAD_WRINKLE_X = frozen(np.linspace(-0.2, 0.2, 17))


@dataclass(frozen=True)
class EyeShape:
    """Where the eyes sit and how wide the lids open (shared by both eyes and brows)."""

    row: float  # face-frame y of the eye centres
    dx: float  # distance of each eye centre from the midline
    half_width: float
    upper: float  # upper-lid aperture above the centre line
    lower: float  # lower-lid aperture below it


def eye_shape(au: dict[str, float], idn: Identity) -> EyeShape:
    """Eye placement and lid apertures (AU5 widens, AU7/AU6/AU4/AU9 narrow)."""
    eye_row = -0.05 + idn.eye_y
    eye_dx = 0.215 * idn.eye_spacing
    ew = 0.1 * idn.eye_size
    eu = 0.05 * idn.eye_size * idn.eye_open
    el = 0.032 * idn.eye_size * idn.eye_open
    eu *= max(
        1.0
        + 1.2 * au["AU5"]
        - 0.35 * au["AU7"]
        - 0.25 * au["AU6"]
        - 0.2 * au["AU4"]
        - 0.15 * au["AU9"],
        0.25,
    )
    el *= max(1.0 + 0.25 * au["AU5"] - 0.6 * au["AU7"] - 0.7 * au["AU6"] - 0.2 * au["AU9"], 0.2)
    return EyeShape(row=eye_row, dx=eye_dx, half_width=ew, upper=eu, lower=el)


def add_eye(
    g: dict[str, list[np.ndarray]],
    sgn: float,
    eye: EyeShape,
    au: dict[str, float],
    idn: Identity,
    gaze: tuple[float, float],
) -> None:
    """One eye (``sgn`` -1 left, +1 right): white, iris, pupil, lids, crease, cheek."""
    ew, eu, el = eye.half_width, eye.upper, eye.lower
    cx, cy = sgn * eye.dx, eye.row + sgn * idn.asym_eye
    x = cx + _EYE_X * ew

    def top(xx, cx=cx, cy=cy):
        ss = np.clip((xx - cx) / ew, -1.0, 1.0)
        return cy - eu * (1.0 - ss**2) ** 0.7

    def bottom(xx, cx=cx, cy=cy):
        ss = np.clip((xx - cx) / ew, -1.0, 1.0)
        return cy + el * (1.0 - ss**2) ** 0.8

    yu, yl = top(x), bottom(x)
    g["eyes"].append(band(x, yu, yl))
    r_iris = 0.05 * idn.eye_size
    icx, icy = cx + 0.3 * ew * gaze[0], cy + 0.008 * gaze[1]
    for key, r in (("irises", r_iris), ("pupils", 0.45 * r_iris)):
        disc = clipped_disc(icx, icy, r, cx - ew, cx + ew, top, bottom)
        if disc is not None:
            g[key].append(disc)
    g["lashes"].append(stroke(x, yu, 0.018))
    g["lower_lids"].append(stroke(x[2:-2], yl[2:-2], 0.007))
    g["creases"].append(stroke(x[4:-4], yu[4:-4] - 0.03 - 0.012 * au["AU5"], 0.008))
    g["infraorbital"].append(stroke(x[3:-3], yl[3:-3] + 0.035, 0.009))
    g["cheeks"].append(ellipse(sgn * (eye.dx + 0.03), eye.row + 0.17, 0.085, 0.06, n=24))


def add_brow(
    g: dict[str, list[np.ndarray]], sgn: float, eye: EyeShape, au: dict[str, float], idn: Identity
) -> float:
    """One brow and its glabellar furrow; returns the y of the brow's inner end.

    The brow runs from its inner end (t=0) near the midline to its outer end (t=1) at the
    temple.
    """
    cy = eye.row + sgn * idn.asym_eye
    yb = cy - 0.13 * idn.brow_height + sgn * idn.asym_brow
    u_in = eye.dx - 0.1 - 0.05 * au["AU4"]
    u_out = eye.dx + 0.13
    y_in = yb - 0.15 * au["AU1"] + 0.12 * au["AU4"] + 0.04 * au["AU9"]
    y_out = yb - 0.1 * au["AU2"] + 0.02 * au["AU4"] + 0.015 * au["AU1"]
    arch = 0.022 * idn.brow_arch + 0.03 * au["AU2"] - 0.02 * au["AU4"]
    tb = _BROW_T
    ub = u_in + tb * (u_out - u_in)
    ybc = (1.0 - tb) * y_in + tb * y_out - arch * np.sin(np.pi * tb**0.8)
    width = 0.045 * idn.brow_thickness * (1.1 - 0.5 * tb)
    g["brows"].append(stroke(sgn * ub, ybc, width))
    g["glabella"].append(
        stroke(np.full(6, sgn * 0.03), np.linspace(y_in - 0.02, y_in + 0.055, 6), 0.011)
    )
    return y_in


def forehead_wrinkles(yb_mean: float) -> list[np.ndarray]:
    """Three horizontal forehead lines (AU1/AU2) above the mean inner-brow row."""
    xw = _FOREHEAD_WRINKLE_X
    return [
        stroke(xw, yb_mean - 0.08 - 0.032 * k - 0.015 * (1.0 - (xw / 0.2) ** 2), 0.009)
        for k in range(3)
    ]
