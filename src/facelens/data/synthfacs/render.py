"""SynthFACS rendering: identity geometry + action units + nuisance -> RGB image and region mask.

Parts are painted back to front on a :class:`~facelens.data.synthfacs.canvas.Canvas`
``supersample`` times the output size: background clutter, hair behind the head, ears, neck
and clothes, the face skin with its soft features (spots, blush, wrinkles, furrows), the hair
cap, nose, eyes, brows, mouth, glasses and an occluder. The canvas is then photographed
(:mod:`.photo`) and its label map reduced to region masks (:mod:`.masks`).
"""

from __future__ import annotations

import math

import numpy as np

from facelens.data.synthfacs.canvas import Canvas
from facelens.data.synthfacs.colours import scaled
from facelens.data.synthfacs.geometry import Geometry, face_geometry
from facelens.data.synthfacs.identity import Identity
from facelens.data.synthfacs.masks import (
    PART_ACCESSORY,
    PART_BODY,
    PART_BROWS,
    PART_EYES,
    PART_FACE,
    PART_HAIR,
    PART_MOUTH,
    PART_NOSE,
    PART_OCCLUDER,
    region_mask,
)
from facelens.data.synthfacs.nuisance import Nuisance
from facelens.data.synthfacs.photo import photograph
from facelens.data.synthfacs.shapes import ellipse, stroke

__all__ = ["render_face"]

_NECK = np.array([[-0.2, 0.3], [0.2, 0.3], [0.23, 1.4], [-0.23, 1.4]])
_SHOULDERS = np.array(
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
_EYE_WHITE = (238.0, 236.0, 230.0)
_PUPIL = (15.0, 12.0, 12.0)
_LASHES = (30.0, 24.0, 24.0)
_BROW_OF_BALD_OR_DYED = (70.0, 55.0, 45.0)
_MOUTH_INSIDE = (70.0, 18.0, 25.0)
_TEETH = (236.0, 232.0, 218.0)
_LENS_TINT = (205.0, 222.0, 250.0)
_GLASSES_FRAME_WIDTH = 0.016


def _draw_hair_cap(cv: Canvas, idn: Identity, brow_y: float) -> None:
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
    cv.fill([np.concatenate([arc, np.stack([xh, yh], axis=1)])], idn.hair, PART_HAIR)


def _draw_back_hair(cv: Canvas, idn: Identity, long_pass: bool) -> None:
    if idn.hair_style == 0 or (idn.hair_style == 2) != long_pass:
        return
    a, b = idn.face_width, idn.face_height
    dark = scaled(idn.hair, 0.85)
    if idn.hair_style == 2:
        big_a = a + 0.06 + 0.5 * idn.hair_volume
        phi = np.linspace(0.0, np.pi, 25)
        arc = np.stack([big_a * np.cos(phi), -(b + 0.05 + idn.hair_volume) * np.sin(phi)], axis=1)
        bottom = np.array(
            [[-big_a - 0.03, idn.hair_length], [big_a + 0.03, idn.hair_length]], dtype=np.float64
        )
        cv.fill([np.concatenate([arc, bottom])], dark, PART_HAIR)
    else:
        extra = 0.05 if idn.hair_style == 1 else 0.08
        cv.fill(
            [ellipse(0.0, -0.1, a + extra + 0.5 * idn.hair_volume, b * 0.85 + idn.hair_volume)],
            dark,
            PART_HAIR,
        )


def _draw_clutter(cv: Canvas, nuisance: Nuisance) -> None:
    for kind, cx, cy, w, h, angle, r, gg, bb in nuisance.clutter:
        colour = (r, gg, bb)
        if kind == 0:
            poly = ellipse(cx, cy, w, h, n=24, angle=angle, power=8.0)
        elif kind == 1:
            poly = ellipse(cx, cy, w, h, n=24, angle=angle)
        else:
            ca, sa = math.cos(angle), math.sin(angle)
            xs = np.array([cx - w * ca, cx + w * ca])
            ys = np.array([cy - w * sa, cy + w * sa])
            poly = stroke(xs, ys, max(h * 0.25, 0.02))
        cv.fill([poly], colour, None, frame="image")


def _draw_body(cv: Canvas, idn: Identity) -> None:
    """Hair behind the head, ears, neck and clothes."""
    skin = idn.skin
    _draw_back_hair(cv, idn, long_pass=False)
    a = idn.face_width
    ear_y = -0.05 + idn.eye_y + 0.07
    cv.fill(
        [
            ellipse(sgn * a * 0.97, ear_y, 0.05 * idn.ear_size, 0.095 * idn.ear_size, n=20)
            for sgn in (-1.0, 1.0)
        ],
        scaled(skin, 0.88),
        PART_BODY,
    )
    _draw_back_hair(cv, idn, long_pass=True)
    cv.fill([_NECK], scaled(skin, 0.8), PART_BODY)
    cv.fill([_SHOULDERS], idn.clothes, PART_BODY)


def _draw_skin(cv: Canvas, idn: Identity, geo: Geometry) -> None:
    """Face skin and skin-level features (spots, blush, wrinkles, furrows), then the hair cap."""
    skin = idn.skin
    alphas = geo["alphas"][0]
    cv.fill(geo["face"], skin, PART_FACE)
    if idn.spots:
        cv.blend(
            [ellipse(x, y, r, r * 0.85, n=12) for x, y, r in idn.spots], scaled(skin, 0.62), 0.85
        )
    blush = scaled(skin, (1.06, 0.84, 0.84))
    cv.blend(geo["cheeks"], blush, float(alphas[0]) * 0.6)
    cv.blend(
        [ellipse(*p.mean(0), 0.06, 0.04, n=20) for p in geo["cheeks"]],
        blush,
        float(alphas[0]) * 0.6,
    )
    line = scaled(skin, 0.55)
    cv.blend(geo["infraorbital"], line, float(alphas[1]))
    cv.blend(geo["forehead_wrinkles"], line, float(alphas[2]))
    cv.blend(geo["glabella"], line, float(alphas[3]))
    if idn.hair_style != 0:
        _draw_hair_cap(cv, idn, float(geo["hair_anchor"][0][0, 0]))


def _draw_nose(cv: Canvas, idn: Identity, geo: Geometry) -> None:
    skin = idn.skin
    alphas = geo["alphas"][0]
    cv.fill(geo["nose"], scaled(skin, 0.93), PART_NOSE)
    cv.blend(geo["nose_tip"], scaled(skin, 1.04), 0.6)
    cv.fill(geo["nostrils"], scaled(skin, 0.42), PART_NOSE)
    cv.blend(geo["nose_wrinkles"], scaled(skin, 0.55), float(alphas[4]))
    cv.blend(geo["nasolabial"], scaled(skin, 0.55), float(alphas[5]))


def _draw_eyes_and_brows(cv: Canvas, idn: Identity, geo: Geometry) -> None:
    skin = idn.skin
    cv.fill(geo["eyes"], _EYE_WHITE, PART_EYES)
    cv.fill(geo["irises"], idn.iris, PART_EYES)
    cv.fill(geo["pupils"], _PUPIL, PART_EYES)
    cv.fill(geo["lashes"], _LASHES, PART_EYES)
    cv.blend(geo["lower_lids"], scaled(skin, 0.6), 0.6)
    cv.blend(geo["creases"], scaled(skin, 0.7), 0.45)
    brow = (
        scaled(idn.hair, 0.5) if idn.hair_style and not idn.hair_unusual else _BROW_OF_BALD_OR_DYED
    )
    brow = tuple(min(c, 0.45 * k) for c, k in zip(brow, skin, strict=True))
    cv.fill(geo["brows"], brow, PART_BROWS)


def _draw_mouth(cv: Canvas, idn: Identity, geo: Geometry) -> None:
    cv.fill(geo["mouth"], idn.lips, PART_MOUTH)
    cv.fill(geo["mouth_inner"], _MOUTH_INSIDE, PART_MOUTH)
    cv.fill(geo["teeth"], _TEETH, PART_MOUTH)
    cv.fill(geo["lip_line"], scaled(idn.lips, 0.5), PART_MOUTH)


def _draw_glasses(cv: Canvas, idn: Identity, geo: Geometry) -> None:
    """Tinted lenses, frames around both eyes, the bridge and the arms to the face edge."""
    a = idn.face_width
    power = 2.0 if idn.glasses_round else 5.0
    frames, lenses = [], []
    for eye in geo["eyes"]:
        cx, cy = float(eye[:, 0].mean()), float(eye[:, 1].mean())
        rx, ry, t = 0.15 * idn.eye_size, 0.09, _GLASSES_FRAME_WIDTH
        frames += [
            ellipse(cx, cy, rx + t / 2, ry + t / 2, n=32, power=power),
            ellipse(cx, cy, rx - t / 2, ry - t / 2, n=32, power=power),
        ]
        lenses.append(ellipse(cx, cy, rx, ry, n=32, power=power))
    cv.blend(lenses, _LENS_TINT, 0.12)
    cv.fill(frames, idn.glasses_colour, PART_ACCESSORY)
    left, right = (float(e[:, 0].mean()) for e in geo["eyes"])
    cy = float(np.mean([e[:, 1].mean() for e in geo["eyes"]]))
    rx = 0.15 * idn.eye_size
    xb = np.linspace(left + rx, right - rx, 8)
    width = _GLASSES_FRAME_WIDTH
    arms = [
        stroke(xb, cy - 0.01 - 0.015 * (1 - (xb / max(abs(xb[0]), 1e-6)) ** 2), width),
        stroke(np.array([left - rx, -a * 0.99]), np.array([cy - 0.01, cy + 0.01]), width),
        stroke(np.array([right + rx, a * 0.99]), np.array([cy - 0.01, cy + 0.01]), width),
    ]
    for arm in arms:
        cv.fill([arm], idn.glasses_colour, PART_ACCESSORY)


def _draw_occluder(cv: Canvas, occluder: tuple[float, ...]) -> None:
    cx, cy, rx, ry, angle, r, gg, bb = occluder
    cv.fill([ellipse(cx, cy, rx, ry, n=24, angle=angle)], (r, gg, bb), PART_OCCLUDER, "image")


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
        aus: action-unit intensities in [0, 1], shape ``(len(AUS),)`` in ``AUS`` order.
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
    cv = Canvas(size * supersample, nuisance)
    _draw_clutter(cv, nuisance)
    _draw_body(cv, idn)
    _draw_skin(cv, idn, geo)
    _draw_nose(cv, idn, geo)
    _draw_eyes_and_brows(cv, idn, geo)
    _draw_mouth(cv, idn, geo)
    if idn.glasses:
        _draw_glasses(cv, idn, geo)
    if nuisance.occluder is not None:
        _draw_occluder(cv, nuisance.occluder)
    image = photograph(cv.img, size, supersample, nuisance)
    return image, region_mask(cv.label, size, supersample)
