"""SynthFACS face cues, step 1 of the rating model (:mod:`.ratings`).

Each sample yields 18 cues from its action units and its identity:
expression valence (``AU12 + .5 AU6 - .6 AU4 - .5 AU23 - .5 AU9 - .45 AU15 - .35 AU10
- .25 AU7 - .25 AU20 - .2 AU16``), smile (AU12), arousal (sum of AU1, AU2, AU5, AU9, AU16,
AU20, AU26), worry (AU1 + AU15), eye size, roundness (minus the jaw superellipse
exponent), facial width-to-height ratio, resting smile (minus the resting lip-corner
offset), asymmetry, skin blemish, feature extremeness (RMS distance of nine shape factors
from the average face), has hair, glasses, unusual hair colour, bald, face length, eye
spacing and brow thickness. Each cue is z-scored with the moments of a fixed reference
sample drawn from the same parameters, so one face's ratings do not depend on the rest of
the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facelens.data.synthfacs.action_units import AUS
from facelens.data.synthfacs.identity import Identity

__all__ = ["CUES", "face_cues"]

#: Cue names, in the column order of :func:`face_cues`.
CUES: tuple[str, ...] = (
    "valence",
    "smile",
    "arousal",
    "worry",
    "eye_size",
    "roundness",
    "fwhr",
    "rest_smile",
    "asymmetry",
    "blemish",
    "extremeness",
    "hair",
    "glasses",
    "hair_unusual",
    "bald",
    "face_length",
    "eye_spacing",
    "brow_thickness",
)

# Shape factors for "extremeness" and their sampling ranges (uniform) in sample_identity.
_SHAPE_RANGES: dict[str, tuple[float, float]] = {
    "face_width": (0.5, 0.6),
    "face_height": (0.68, 0.78),
    "eye_size": (0.85, 1.2),
    "eye_spacing": (0.9, 1.12),
    "nose_length": (0.85, 1.15),
    "nose_width": (0.8, 1.3),
    "mouth_width": (0.85, 1.15),
    "lip_thickness": (0.7, 1.3),
    "brow_thickness": (0.7, 1.4),
}


def _au_matrix_index(name: str) -> int:
    return AUS.index(name)


def face_cues(aus: np.ndarray, identities: Sequence[Identity]) -> np.ndarray:
    """Raw (not yet z-scored) face cues of step 1 of the rating model.

    Args:
        aus: ``(N, len(AUS))`` action-unit intensities.
        identities: the N identities (one per row of ``aus``).

    Returns:
        ``(N, 18)`` float64 cue matrix, columns in ``CUES`` order.
    """
    aus = np.asarray(aus, dtype=np.float64)
    if aus.ndim != 2 or aus.shape[1] != len(AUS) or aus.shape[0] != len(identities):
        raise ValueError(
            f"aus must have shape (N, {len(AUS)}) with N = len(identities) = {len(identities)}, "
            f"got {aus.shape}"
        )

    def au(name: str) -> np.ndarray:
        return aus[:, _au_matrix_index(name)]

    valence = (
        au("AU12")
        + 0.5 * au("AU6")
        - 0.6 * au("AU4")
        - 0.5 * au("AU23")
        - 0.5 * au("AU9")
        - 0.45 * au("AU15")
        - 0.35 * au("AU10")
        - 0.25 * au("AU7")
        - 0.25 * au("AU20")
        - 0.2 * au("AU16")
    )
    arousal = sum(au(n) for n in ("AU1", "AU2", "AU5", "AU9", "AU16", "AU20", "AU26"))
    worry = au("AU1") + au("AU15")

    def ident(attr: str) -> np.ndarray:
        return np.array([float(getattr(i, attr)) for i in identities])

    shape_z = []
    for name, (lo, hi) in _SHAPE_RANGES.items():
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        shape_z.append((ident(name) - mid) / half)
    extremeness = np.sqrt(np.mean(np.square(shape_z), axis=0))
    hair_style = ident("hair_style")
    cues = {
        "valence": valence,
        "smile": au("AU12"),
        "arousal": arousal,
        "worry": worry,
        "eye_size": ident("eye_size"),
        "roundness": -ident("jaw_power"),
        "fwhr": ident("face_width") / ident("face_height"),
        "rest_smile": -ident("rest_curve"),
        "asymmetry": ident("asymmetry"),
        "blemish": ident("blemish"),
        "extremeness": extremeness,
        "hair": (hair_style != 0).astype(np.float64),
        "glasses": ident("glasses"),
        "hair_unusual": ident("hair_unusual"),
        "bald": (hair_style == 0).astype(np.float64),
        "face_length": ident("face_height"),
        "eye_spacing": ident("eye_spacing"),
        "brow_thickness": ident("brow_thickness"),
    }
    return np.stack([cues[name] for name in CUES], axis=1)
