"""SynthFACS action units: the AU list, the prototypical AUs of each expression, and drawing the
AU intensities of one expression."""

from __future__ import annotations

import numpy as np

from facelens.constants import EXPRESSIONS
from facelens.data.synthfacs.params import SynthParams

__all__ = ["AUS", "PROTOTYPES", "au_intensity", "sample_aus"]

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

#: Prototypical AU weights per expression (multiplied by the sampled intensity).
PROTOTYPES: dict[str, dict[str, float]] = {
    "angry": {"AU4": 1.0, "AU5": 0.6, "AU7": 0.8, "AU23": 0.9},
    "disgust": {"AU9": 1.0, "AU10": 0.6, "AU15": 0.7, "AU16": 0.5},
    "fear": {"AU1": 0.9, "AU2": 0.7, "AU4": 0.6, "AU5": 0.9, "AU20": 0.9, "AU25": 0.6, "AU26": 0.6},
    "happy": {"AU6": 0.8, "AU12": 1.0},
    "sad": {"AU1": 1.0, "AU4": 0.6, "AU15": 0.9},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.8, "AU25": 0.8, "AU26": 1.0},
    "neutral": {},
}
# Optional extras: (AU, weight, probability) - e.g. open-mouthed smiles.
_OPTIONAL: dict[str, tuple[tuple[str, float, float], ...]] = {
    "happy": (("AU25", 0.7, 0.4),),
}
_AU_JITTER = 0.15  # relative per-AU jitter of the prototype weights (uniform +-)


def au_intensity(aus: np.ndarray, name: str) -> float:
    """The intensity of AU ``name`` in the vector ``aus``, clipped to [0, 1]."""
    return min(max(float(aus[_AU_INDEX[name]]), 0.0), 1.0)


def sample_aus(
    label: int, rng: np.random.Generator, params: SynthParams | None = None
) -> np.ndarray:
    """Draw the action units of one expression.

    Args:
        label: index into ``EXPRESSIONS``.
        rng: randomness (a fixed number of draws per call).
        params: intensity ranges, weak fraction and spurious activations.

    Returns:
        ``(len(AUS),)`` float32 intensities in [0, 1].
    """
    params = params or SynthParams()
    if not 0 <= label < len(EXPRESSIONS):
        raise ValueError(f"label must be in 0..{len(EXPRESSIONS) - 1} ({EXPRESSIONS}), got {label}")
    name = EXPRESSIONS[label]
    weak = rng.random() < params.weak_fraction
    lo, hi = params.weak_range if weak else params.intensity_range
    intensity = rng.uniform(lo, hi)
    jitter = rng.uniform(1.0 - _AU_JITTER, 1.0 + _AU_JITTER, len(AUS))
    spurious_on = rng.random(len(AUS)) < params.spurious_prob
    spurious = rng.uniform(0.0, params.spurious_max, len(AUS)) * spurious_on
    optional_draw = rng.random(len(AUS))
    aus = spurious.copy()
    proto = PROTOTYPES[name]
    for i, au in enumerate(AUS):
        if au in proto:
            aus[i] = proto[au] * intensity * jitter[i]
    for au, weight, prob in _OPTIONAL.get(name, ()):
        i = AUS.index(au)
        if optional_draw[i] < prob:
            aus[i] = max(aus[i], weight * intensity * jitter[i])
    return np.clip(aus, 0.0, 1.0).astype(np.float32)
