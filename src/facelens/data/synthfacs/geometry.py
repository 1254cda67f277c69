"""SynthFACS face geometry (pure): the polygons of every face part in the *face frame* for given
action units, one function per facial feature (the eye region in :mod:`.eyes`).

The face frame has its origin at the centre of the face oval, just below the eye row; y points
down; the image spans about [-1, 1]. The AUs move the geometry: brows (AU1 inner / AU2 outer
raise, AU4 lower and pull together, with forehead wrinkles / glabellar furrows), lids (AU5
widen, AU7 tighten), cheeks (AU6 raise, lower lids pushed up), nose (AU9 wrinkles, raised
nostrils), lips (AU10 upper-lip raise, AU12 corners up, AU15 corners down, AU16 lower lip
down, AU20 stretch, AU23 press), mouth opening (AU25) and jaw (AU26).
"""

from __future__ import annotations

import numpy as np

from facelens.data.synthfacs.action_units import AUS, au_intensity
from facelens.data.synthfacs.eyes import add_brow, add_eye, eye_shape, forehead_wrinkles
from facelens.data.synthfacs.identity import Identity
from facelens.data.synthfacs.shapes import band, ellipse, frozen, stroke

__all__ = ["face_geometry"]

Geometry = dict[str, list[np.ndarray]]

#: Parts drawn once per side (left first); their lists are filled side by side.
_PER_SIDE_PARTS = (
    "eyes",
    "irises",
    "pupils",
    "lashes",
    "lower_lids",
    "creases",
    "brows",
    "cheeks",
    "infraorbital",
    "glabella",
    "nasolabial",
)

# Constant sample positions along the parametric curves (read-only).
_OUTLINE_ANGLES = frozen(np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False))
_NOSE_SIDE_T = frozen(np.linspace(0.0, 1.0, 10))  # bridge top (0) to nose wing (1)
_NOSE_TIP_ANGLES = frozen(np.linspace(0.0, np.pi, 13))
_NOSE_WRINKLE_X = frozen(np.linspace(-0.055, 0.055, 9))
_MOUTH_X = frozen(np.linspace(-1.0, 1.0, 25))  # across the mouth, corner to corner
_NASOLABIAL_T = frozen(np.linspace(0.0, 1.0, 12))  # nose wing (0) to past the corner (1)


def _face_outline(idn: Identity, jaw: float) -> np.ndarray:
    """Elliptical forehead, superelliptic tapered jaw (lowered by the jaw drop)."""
    a, b = idn.face_width, idn.face_height
    b_low = b + 0.6 * jaw
    t = _OUTLINE_ANGLES
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / idn.jaw_power
    lower = s > 0
    fx = np.where(lower, a * np.sign(c) * np.abs(c) ** e, a * c)
    fy = np.where(lower, b_low * np.abs(s) ** e, b * s)
    fx = np.where(lower, fx * (1.0 - idn.chin_taper * (fy / b_low) ** 2), fx)
    return np.stack([fx, fy], axis=1)


def _nose(
    g: Geometry, au: dict[str, float], idn: Identity, eye_row: float
) -> tuple[float, float, float]:
    """Nose, nostrils, tip highlight and AU9 wrinkles; returns (resting y, y, half-width)."""
    y_top = eye_row + 0.02
    y_nose_rest = eye_row + 0.26 * idn.nose_length
    y_n = y_nose_rest - 0.02 * au["AU9"] - 0.008 * au["AU10"]
    wn = 0.07 * idn.nose_width * (1.0 + 0.2 * au["AU9"])
    tn = _NOSE_SIDE_T
    side_x = 0.03 + (wn - 0.03) * tn**2.5
    side_y = y_top + (y_n - y_top) * tn
    arc_t = _NOSE_TIP_ANGLES
    arc = np.stack([wn * np.cos(arc_t), y_n + 0.035 * np.sin(arc_t)], axis=1)
    g["nose"] = [
        np.concatenate(
            [
                np.stack([-side_x, side_y], axis=1),
                arc[::-1],
                np.stack([side_x[::-1], side_y[::-1]], axis=1),
            ]
        )
    ]
    g["nostrils"] = [
        ellipse(sgn * wn * 0.45, y_n + 0.018, 0.022 * (1.0 + 0.3 * au["AU9"]), 0.011, n=16)
        for sgn in (-1.0, 1.0)
    ]
    g["nose_tip"] = [ellipse(0.0, y_n - 0.005, wn * 0.45, 0.028, n=20)]
    xn = _NOSE_WRINKLE_X
    g["nose_wrinkles"] = [
        stroke(
            xn, np.full_like(xn, y_top + 0.035 + 0.022 * k) - 0.006 * (1 - (xn / 0.055) ** 2), 0.009
        )
        for k in range(3)
    ]
    return y_nose_rest, y_n, wn


def _mouth_width(au: dict[str, float], idn: Identity) -> float:
    """Half-width of the mouth (AU12/AU20 widen, AU23/AU26/AU10 narrow)."""
    mw = 0.15 * idn.mouth_width
    mw *= (
        1.0
        + 0.3 * au["AU12"]
        + 0.5 * au["AU20"]
        - 0.28 * au["AU23"]
        - 0.15 * au["AU26"] * (1.0 - au["AU20"])
        - 0.05 * au["AU10"]
    )
    return mw


def _corner_offset(au: dict[str, float], idn: Identity) -> float:
    """Vertical lip-corner offset (negative: up; AU12 up, AU15/AU20/AU16 down)."""
    return (
        -0.16 * au["AU12"]
        + 0.13 * au["AU15"]
        + 0.035 * au["AU20"]
        + 0.015 * au["AU16"]
        + idn.rest_curve
    )


def _lip_thickness(au: dict[str, float], idn: Identity) -> tuple[float, float]:
    """Upper and lower lip thickness (AU23 presses, AU12/AU20 stretch them thin)."""
    tu = (
        0.026
        * idn.lip_thickness
        * max(1 - 0.8 * au["AU23"] - 0.3 * au["AU12"] - 0.2 * au["AU20"], 0.2)
    )
    tl = (
        0.036
        * idn.lip_thickness
        * max(1 - 0.8 * au["AU23"] - 0.25 * au["AU12"] - 0.2 * au["AU20"], 0.2)
    )
    return tu, tl


def _mouth(
    g: Geometry,
    au: dict[str, float],
    idn: Identity,
    y_m: float,
    mw: float,
    corner: float,
    opening: float,
) -> None:
    """Lips, corners, opening, teeth and (closed) lip line around the mouth row ``y_m``."""
    sm = _MOUTH_X
    xm = idn.asym_mouth + sm * mw
    yj = y_m + corner * sm**2
    prof = np.clip(1.0 - np.abs(sm) ** (2.0 + 8.0 * au["AU20"]), 0.0, 1.0) ** 0.5
    raise_upper = 0.03 * au["AU10"] + 0.012 * au["AU9"]
    yui = yj - (0.25 * opening + raise_upper) * prof
    yli = yj + (0.75 * opening + 0.01 * au["AU16"]) * prof
    tu, tl = _lip_thickness(au, idn)
    yuo = yui - tu * (1.0 - sm**2) ** 0.4
    ylo = yli + tl * (1.0 - sm**2) ** 0.5
    g["mouth"] = [band(xm, yuo, ylo)]
    g["mouth_corners"] = [np.array([[xm[0], yj[0]], [xm[-1], yj[-1]]])]
    gap = float(np.max(yli - yui))
    is_open = gap > 0.006
    g["mouth_inner"] = [band(xm, yui, yli)] if is_open else []
    keep = np.abs(sm) <= 0.7
    teeth_h = min(0.028, 0.45 * gap)
    g["teeth"] = (
        [band(xm[keep], yui[keep], np.minimum(yui[keep] + teeth_h, yli[keep]))]
        if gap > 0.02
        else []
    )
    g["lip_line"] = [] if is_open else [stroke(xm[1:-1], yj[1:-1], 0.011)]


def _nasolabial(
    sgn: float,
    au: dict[str, float],
    idn: Identity,
    nose: tuple[float, float],
    mouth: tuple[float, float, float],
) -> np.ndarray:
    """One nasolabial fold: nose wing -> beyond the mouth corner (quadratic Bezier)."""
    y_n, wn = nose
    y_m, mw, corner = mouth
    p0 = np.array([sgn * (wn + 0.012), y_n - 0.015])
    p2 = np.array([idn.asym_mouth + sgn * (mw + 0.025), y_m + 0.035 + 0.5 * corner])
    p1 = np.array([sgn * (mw + 0.05 + 0.02 * au["AU12"]), (p0[1] + p2[1]) / 2.0])
    tq = _NASOLABIAL_T[:, None]
    curve = (1 - tq) ** 2 * p0 + 2 * (1 - tq) * tq * p1 + tq**2 * p2
    return stroke(curve[:, 0], curve[:, 1], 0.011)


def _soft_feature_alphas(au: dict[str, float]) -> np.ndarray:
    """Opacity of cheeks, infraorbital, forehead wrinkles, glabella, nose wrinkles, nasolabial."""
    return np.array(
        [
            0.1 + 0.75 * au["AU6"],
            0.8 * au["AU6"],
            0.85 * float(np.clip(0.65 * (au["AU1"] + au["AU2"]) - 0.1, 0.0, 1.0)),
            float(np.clip(1.5 * au["AU4"] - 0.1, 0.0, 1.0)),
            float(np.clip(1.5 * au["AU9"] - 0.1, 0.0, 1.0)),
            float(
                np.clip(0.15 + 0.75 * max(au["AU12"], 0.8 * au["AU9"], 0.8 * au["AU10"]), 0.0, 0.9)
            ),
        ]
    )


def face_geometry(
    aus: np.ndarray, identity: Identity, gaze: tuple[float, float] = (0.0, 0.0)
) -> Geometry:
    """Face-frame polygons of the face parts for given action units (no pose, no pixels).

    The renderer draws exactly these polygons, so they double as landmarks for tests and
    geometric baselines.

    Args:
        aus: action-unit intensities, shape ``(len(AUS),)``, values in [0, 1].
        identity: the person.
        gaze: iris offset (x, y) in -1..1.

    Returns:
        Mapping part name -> list of ``(n, 2)`` float arrays (x, y; y points down). Keys:
        ``face``, ``brows`` (left, right), ``eyes`` (left, right), ``irises``, ``pupils``,
        ``lashes``, ``lower_lids``, ``creases``, ``nose``, ``nostrils``, ``mouth`` (outer lip
        contour), ``mouth_inner`` (opening; empty when closed), ``teeth``, ``lip_line``,
        ``mouth_corners`` (one (2, 2) array: left and right corner points), ``cheeks``,
        ``infraorbital``, ``forehead_wrinkles``, ``glabella``, ``nose_tip``, ``nose_wrinkles``,
        ``nasolabial``; ``alphas`` holds one (6,) array with the opacity of the soft features
        (cheeks, infraorbital, forehead_wrinkles, glabella, nose_wrinkles, nasolabial) and
        ``hair_anchor`` one (1, 2) array (resting brow row, eye row) that places the hairline.
    """
    aus = np.asarray(aus, dtype=np.float64)
    if aus.shape != (len(AUS),):
        raise ValueError(
            f"aus must have shape ({len(AUS)},) in AUS order {AUS}, got {aus.shape}; "
            "build it with np.zeros(len(AUS)) and set intensities in [0, 1]"
        )
    au = {name: au_intensity(aus, name) for name in AUS}
    idn = identity
    g: Geometry = {}

    # Mouth opening first: the jaw drop also lowers the chin.
    jaw = 0.18 * au["AU26"]
    opening = 0.035 * au["AU25"] + jaw + 0.018 * au["AU16"]
    g["face"] = [_face_outline(idn, jaw)]

    eye = eye_shape(au, idn)
    for key in _PER_SIDE_PARTS:
        g[key] = []
    brow_rows = []
    for sgn in (-1.0, 1.0):
        add_eye(g, sgn, eye, au, idn, gaze)
        brow_rows.append(add_brow(g, sgn, eye, au, idn))
    g["forehead_wrinkles"] = forehead_wrinkles(float(np.mean(brow_rows)))

    y_nose_rest, y_n, wn = _nose(g, au, idn, eye.row)
    y_m = y_nose_rest + 0.16 * idn.philtrum
    mw = _mouth_width(au, idn)
    corner = _corner_offset(au, idn)
    _mouth(g, au, idn, y_m, mw, corner, opening)
    for sgn in (-1.0, 1.0):
        g["nasolabial"].append(_nasolabial(sgn, au, idn, (y_n, wn), (y_m, mw, corner)))

    g["alphas"] = [_soft_feature_alphas(au)]
    g["hair_anchor"] = [np.array([[eye.row - 0.13 * idn.brow_height, eye.row]])]
    return g
