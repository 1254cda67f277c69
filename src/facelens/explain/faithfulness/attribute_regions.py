"""Localization for the attributes task: which SynthFACS face regions drive each simulated
attribute (:func:`attribute_regions`, read off the rating model of
:mod:`facelens.data.synthfacs.ratings`), and whether an attribute map puts its energy there
(:func:`attribute_localization`, a check that fails for a map that ignores those regions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from facelens.constants import ATTRIBUTES
from facelens.data.synthfacs.cues import CUES
from facelens.data.synthfacs.ratings import _TRAIT_WEIGHTS, TRAITS, attribute_model
from facelens.explain.faithfulness.localization import localization_report

__all__ = ["CUE_REGIONS", "attribute_localization", "attribute_regions", "region_weights"]

#: Cue -> inner face region -> share of the cue drawn there (:mod:`.cues`: the action units'
#: coefficients: AU1/2/4 brows, AU5/6/7 eyes, AU9 nose, AU10/12/15/16/20/23/26 mouth; glasses,
#: eye size and spacing in the eyes). Face shape, skin and hair cues (roundness, fwhr,
#: asymmetry, blemish, extremeness, hair, bald, face length) lie outside these regions.
CUE_REGIONS: dict[str, dict[str, float]] = {
    "valence": {"brows": 0.6, "eyes": 0.75, "nose": 0.5, "mouth": 2.75},
    "smile": {"mouth": 1.0},
    "arousal": {"brows": 2.0, "eyes": 1.0, "nose": 1.0, "mouth": 3.0},
    "worry": {"brows": 1.0, "mouth": 1.0},
    "eye_size": {"eyes": 1.0},
    "rest_smile": {"mouth": 1.0},
    "glasses": {"eyes": 1.0},
    "eye_spacing": {"eyes": 1.0},
    "brow_thickness": {"brows": 1.0},
}
#: A region drives an attribute when it carries at least this share of the attribute's weight
#: on the inner regions.
DRIVING_SHARE = 0.25


def region_weights(attribute: str) -> dict[str, float]:
    """Share of ``attribute``'s face-cue weight drawn in each inner region, plus ``outside``.

    The weight of cue ``c`` is ``|sum_t W[c, t] L[a, t]|`` (trait weights of the cue times the
    attribute's loadings on the traits, the whitening step left out), split over the regions by
    :data:`CUE_REGIONS`; the shares sum to 1.
    """
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; allowed: {list(ATTRIBUTES)}")
    loadings = attribute_model()["loadings"][list(ATTRIBUTES).index(attribute)]
    weights = {"brows": 0.0, "eyes": 0.0, "nose": 0.0, "mouth": 0.0, "outside": 0.0}
    for cue in CUES:
        w = abs(float(np.dot(_TRAIT_WEIGHTS.get(cue, (0.0,) * len(TRAITS)), loadings)))
        split = CUE_REGIONS.get(cue, {"outside": 1.0})
        total = sum(split.values())
        for region, share in split.items():
            weights[region] += w * share / total
    norm = sum(weights.values()) or 1.0
    return {k: v / norm for k, v in weights.items()}


def attribute_regions(attribute: str) -> tuple[str, ...]:
    """Inner regions carrying at least :data:`DRIVING_SHARE` of ``attribute``'s inner weight."""
    w = region_weights(attribute)
    inner = {k: v for k, v in w.items() if k != "outside"}
    total = sum(inner.values())
    if total <= 0:
        return ()
    return tuple(k for k, v in inner.items() if v / total >= DRIVING_SHARE)


def attribute_localization(
    cams: np.ndarray,
    masks: np.ndarray,
    attribute: str,
    *,
    regions: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """Localization of one attribute's maps against its driving regions, with a verdict.

    ``lift_in_face`` is the CAM energy share in the driving regions over their area share,
    both within the face (1.0 = a map spread evenly over the face); the check ``passed`` when
    it exceeds 1.0, so a map on the face but off the driving regions fails.

    Args:
        cams: (N, h, w) non-negative maps of ``attribute``'s target.
        masks: (N, H, W) SynthFACS bit-flag region masks.
        attribute: the explained attribute.
        regions: attribute -> regions, overriding :func:`attribute_regions` (tests).

    Returns:
        :func:`~.localization.localization_report`'s keys plus ``attribute``, ``regions``,
        ``region_weights``, ``passed`` (bool) and ``threshold`` (1.0).
    """
    chosen = (regions or {}).get(attribute) or attribute_regions(attribute)
    report = localization_report(
        cams,
        masks,
        np.zeros(len(cams)),
        class_names=(attribute,),
        class_regions={attribute: chosen},
    )
    lift = report["mean_lift_in_face"]
    return {
        **report,
        "attribute": attribute,
        "regions": list(chosen),
        "region_weights": region_weights(attribute),
        "threshold": 1.0,
        "passed": bool(math.isfinite(lift) and lift > 1.0),
    }
