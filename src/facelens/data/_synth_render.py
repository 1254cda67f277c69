"""SynthFACS rendering: identity geometry + action units + nuisance -> RGB image and region mask.

Everything is drawn as anti-aliased polygons (OpenCV, 1/16 px fixed point) on a canvas
``supersample`` times the output size, in a *face frame* (origin at the centre of the face
oval, just below the eye row; y points down; the image spans about [-1, 1]). One affine map
(rotation, scale, shift) takes face-frame points to canvas pixels, and every part is
rasterised twice with the same points: once in colour, once into a part-label map. The label
map is reduced to the output size by majority vote (a mask pixel carries a region bit when at
least half its sub-pixels do), so masks are aligned with the drawn pixels by construction.
Masks describe *visible* parts: an occluder or a glasses frame drawn over an eye clears the
eye bit there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from facelens.constants import REGION_BITS

__all__ = ["AUS", "Identity", "Nuisance", "face_geometry", "render_face"]

#: Action units, in the column order of ``au_*`` manifest columns and of every AU vector.
AUS: tuple[str, ...] = (
    "AU1",  # inner brow raiser
    "AU2",  # outer brow raiser
    "AU4",  # brow lowerer
    "AU5",  # upper lid raiser
    "AU6",  # cheek raiser
    "AU7",  # lid tightener
    "AU9",  # nose wrinkler
    "AU10",  # upper lip raiser
    "AU12",  # lip corner puller
    "AU15",  # lip corner depressor
    "AU16",  # lower lip depressor
    "AU20",  # lip stretcher
    "AU23",  # lip tightener / presser
    "AU25",  # lips part
    "AU26",  # jaw drop
)
_AU_INDEX: dict[str, int] = {name: i for i, name in enumerate(AUS)}

Colour = tuple[float, float, float]

# Part labels of the label map (painter's order decides which one is visible).
_BG, _HAIR, _BODY, _FACE, _BROWS, _EYES, _NOSE, _MOUTH, _ACCESSORY, _OCCLUDER = range(10)
_LUT = np.zeros(256, np.uint8)
_LUT[_FACE] = REGION_BITS["face"]
_LUT[_BROWS] = REGION_BITS["face"] | REGION_BITS["brows"]
_LUT[_EYES] = REGION_BITS["face"] | REGION_BITS["eyes"]
_LUT[_NOSE] = REGION_BITS["face"] | REGION_BITS["nose"]
_LUT[_MOUTH] = REGION_BITS["face"] | REGION_BITS["mouth"]
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
_BASE_SCALE = 1.08  # face-frame unit -> image-frame unit before the pose jitter
_SHIFT = 4  # fixed-point bits of polygon vertices (1/16 px)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# Constant sample positions along the parametric curves (read-only).
_S21 = _frozen(np.linspace(-1.0, 1.0, 21))
_S25 = _frozen(np.linspace(-1.0, 1.0, 25))
_T10 = _frozen(np.linspace(0.0, 1.0, 10))
_T12 = _frozen(np.linspace(0.0, 1.0, 12))
_T16 = _frozen(np.linspace(0.0, 1.0, 16))
_T72 = _frozen(np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False))
_ARC13 = _frozen(np.linspace(0.0, np.pi, 13))
_XW = _frozen(np.linspace(-0.2, 0.2, 17))
_XN = _frozen(np.linspace(-0.055, 0.055, 9))


@dataclass(frozen=True)
class Identity:
    """A simulated person: everything that stays fixed across their expressions.

    Lengths are in face-frame units (the image spans [-1, 1]); factors are relative to an
    average face (1.0); colours are RGB in 0..255.
    """

    face_width: float  # half-width of the face oval
    face_height: float  # half-height of the face oval
    jaw_power: float  # superellipse exponent of the lower face: 2 round .. 3.2 square
    chin_taper: float  # narrowing of the lower face towards the chin
    skin_tone: float  # 0 light .. 1 dark (drives `skin`)
    skin: Colour
    blemish: float  # 0 smooth .. 1 blemished skin (number of spots)
    spots: tuple[tuple[float, float, float], ...]  # (x, y, radius) skin spots
    eye_size: float
    eye_spacing: float
    eye_y: float  # vertical offset of the eye row
    eye_open: float  # resting lid aperture
    iris: Colour
    brow_height: float
    brow_thickness: float
    brow_arch: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_thickness: float
    philtrum: float  # nose-to-mouth distance factor
    rest_curve: float  # resting lip-corner offset (negative: slight resting smile)
    lips: Colour
    hair_style: int  # 0 bald, 1 short, 2 long, 3 fringe
    hair: Colour
    hair_unusual: bool  # dyed, unnatural hair colour
    hair_volume: float
    hair_length: float  # lowest point of long hair (face-frame y)
    glasses: bool
    glasses_colour: Colour
    glasses_round: bool
    asymmetry: float  # 0 symmetric .. 1 asymmetric (scales the three offsets below)
    asym_eye: float
    asym_brow: float
    asym_mouth: float
    ear_size: float
    clothes: Colour


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


# ----------------------------------------------------------------------------------------------
# Geometry (pure): polygons in the face frame
# ----------------------------------------------------------------------------------------------


def _band(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Polygon between two curves sampled at the same x, shape (2n, 2)."""
    upper = np.stack([x, top], axis=1)
    lower = np.stack([x[::-1], bottom[::-1]], axis=1)
    return np.concatenate([upper, lower])


@cache
def _unit_superellipse(n: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / power
    return _frozen(np.sign(c) * np.abs(c) ** e), _frozen(np.sign(s) * np.abs(s) ** e)


def _ellipse(
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


def _stroke(x: np.ndarray, y: np.ndarray, width: float | np.ndarray) -> np.ndarray:
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


def _clipped_disc(
    cx: float, cy: float, r: float, x0: float, x1: float, top, bottom, n: int = 15
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
    return _band(x, t, b)


def _au(aus: np.ndarray, name: str) -> float:
    return min(max(float(aus[_AU_INDEX[name]]), 0.0), 1.0)


def face_geometry(
    aus: np.ndarray, identity: Identity, gaze: tuple[float, float] = (0.0, 0.0)
) -> dict[str, list[np.ndarray]]:
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
    au = {name: _au(aus, name) for name in AUS}
    idn = identity
    g: dict[str, list[np.ndarray]] = {}
    a, b = idn.face_width, idn.face_height

    # Mouth opening first: the jaw drop also lowers the chin.
    jaw = 0.18 * au["AU26"]
    opening = 0.035 * au["AU25"] + jaw + 0.018 * au["AU16"]
    b_low = b + 0.6 * jaw

    # Face outline: elliptical forehead, superelliptic tapered jaw.
    t = _T72
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / idn.jaw_power
    lower = s > 0
    fx = np.where(lower, a * np.sign(c) * np.abs(c) ** e, a * c)
    fy = np.where(lower, b_low * np.abs(s) ** e, b * s)
    fx = np.where(lower, fx * (1.0 - idn.chin_taper * (fy / b_low) ** 2), fx)
    g["face"] = [np.stack([fx, fy], axis=1)]

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

    for key in _PER_SIDE_PARTS:
        g[key] = []
    brow_rows = []
    for sgn in (-1.0, 1.0):
        cx, cy = sgn * eye_dx, eye_row + sgn * idn.asym_eye
        sx = _S21
        x = cx + sx * ew

        def top(xx, cx=cx, cy=cy):
            ss = np.clip((xx - cx) / ew, -1.0, 1.0)
            return cy - eu * (1.0 - ss**2) ** 0.7

        def bottom(xx, cx=cx, cy=cy):
            ss = np.clip((xx - cx) / ew, -1.0, 1.0)
            return cy + el * (1.0 - ss**2) ** 0.8

        yu, yl = top(x), bottom(x)
        g["eyes"].append(_band(x, yu, yl))
        r_iris = 0.05 * idn.eye_size
        icx, icy = cx + 0.3 * ew * gaze[0], cy + 0.008 * gaze[1]
        for key, r in (("irises", r_iris), ("pupils", 0.45 * r_iris)):
            disc = _clipped_disc(icx, icy, r, cx - ew, cx + ew, top, bottom)
            if disc is not None:
                g[key].append(disc)
        g["lashes"].append(_stroke(x, yu, 0.018))
        g["lower_lids"].append(_stroke(x[2:-2], yl[2:-2], 0.007))
        g["creases"].append(_stroke(x[4:-4], yu[4:-4] - 0.03 - 0.012 * au["AU5"], 0.008))
        g["infraorbital"].append(_stroke(x[3:-3], yl[3:-3] + 0.035, 0.009))
        g["cheeks"].append(_ellipse(sgn * (eye_dx + 0.03), eye_row + 0.17, 0.085, 0.06, n=24))

        # Brows: inner end (t=0) near the midline, outer end (t=1) at the temple.
        yb = cy - 0.13 * idn.brow_height + sgn * idn.asym_brow
        u_in = eye_dx - 0.1 - 0.05 * au["AU4"]
        u_out = eye_dx + 0.13
        y_in = yb - 0.15 * au["AU1"] + 0.12 * au["AU4"] + 0.04 * au["AU9"]
        y_out = yb - 0.1 * au["AU2"] + 0.02 * au["AU4"] + 0.015 * au["AU1"]
        arch = 0.022 * idn.brow_arch + 0.03 * au["AU2"] - 0.02 * au["AU4"]
        tb = _T16
        ub = u_in + tb * (u_out - u_in)
        ybc = (1.0 - tb) * y_in + tb * y_out - arch * np.sin(np.pi * tb**0.8)
        width = 0.045 * idn.brow_thickness * (1.1 - 0.5 * tb)
        g["brows"].append(_stroke(sgn * ub, ybc, width))
        brow_rows.append(y_in)
        g["glabella"].append(
            _stroke(np.full(6, sgn * 0.03), np.linspace(y_in - 0.02, y_in + 0.055, 6), 0.011)
        )

    # Forehead wrinkles (AU1/AU2), above the brows.
    yb_mean = float(np.mean(brow_rows))
    xw = _XW
    g["forehead_wrinkles"] = [
        _stroke(xw, yb_mean - 0.08 - 0.032 * k - 0.015 * (1.0 - (xw / 0.2) ** 2), 0.009)
        for k in range(3)
    ]

    # Nose.
    y_top = eye_row + 0.02
    y_nose_rest = eye_row + 0.26 * idn.nose_length
    y_n = y_nose_rest - 0.02 * au["AU9"] - 0.008 * au["AU10"]
    wn = 0.07 * idn.nose_width * (1.0 + 0.2 * au["AU9"])
    tn = _T10
    side_x = 0.03 + (wn - 0.03) * tn**2.5
    side_y = y_top + (y_n - y_top) * tn
    arc_t = _ARC13
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
        _ellipse(sgn * wn * 0.45, y_n + 0.018, 0.022 * (1.0 + 0.3 * au["AU9"]), 0.011, n=16)
        for sgn in (-1.0, 1.0)
    ]
    g["nose_tip"] = [_ellipse(0.0, y_n - 0.005, wn * 0.45, 0.028, n=20)]
    xn = _XN
    g["nose_wrinkles"] = [
        _stroke(
            xn, np.full_like(xn, y_top + 0.035 + 0.022 * k) - 0.006 * (1 - (xn / 0.055) ** 2), 0.009
        )
        for k in range(3)
    ]

    # Mouth.
    y_m = y_nose_rest + 0.16 * idn.philtrum
    mw = 0.15 * idn.mouth_width
    mw *= (
        1.0
        + 0.3 * au["AU12"]
        + 0.5 * au["AU20"]
        - 0.28 * au["AU23"]
        - 0.15 * au["AU26"] * (1.0 - au["AU20"])
        - 0.05 * au["AU10"]
    )
    corner = (
        -0.16 * au["AU12"]
        + 0.13 * au["AU15"]
        + 0.035 * au["AU20"]
        + 0.015 * au["AU16"]
        + idn.rest_curve
    )
    sm = _S25
    xm = idn.asym_mouth + sm * mw
    yj = y_m + corner * sm**2
    prof = np.clip(1.0 - np.abs(sm) ** (2.0 + 8.0 * au["AU20"]), 0.0, 1.0) ** 0.5
    raise_upper = 0.03 * au["AU10"] + 0.012 * au["AU9"]
    yui = yj - (0.25 * opening + raise_upper) * prof
    yli = yj + (0.75 * opening + 0.01 * au["AU16"]) * prof
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
    yuo = yui - tu * (1.0 - sm**2) ** 0.4
    ylo = yli + tl * (1.0 - sm**2) ** 0.5
    g["mouth"] = [_band(xm, yuo, ylo)]
    g["mouth_corners"] = [np.array([[xm[0], yj[0]], [xm[-1], yj[-1]]])]
    gap = float(np.max(yli - yui))
    is_open = gap > 0.006
    g["mouth_inner"] = [_band(xm, yui, yli)] if is_open else []
    keep = np.abs(sm) <= 0.7
    teeth_h = min(0.028, 0.45 * gap)
    g["teeth"] = (
        [_band(xm[keep], yui[keep], np.minimum(yui[keep] + teeth_h, yli[keep]))]
        if gap > 0.02
        else []
    )
    g["lip_line"] = [] if is_open else [_stroke(xm[1:-1], yj[1:-1], 0.011)]

    # Nasolabial folds: nose wing -> beyond the mouth corner (quadratic Bezier).
    for sgn in (-1.0, 1.0):
        p0 = np.array([sgn * (wn + 0.012), y_n - 0.015])
        p2 = np.array([idn.asym_mouth + sgn * (mw + 0.025), y_m + 0.035 + 0.5 * corner])
        p1 = np.array([sgn * (mw + 0.05 + 0.02 * au["AU12"]), (p0[1] + p2[1]) / 2.0])
        tq = _T12[:, None]
        curve = (1 - tq) ** 2 * p0 + 2 * (1 - tq) * tq * p1 + tq**2 * p2
        g["nasolabial"].append(_stroke(curve[:, 0], curve[:, 1], 0.011))

    g["alphas"] = [
        np.array(
            [
                0.1 + 0.75 * au["AU6"],
                0.8 * au["AU6"],
                0.85 * float(np.clip(0.65 * (au["AU1"] + au["AU2"]) - 0.1, 0.0, 1.0)),
                float(np.clip(1.5 * au["AU4"] - 0.1, 0.0, 1.0)),
                float(np.clip(1.5 * au["AU9"] - 0.1, 0.0, 1.0)),
                float(
                    np.clip(
                        0.15 + 0.75 * max(au["AU12"], 0.8 * au["AU9"], 0.8 * au["AU10"]), 0.0, 0.9
                    )
                ),
            ]
        )
    ]
    g["hair_anchor"] = [np.array([[eye_row - 0.13 * idn.brow_height, eye_row]])]
    return g


# ----------------------------------------------------------------------------------------------
# Rasterisation
# ----------------------------------------------------------------------------------------------


def _scaled(colour: Colour, k: float | tuple[float, float, float]) -> Colour:
    kk = (k, k, k) if isinstance(k, int | float) else k
    r, g, b = (min(max(c * f, 0.0), 255.0) for c, f in zip(colour, kk, strict=True))
    return (r, g, b)


class _Canvas:
    """A supersampled colour canvas and part-label map sharing one face->pixel transform."""

    def __init__(self, size: int, nuisance: Nuisance) -> None:
        self.size = size
        self.img = np.empty((size, size, 3), np.uint8)
        self.img[:] = np.rint(np.asarray(nuisance.background)).astype(np.uint8)
        self.label = np.zeros((size, size), np.uint8)
        half = size / 2.0
        theta = math.radians(nuisance.rotation)
        ca, sa = math.cos(theta), math.sin(theta)
        k = nuisance.scale * _BASE_SCALE * half
        # face frame -> pixels: p = half * (scale * R q + shift) + (size - 1) / 2
        self.face_a = np.array([[k * ca, -k * sa], [k * sa, k * ca]])
        off = (size - 1) / 2.0
        self.face_b = np.array([half * nuisance.shift[0] + off, half * nuisance.shift[1] + off])
        self.img_a = np.array([[half, 0.0], [0.0, half]])
        self.img_b = np.array([off, off])

    def _px(self, pts: np.ndarray, frame: str) -> np.ndarray:
        if frame == "face":
            return pts @ self.face_a.T + self.face_b
        return pts @ self.img_a.T + self.img_b

    @staticmethod
    def _fixed(px: np.ndarray) -> np.ndarray:
        return np.rint(px * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)

    def fill(
        self,
        polys: list[np.ndarray],
        colour: Colour,
        label: int | None = None,
        frame: str = "face",
    ) -> None:
        """Fill polygons (even-odd over the list) opaquely; optionally stamp ``label``."""
        if not polys:
            return
        fixed = [self._fixed(self._px(p, frame)) for p in polys]
        cv2.fillPoly(self.img, fixed, colour, lineType=cv2.LINE_AA, shift=_SHIFT)
        if label is not None:
            cv2.fillPoly(self.label, fixed, label, lineType=cv2.LINE_8, shift=_SHIFT)

    def blend(
        self, polys: list[np.ndarray], colour: Colour, alpha: float, frame: str = "face"
    ) -> None:
        """Alpha-blend filled polygons over the canvas (labels unchanged)."""
        if alpha <= 0.004 or not polys:
            return
        px = [self._px(p, frame) for p in polys]
        allp = np.concatenate(px)
        x0 = max(math.floor(allp[:, 0].min()) - 1, 0)
        y0 = max(math.floor(allp[:, 1].min()) - 1, 0)
        x1 = min(math.ceil(allp[:, 0].max()) + 2, self.size)
        y1 = min(math.ceil(allp[:, 1].max()) + 2, self.size)
        if x1 <= x0 or y1 <= y0:
            return
        cover = np.zeros((y1 - y0, x1 - x0), np.uint8)
        origin = np.array([x0, y0], dtype=np.float64)
        cv2.fillPoly(
            cover, [self._fixed(p - origin) for p in px], 255, lineType=cv2.LINE_AA, shift=_SHIFT
        )
        crop = self.img[y0:y1, x0:x1].astype(np.float32)
        w = cover.astype(np.float32)[..., None] * np.float32(alpha / 255.0)
        crop += (np.asarray(colour, np.float32) - crop) * w
        self.img[y0:y1, x0:x1] = np.rint(crop).astype(np.uint8)


@cache
def _light_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) / (size / 2.0)
    return coords[None, :], coords[:, None]  # x varies along columns, y along rows


def _draw_hair_cap(cv: _Canvas, idn: Identity, brow_y: float) -> None:
    a, b = idn.face_width, idn.face_height
    big_a = a + 0.03 + 0.5 * idn.hair_volume
    big_b = b + 0.03 + idn.hair_volume
    fringe = idn.hair_style == 3
    y_h = brow_y - (0.115 if fringe else 0.18)
    y_side = y_h + (0.08 if fringe else 0.15)
    phi0 = math.asin(min(max(-y_side / big_b, -1.0), 1.0))
    phi = np.linspace(phi0, np.pi - phi0, 25)
    arc = np.stack([big_a * np.cos(phi), -big_b * np.sin(phi)], axis=1)
    half = big_a * math.cos(phi0)
    xh = np.linspace(-half, half, 25)
    yh = y_side + (y_h - y_side) * (1.0 - (xh / half) ** 2)
    if fringe:
        yh = yh + 0.012 * np.sin(xh * 45.0)
    cv.fill([np.concatenate([arc, np.stack([xh, yh], axis=1)])], idn.hair, _HAIR)


def _draw_back_hair(cv: _Canvas, idn: Identity, long_pass: bool) -> None:
    if idn.hair_style == 0 or (idn.hair_style == 2) != long_pass:
        return
    a, b = idn.face_width, idn.face_height
    dark = _scaled(idn.hair, 0.85)
    if idn.hair_style == 2:
        big_a = a + 0.06 + 0.5 * idn.hair_volume
        phi = np.linspace(0.0, np.pi, 25)
        arc = np.stack([big_a * np.cos(phi), -(b + 0.05 + idn.hair_volume) * np.sin(phi)], axis=1)
        bottom = np.array(
            [[-big_a - 0.03, idn.hair_length], [big_a + 0.03, idn.hair_length]], dtype=np.float64
        )
        cv.fill([np.concatenate([arc, bottom])], dark, _HAIR)
    else:
        extra = 0.05 if idn.hair_style == 1 else 0.08
        cv.fill(
            [_ellipse(0.0, -0.1, a + extra + 0.5 * idn.hair_volume, b * 0.85 + idn.hair_volume)],
            dark,
            _HAIR,
        )


def _draw_clutter(cv: _Canvas, nuisance: Nuisance) -> None:
    for kind, cx, cy, w, h, angle, r, gg, bb in nuisance.clutter:
        colour = (r, gg, bb)
        if kind == 0:
            poly = _ellipse(cx, cy, w, h, n=24, angle=angle, power=8.0)
        elif kind == 1:
            poly = _ellipse(cx, cy, w, h, n=24, angle=angle)
        else:
            ca, sa = math.cos(angle), math.sin(angle)
            xs = np.array([cx - w * ca, cx + w * ca])
            ys = np.array([cy - w * sa, cy + w * sa])
            poly = _stroke(xs, ys, max(h * 0.25, 0.02))
        cv.fill([poly], colour, None, frame="image")


def render_face(
    aus: np.ndarray,
    identity: Identity,
    nuisance: Nuisance,
    size: int,
    *,
    supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one face.

    Args:
        aus: action-unit intensities in [0, 1], shape ``(len(AUS),)`` in :data:`AUS` order.
        identity: the person (see ``sample_identity``).
        nuisance: pose, lighting, background, blur, noise and occlusion (``sample_nuisance``).
        size: output side length in pixels (square image), >= 16.
        supersample: canvas oversampling factor (colour is box-averaged, masks majority-voted).

    Returns:
        ``(image, mask)``: ``(size, size, 3)`` uint8 RGB and ``(size, size)`` uint8 bit flags
        (``REGION_BITS``: face, brows, eyes, nose, mouth) of the visible drawn parts.

    Raises:
        ValueError: bad ``size``/``supersample`` or an AU vector of the wrong shape.
    """
    if size < 16 or supersample < 1:
        raise ValueError(
            f"size must be >= 16 and supersample >= 1, got size={size}, "
            f"supersample={supersample}; use e.g. size=64, supersample=2"
        )
    idn = identity
    geo = face_geometry(aus, idn, nuisance.gaze)
    skin = idn.skin
    alphas = geo["alphas"][0]
    big = size * supersample
    cv = _Canvas(big, nuisance)

    _draw_clutter(cv, nuisance)
    _draw_back_hair(cv, idn, long_pass=False)
    a = idn.face_width
    ear_y = -0.05 + idn.eye_y + 0.07
    cv.fill(
        [
            _ellipse(sgn * a * 0.97, ear_y, 0.05 * idn.ear_size, 0.095 * idn.ear_size, n=20)
            for sgn in (-1.0, 1.0)
        ],
        _scaled(skin, 0.88),
        _BODY,
    )
    _draw_back_hair(cv, idn, long_pass=True)
    cv.fill(
        [np.array([[-0.2, 0.3], [0.2, 0.3], [0.23, 1.4], [-0.23, 1.4]])], _scaled(skin, 0.8), _BODY
    )
    cv.fill(
        [
            np.array(
                [
                    [-1.5, 1.5],
                    [-1.3, 0.98],
                    [-0.55, 0.8],
                    [-0.2, 0.84],
                    [0.0, 1.0],
                    [0.2, 0.84],
                    [0.55, 0.8],
                    [1.3, 0.98],
                    [1.5, 1.5],
                ]
            )
        ],
        idn.clothes,
        _BODY,
    )

    # Face skin and skin-level features.
    cv.fill(geo["face"], skin, _FACE)
    if idn.spots:
        cv.blend(
            [_ellipse(x, y, r, r * 0.85, n=12) for x, y, r in idn.spots], _scaled(skin, 0.62), 0.85
        )
    blush = _scaled(skin, (1.06, 0.84, 0.84))
    cv.blend(geo["cheeks"], blush, float(alphas[0]) * 0.6)
    cv.blend(
        [_ellipse(*p.mean(0), 0.06, 0.04, n=20) for p in geo["cheeks"]],
        blush,
        float(alphas[0]) * 0.6,
    )
    line = _scaled(skin, 0.55)
    cv.blend(geo["infraorbital"], line, float(alphas[1]))
    cv.blend(geo["forehead_wrinkles"], line, float(alphas[2]))
    cv.blend(geo["glabella"], line, float(alphas[3]))
    if idn.hair_style != 0:
        _draw_hair_cap(cv, idn, float(geo["hair_anchor"][0][0, 0]))

    # Nose.
    cv.fill(geo["nose"], _scaled(skin, 0.93), _NOSE)
    cv.blend(geo["nose_tip"], _scaled(skin, 1.04), 0.6)
    cv.fill(geo["nostrils"], _scaled(skin, 0.42), _NOSE)
    cv.blend(geo["nose_wrinkles"], _scaled(skin, 0.55), float(alphas[4]))
    cv.blend(geo["nasolabial"], line, float(alphas[5]))

    # Eyes.
    cv.fill(geo["eyes"], (238.0, 236.0, 230.0), _EYES)
    cv.fill(geo["irises"], idn.iris, _EYES)
    cv.fill(geo["pupils"], (15.0, 12.0, 12.0), _EYES)
    cv.fill(geo["lashes"], (30.0, 24.0, 24.0), _EYES)
    cv.blend(geo["lower_lids"], _scaled(skin, 0.6), 0.6)
    cv.blend(geo["creases"], _scaled(skin, 0.7), 0.45)

    # Brows.
    brow = _scaled(idn.hair, 0.5) if idn.hair_style and not idn.hair_unusual else (70.0, 55.0, 45.0)
    brow = tuple(min(c, 0.45 * k) for c, k in zip(brow, skin, strict=True))
    cv.fill(geo["brows"], brow, _BROWS)

    # Mouth.
    cv.fill(geo["mouth"], idn.lips, _MOUTH)
    cv.fill(geo["mouth_inner"], (70.0, 18.0, 25.0), _MOUTH)
    cv.fill(geo["teeth"], (236.0, 232.0, 218.0), _MOUTH)
    cv.fill(geo["lip_line"], _scaled(idn.lips, 0.5), _MOUTH)

    # Glasses.
    if idn.glasses:
        power = 2.0 if idn.glasses_round else 5.0
        frames, lenses = [], []
        for eye in geo["eyes"]:
            cx, cy = float(eye[:, 0].mean()), float(eye[:, 1].mean())
            rx, ry, t = 0.15 * idn.eye_size, 0.09, 0.016
            frames += [
                _ellipse(cx, cy, rx + t / 2, ry + t / 2, n=32, power=power),
                _ellipse(cx, cy, rx - t / 2, ry - t / 2, n=32, power=power),
            ]
            lenses.append(_ellipse(cx, cy, rx, ry, n=32, power=power))
        cv.blend(lenses, (205.0, 222.0, 250.0), 0.12)
        cv.fill(frames, idn.glasses_colour, _ACCESSORY)
        left, right = (float(e[:, 0].mean()) for e in geo["eyes"])
        cy = float(np.mean([e[:, 1].mean() for e in geo["eyes"]]))
        rx = 0.15 * idn.eye_size
        xb = np.linspace(left + rx, right - rx, 8)
        arms = [
            _stroke(xb, cy - 0.01 - 0.015 * (1 - (xb / max(abs(xb[0]), 1e-6)) ** 2), 0.016),
            _stroke(np.array([left - rx, -a * 0.99]), np.array([cy - 0.01, cy + 0.01]), 0.016),
            _stroke(np.array([right + rx, a * 0.99]), np.array([cy - 0.01, cy + 0.01]), 0.016),
        ]
        for arm in arms:
            cv.fill([arm], idn.glasses_colour, _ACCESSORY)

    if nuisance.occluder is not None:
        cx, cy, rx, ry, angle, r, gg, bb = nuisance.occluder
        cv.fill([_ellipse(cx, cy, rx, ry, n=24, angle=angle)], (r, gg, bb), _OCCLUDER, "image")

    # Box-downsample, then the (smooth) photometric nuisance at output resolution.
    img = cv.img.astype(np.float32)
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
    image = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)

    bits = _LUT[cv.label]
    if supersample > 1:
        # Majority vote per region bit over each supersample x supersample block: the
        # sub-pixel grids bits[i::k, j::k] are (size, size) views, one per block position.
        subs = [
            bits[i::supersample, j::supersample]
            for i in range(supersample)
            for j in range(supersample)
        ]
        need = (len(subs) + 1) // 2
        mask = np.zeros((size, size), np.uint8)
        for bit in REGION_BITS.values():
            votes = np.zeros((size, size), np.uint8)
            for sub in subs:
                votes += (sub & bit) > 0
            mask |= (votes >= need).view(np.uint8) * np.uint8(bit)
    else:
        mask = bits
    return image, mask
