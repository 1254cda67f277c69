"""Localization: does a CAM put its energy on the face regions whose action units define the
expression (:data:`CLASS_REGIONS`)? :func:`localization_lift` is the fraction of CAM energy
inside the region divided by the region's area fraction (1.0 = chance).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from facelens.constants import EXPRESSIONS, REGION_BITS

__all__ = [
    "CLASS_REGIONS",
    "localization_lift",
    "localization_report",
    "pointing_hit",
    "region_mask",
]


#: Expression -> regions holding the action units that define it (FACS/EMFACS prototypes):
#: happy AU6+12 (cheeks/eyes, lip corners); sad AU1+4+15 (brows, lip corners); surprise
#: AU1+2+5+26 (brows, upper lids, jaw); fear AU1+2+4+5+20+26; angry AU4+5+7+23 (brows, lids,
#: lips); disgust AU9+15(+10) (nose wrinkle, lips); neutral has none and is skipped.
CLASS_REGIONS: dict[str, tuple[str, ...]] = {
    "angry": ("brows", "eyes", "mouth"),
    "disgust": ("nose", "mouth"),
    "fear": ("brows", "eyes", "mouth"),
    "happy": ("mouth", "eyes"),
    "sad": ("brows", "mouth"),
    "surprise": ("brows", "eyes", "mouth"),
    "neutral": (),
}


def region_mask(mask: np.ndarray, regions: Iterable[str]) -> np.ndarray:
    """Select regions from a bit-flag mask.

    Args:
        mask: (H, W) uint8, each pixel the OR of ``REGION_BITS`` of the regions covering it.
        regions: region names (keys of ``REGION_BITS``).

    Returns:
        (H, W) bool, True where any of the regions is present.
    """
    regions = list(regions)
    unknown = [r for r in regions if r not in REGION_BITS]
    if unknown:
        raise ValueError(f"Unknown region(s) {unknown}; allowed: {list(REGION_BITS)}.")
    bits = 0
    for r in regions:
        bits |= REGION_BITS[r]
    return (np.asarray(mask).astype(np.int64) & bits) != 0


def _check_cam_and_mask(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if cam.ndim != 2 or cam.shape != mask.shape:
        raise ValueError(
            f"cam and region mask must be (H, W) of the same shape, got {cam.shape} and "
            f"{mask.shape}; resize the CAM to the mask size first."
        )
    if not np.isfinite(cam).all() or (cam < 0).any():
        raise ValueError("cam must be finite and non-negative (a CAM, not a raw signed map).")
    return cam, mask


def localization_lift(
    cam: np.ndarray, region_mask: np.ndarray, within: np.ndarray | None = None
) -> float:
    """Energy fraction of the CAM inside a region divided by the region's area fraction.

    ``lift = (sum(cam[region]) / sum(cam)) / (|region| / |image|)``: 1.0 is what a uniform map
    gets, ``1 / area_fraction`` the maximum (all energy inside). With ``within`` (e.g. the face
    mask) both sums and areas are restricted to that support, so a CAM that merely lights the
    whole face scores 1.0.

    Args:
        cam: (H, W) non-negative map.
        region_mask: (H, W) bool.
        within: optional (H, W) bool support.

    Returns:
        The lift; NaN when the CAM has no energy or the region is empty (inside ``within``).
    """
    cam, region = _check_cam_and_mask(cam, region_mask)
    if within is not None:
        _, support = _check_cam_and_mask(cam, within)
        cam = np.where(support, cam, 0.0)
        region = region & support
        area = support.sum()
    else:
        area = region.size
    total = cam.sum()
    n_region = region.sum()
    if total <= 0 or n_region == 0 or area == 0:
        return math.nan
    return float((cam[region].sum() / total) / (n_region / area))


def pointing_hit(cam: np.ndarray, region_mask: np.ndarray) -> bool:
    """Pointing game: is the CAM's maximum inside the region (any of the tied maxima)?"""
    cam, region = _check_cam_and_mask(cam, region_mask)
    peak = cam == cam.max()
    return bool((peak & region).any())


def _resize_to(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == shape:
        return cam
    return cv2.resize(cam, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def localization_report(
    cams: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    class_names: Sequence[str] = EXPRESSIONS,
    class_regions: Mapping[str, Sequence[str]] = CLASS_REGIONS,
) -> dict[str, Any]:
    """Aggregate localization over a probe set, per class and overall (neutral skipped).

    CAMs are resized to the mask size when they differ (bilinear). For every image with a label
    whose class has regions: ``lift`` (whole image), ``lift_in_face`` (within the face mask,
    when the mask has a face bit) and ``pointing`` (peak in region).

    Args:
        cams: (N, h, w) non-negative CAMs.
        masks: (N, H, W) uint8 bit-flag region masks.
        labels: (N,) class indices (negative or NaN = unlabelled, skipped).
        class_names: names of the class indices.
        class_regions: class name -> region names (empty = skip the class).

    Returns:
        ``{"per_class": {name: {"regions", "n", "lift", "lift_in_face", "pointing"}},
        "mean_lift", "mean_lift_in_face", "mean_pointing"`` (macro over classes with images),
        ``"n_images"`` (scored) and ``"n_skipped"``.
    """
    cams = np.asarray(cams)
    masks = np.asarray(masks)
    label_arr = np.asarray(labels, dtype=float)
    if not (len(cams) == len(masks) == len(label_arr)):
        raise ValueError(
            f"Need one CAM, mask and label per image: {len(cams)} cams, {len(masks)} masks, "
            f"{len(label_arr)} labels."
        )
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) bit-flag arrays, got shape {masks.shape}.")
    values: dict[str, dict[str, list[float]]] = {}
    skipped = 0
    for cam, mask, label in zip(cams, masks, label_arr, strict=True):
        scored = _score_image(cam, mask, label, class_names, class_regions)
        if scored is None:
            skipped += 1
            continue
        name, scores = scored
        entry = values.setdefault(name, {"lift": [], "lift_in_face": [], "pointing": []})
        for key, value in scores.items():
            entry[key].append(value)

    per_class: dict[str, dict[str, Any]] = {}
    for name in class_names:
        if name not in values:
            continue
        v = values[name]
        per_class[name] = {
            "regions": list(class_regions[name]),
            "n": len(v["lift"]),
            "lift": _nanmean(v["lift"]),
            "lift_in_face": _nanmean(v["lift_in_face"]),
            "pointing": _nanmean(v["pointing"]),
        }
    return {
        "per_class": per_class,
        "mean_lift": _nanmean([c["lift"] for c in per_class.values()]),
        "mean_lift_in_face": _nanmean([c["lift_in_face"] for c in per_class.values()]),
        "mean_pointing": _nanmean([c["pointing"] for c in per_class.values()]),
        "n_images": int(sum(c["n"] for c in per_class.values())),
        "n_skipped": skipped,
    }


def _nanmean(xs: Sequence[float]) -> float:
    arr = np.asarray(xs, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _score_image(
    cam: np.ndarray,
    mask: np.ndarray,
    label: float,
    class_names: Sequence[str],
    class_regions: Mapping[str, Sequence[str]],
) -> tuple[str, dict[str, float]] | None:
    """``(class name, {"lift", "pointing"[, "lift_in_face"]})`` of one image, or None when it
    cannot be scored (unlabelled, a class without regions, an empty region, a flat map)."""
    if not np.isfinite(label) or not 0 <= label < len(class_names):
        return None
    name = class_names[int(label)]
    regions = tuple(class_regions.get(name, ()))
    target = region_mask(mask, regions) if regions else None
    if target is None or not target.any():
        return None
    cam_r = _resize_to(cam, mask.shape)
    lift = localization_lift(cam_r, target)
    if math.isnan(lift):
        return None
    scores = {"lift": lift, "pointing": float(pointing_hit(cam_r, target))}
    face = region_mask(mask, ("face",))
    if face.any():
        scores["lift_in_face"] = localization_lift(cam_r, target, within=face)
    return name, scores
