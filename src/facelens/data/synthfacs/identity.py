"""SynthFACS identities: a simulated person (everything that stays fixed across their
expressions) and drawing one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facelens.data.synthfacs.colours import Colour, as_colour
from facelens.data.synthfacs.params import SynthParams

__all__ = ["Identity", "sample_identity"]

_SKIN_PALETTE = np.array(
    [
        [252.0, 224.0, 205.0],
        [236.0, 192.0, 160.0],
        [205.0, 152.0, 114.0],
        [160.0, 110.0, 78.0],
        [125.0, 85.0, 60.0],
    ]
)
_HAIR_NATURAL = (
    (25.0, 20.0, 18.0),
    (60.0, 40.0, 28.0),
    (105.0, 72.0, 45.0),
    (190.0, 150.0, 90.0),
    (150.0, 70.0, 35.0),
    (165.0, 160.0, 155.0),
)
_HAIR_UNUSUAL = (
    (60.0, 90.0, 210.0),
    (220.0, 80.0, 160.0),
    (70.0, 170.0, 90.0),
    (140.0, 70.0, 190.0),
)
_IRIS = ((70.0, 45.0, 30.0), (40.0, 28.0, 20.0), (70.0, 110.0, 160.0), (80.0, 120.0, 80.0))
_HAIR_STYLES = (0, 1, 2, 3)
_HAIR_STYLE_CDF = np.cumsum((0.08, 0.37, 0.35, 0.2))[:-1]  # bald, short, long, fringe
_N_UNIFORMS = 40  # uniforms drawn up front per identity (more than are consumed)
_MAX_SPOTS = 12  # skin spots of a fully blemished face
_UNUSUAL_HAIR_PROB = 0.07
_DARK_FRAME_PROB = 0.7
_LIP_RED = np.array([170.0, 60.0, 70.0])


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


class _Uniforms:
    """One vector of uniforms, consumed in a fixed order (fast and reproducible)."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self._draws = iter(rng.random(n).tolist())

    def next(self) -> float:
        return next(self._draws)

    def between(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * next(self._draws)

    def pick(self, options: Sequence[Colour]) -> Colour:
        return options[min(int(next(self._draws) * len(options)), len(options) - 1)]


def _skin_colour(tone: float, jitter: np.ndarray) -> np.ndarray:
    """Skin RGB: the palette interpolated at ``tone`` (0 light .. 1 dark), plus ``jitter``."""
    pos = tone * (len(_SKIN_PALETTE) - 1)
    i0 = min(int(pos), len(_SKIN_PALETTE) - 2)
    return _SKIN_PALETTE[i0] + (pos - i0) * (_SKIN_PALETTE[i0 + 1] - _SKIN_PALETTE[i0]) + jitter


def sample_identity(rng: np.random.Generator, params: SynthParams | None = None) -> Identity:
    """Draw one person.

    Args:
        rng: the only source of randomness (a fixed number of draws per call).
        params: generator parameters (only ``glasses_prob`` is used); default
            ``SynthParams()``.

    Returns:
        A frozen :class:`Identity`.
    """
    params = params or SynthParams()
    draws = _Uniforms(rng, _N_UNIFORMS)
    u = draws.between
    jitter = rng.normal(0.0, 6.0, 3)
    blemish = float(rng.beta(1.3, 3.0))
    asymmetry = float(rng.beta(1.2, 3.0))
    spot_draws = rng.random((_MAX_SPOTS, 3))
    colours = rng.random((2, 3))

    tone = u(0.0, 1.0)
    skin = _skin_colour(tone, jitter)
    n_spots = round(blemish * _MAX_SPOTS)
    spots = tuple(
        (-0.4 + 0.8 * x, -0.45 + 1.0 * y, 0.018 + 0.012 * r)
        for x, y, r in spot_draws[:n_spots].tolist()
    )
    unusual = draws.next() < _UNUSUAL_HAIR_PROB
    natural, odd = draws.pick(_HAIR_NATURAL), draws.pick(_HAIR_UNUSUAL)
    hair = np.asarray(odd if unusual else natural) * u(0.85, 1.15)
    lip_mix = u(0.4, 0.6)
    lips = (1.0 - lip_mix) * 0.7 * skin + lip_mix * _LIP_RED
    signs = [1.0 if draws.next() < 0.5 else -1.0 for _ in range(3)]
    glasses = draws.next() < params.glasses_prob
    dark_frame = draws.next() < _DARK_FRAME_PROB
    glasses_colour = 10.0 + 110.0 * colours[0] if dark_frame else 255.0 * colours[0]
    style = int(np.searchsorted(_HAIR_STYLE_CDF, draws.next(), side="right"))
    return Identity(
        face_width=u(0.5, 0.6),
        face_height=u(0.68, 0.78),
        jaw_power=u(2.0, 3.2),
        chin_taper=u(0.05, 0.3),
        skin_tone=tone,
        skin=as_colour(skin),
        blemish=blemish,
        spots=spots,
        eye_size=u(0.85, 1.2),
        eye_spacing=u(0.9, 1.12),
        eye_y=u(-0.03, 0.03),
        eye_open=u(0.8, 1.2),
        iris=draws.pick(_IRIS),
        brow_height=u(0.85, 1.15),
        brow_thickness=u(0.7, 1.4),
        brow_arch=u(0.0, 1.2),
        nose_length=u(0.85, 1.15),
        nose_width=u(0.8, 1.3),
        mouth_width=u(0.85, 1.15),
        lip_thickness=u(0.7, 1.3),
        philtrum=u(0.85, 1.15),
        rest_curve=u(-0.008, 0.008),
        lips=as_colour(lips),
        hair_style=_HAIR_STYLES[min(style, len(_HAIR_STYLES) - 1)],
        hair=as_colour(hair),
        hair_unusual=unusual,
        hair_volume=u(0.0, 0.1),
        hair_length=u(0.2, 1.0),
        glasses=glasses,
        glasses_colour=as_colour(glasses_colour),
        glasses_round=draws.next() < 0.5,
        asymmetry=asymmetry,
        asym_eye=signs[0] * asymmetry * 0.018,
        asym_brow=signs[1] * asymmetry * 0.025,
        asym_mouth=signs[2] * asymmetry * 0.025,
        ear_size=u(0.8, 1.2),
        clothes=as_colour(20.0 + 215.0 * colours[1]),
    )
