"""SynthFACS region masks: the part labels the renderer stamps into its label map, and the
reduction of that map to output-size region bit flags by majority vote.

Masks describe *visible* parts: the painter's order decides which label a sub-pixel keeps, so
an occluder or a glasses frame drawn over an eye clears the eye bit there.
"""

from __future__ import annotations

import numpy as np

from facelens.constants import REGION_BITS

__all__ = [
    "PART_ACCESSORY",
    "PART_BACKGROUND",
    "PART_BODY",
    "PART_BROWS",
    "PART_EYES",
    "PART_FACE",
    "PART_HAIR",
    "PART_MOUTH",
    "PART_NOSE",
    "PART_OCCLUDER",
    "region_mask",
]

# Part labels of the label map (painter's order decides which one is visible).
(
    PART_BACKGROUND,
    PART_HAIR,
    PART_BODY,
    PART_FACE,
    PART_BROWS,
    PART_EYES,
    PART_NOSE,
    PART_MOUTH,
    PART_ACCESSORY,
    PART_OCCLUDER,
) = range(10)

#: part label -> region bits (a lookup table over every uint8 label).
_REGION_BITS_OF_PART = np.zeros(256, np.uint8)
_REGION_BITS_OF_PART[PART_FACE] = REGION_BITS["face"]
_REGION_BITS_OF_PART[PART_BROWS] = REGION_BITS["face"] | REGION_BITS["brows"]
_REGION_BITS_OF_PART[PART_EYES] = REGION_BITS["face"] | REGION_BITS["eyes"]
_REGION_BITS_OF_PART[PART_NOSE] = REGION_BITS["face"] | REGION_BITS["nose"]
_REGION_BITS_OF_PART[PART_MOUTH] = REGION_BITS["face"] | REGION_BITS["mouth"]


def region_mask(labels: np.ndarray, size: int, supersample: int) -> np.ndarray:
    """``(size, size)`` uint8 region bit flags of a ``size * supersample`` square label map.

    A mask pixel carries a region bit when at least half its sub-pixels do.
    """
    bits = _REGION_BITS_OF_PART[labels]
    if supersample <= 1:
        return bits
    # Majority vote per region bit over each supersample x supersample block: the
    # sub-pixel grids bits[i::k, j::k] are (size, size) views, one per block position.
    subs = [
        bits[i::supersample, j::supersample] for i in range(supersample) for j in range(supersample)
    ]
    need = (len(subs) + 1) // 2
    mask = np.zeros((size, size), np.uint8)
    for bit in REGION_BITS.values():
        votes = np.zeros((size, size), np.uint8)
        for sub in subs:
            votes += (sub & bit) > 0
        mask |= (votes >= need).view(np.uint8) * np.uint8(bit)
    return mask
