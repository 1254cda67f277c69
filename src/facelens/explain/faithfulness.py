"""Is a CAM faithful? Localization against region masks, randomisation sanity check, deletion.

Three complementary checks, all pure functions returning JSON-serialisable dicts:

* **localization** — does the CAM put its energy on the face regions whose action units define
  the expression (:data:`CLASS_REGIONS`)? :func:`localization_lift` is the fraction of CAM energy
  inside the region divided by the region's area fraction (1.0 = chance).
* **model randomisation** (Adebayo et al. 2018, "Sanity Checks for Saliency Maps") — a map
  that barely changes when the top layers are re-initialised (:func:`randomized_copy`) does not
  explain the trained model. :func:`sanity_check` reports the Spearman rank correlation between
  maps of the trained and the randomised model.
* **deletion** — ROAD (Rong et al. 2022) removes the most / least relevant pixels with a noisy
  linear imputation and measures the change of the target score; plus the package's
  ``CamMultImageConfidenceChange``.

:func:`faithfulness_summary` bundles the reports (NaN -> None) for
``reports/explain/faithfulness.json``; :func:`summary_metrics` flattens it for MLflow.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from scipy import stats
from torch import nn

from facelens.constants import EXPRESSIONS, REGION_BITS
from facelens.explain.cams import overlay

__all__ = [
    "CLASS_REGIONS",
    "DEFAULT_SANITY_THRESHOLD",
    "deletion_report",
    "faithfulness_summary",
    "localization_lift",
    "localization_report",
    "pointing_hit",
    "randomized_copy",
    "region_mask",
    "sanity_check",
    "sanity_figure",
    "summary_metrics",
    "top_layer_names",
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

#: Mean Spearman correlation (trained vs randomised maps) above which a method is flagged as
#: insensitive to the model's weights.
DEFAULT_SANITY_THRESHOLD: float = 0.5


# --------------------------------------------------------------------------- localization


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
        if not np.isfinite(label) or not 0 <= label < len(class_names):
            skipped += 1
            continue
        name = class_names[int(label)]
        regions = tuple(class_regions.get(name, ()))
        target = region_mask(mask, regions) if regions else None
        if target is None or not target.any():
            skipped += 1
            continue
        cam_r = _resize_to(cam, mask.shape)
        lift = localization_lift(cam_r, target)
        if math.isnan(lift):
            skipped += 1
            continue
        face = region_mask(mask, ("face",))
        entry = values.setdefault(name, {"lift": [], "lift_in_face": [], "pointing": []})
        entry["lift"].append(lift)
        if face.any():
            entry["lift_in_face"].append(localization_lift(cam_r, target, within=face))
        entry["pointing"].append(float(pointing_hit(cam_r, target)))

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


# --------------------------------------------------------------------- model randomisation


def _param_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules owning parameters directly, in registration order."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]


def top_layer_names(model: nn.Module, n: int) -> list[str]:
    """Names of the last ``n`` modules that own parameters (registration order).

    For torchvision's ``vgg16_bn``, ``n=3`` is the three classifier Linear layers and ``n=9``
    adds the last conv block (3 conv + 3 batch-norm).
    """
    layers = _param_modules(model)
    if not 1 <= n <= len(layers):
        raise ValueError(f"n must be in 1..{len(layers)} (modules with parameters), got {n}.")
    return [name for name, _ in layers[-n:]]


def randomized_copy(model: nn.Module, top_layers: int | Sequence[str], seed: int) -> nn.Module:
    """Deep copy of ``model`` with its top layers re-initialised (cascading randomisation).

    Each selected module (and its submodules) gets ``reset_parameters()`` under a seeded RNG
    (the global RNG state is restored afterwards); modules without ``reset_parameters`` get
    N(0, 0.02) weights and zero biases. Batch-norm running statistics are reset too. The
    original is not touched; the copy is in eval mode.

    Args:
        model: the trained model.
        top_layers: how many parameter-owning modules from the top (see
            :func:`top_layer_names`), or qualified module names (e.g. ``["classifier",
            "features.40"]``).
        seed: re-initialisation seed.

    Returns:
        The randomised copy.
    """
    if isinstance(top_layers, int):
        names = top_layer_names(model, top_layers)
    else:
        names = list(top_layers)
        known = dict(model.named_modules())
        unknown = [n for n in names if n not in known or n == ""]
        if unknown or not names:
            sample = [n for n, _ in _param_modules(model)][-8:]
            raise ValueError(
                f"Unknown module name(s) {unknown or names}; pass qualified names from "
                f"model.named_modules(), e.g. {sample}."
            )
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name in names:
            for sub in modules[name].modules():
                _reinit(sub)
    return clone.eval()


def _reinit(module: nn.Module) -> None:
    if hasattr(module, "reset_running_stats"):
        module.reset_running_stats()
    own = list(module.named_parameters(recurse=False))
    if not own:
        return
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    for pname, p in own:
        if pname.endswith("bias"):
            p.zero_()
        else:
            p.normal_(0.0, 0.02)


def sanity_check(
    cams_trained: np.ndarray,
    cams_random: np.ndarray,
    *,
    threshold: float = DEFAULT_SANITY_THRESHOLD,
) -> dict[str, Any]:
    """Spearman rank correlation between maps of the trained and the randomised model.

    A faithful method's maps change when the weights they explain are randomised, so the
    correlation should be low. Identical maps (including identical constant ones) count as 1.0;
    a constant map against a varying one is undefined (NaN, excluded from the mean).
    ReLU-clipped CAMs have many tied zeros; :attr:`CamBatch.raw` maps avoid those ties.

    Args:
        cams_trained: (N, H, W) maps of the trained model.
        cams_random: (N, H, W) maps of the randomised model, same images and targets.
        threshold: flag the method as weight-insensitive when the mean exceeds this.

    Returns:
        ``spearman_mean``, ``spearman_median``, ``spearman_min``, ``spearman_max``,
        ``spearman_per_image`` (list), ``n_images``, ``n_undefined``, ``threshold``,
        ``insensitive`` (bool: flagged) and ``passed`` (its negation).
    """
    a = np.asarray(cams_trained, dtype=np.float64)
    b = np.asarray(cams_random, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3 or len(a) == 0:
        raise ValueError(
            f"cams_trained and cams_random must both be (N, H, W) with N >= 1, got {a.shape} "
            f"and {b.shape}."
        )
    rhos = [_spearman(x.ravel(), y.ravel()) for x, y in zip(a, b, strict=True)]
    finite = np.asarray([r for r in rhos if math.isfinite(r)], dtype=float)
    mean = float(finite.mean()) if finite.size else math.nan
    insensitive = bool(math.isfinite(mean) and mean > threshold)
    return {
        "spearman_mean": mean,
        "spearman_median": float(np.median(finite)) if finite.size else math.nan,
        "spearman_min": float(finite.min()) if finite.size else math.nan,
        "spearman_max": float(finite.max()) if finite.size else math.nan,
        "spearman_per_image": rhos,
        "n_images": len(rhos),
        "n_undefined": len(rhos) - int(finite.size),
        "threshold": float(threshold),
        "insensitive": insensitive,
        "passed": bool(math.isfinite(mean) and not insensitive),
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.array_equal(x, y):
        return 1.0
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


def sanity_figure(
    images: np.ndarray,
    cams_trained: np.ndarray,
    cams_random: np.ndarray,
    rhos: Sequence[float] | None = None,
    title: str = "",
) -> Figure:
    """Side by side per image: image, trained-model overlay, randomised-model overlay.

    Args:
        images: (N, H, W, 3) uint8 RGB.
        cams_trained: (N, H, W) in [0, 1].
        cams_random: (N, H, W) in [0, 1].
        rhos: optional per-image Spearman correlations for the titles.
        title: figure title.

    Returns:
        A matplotlib Figure (not saved).
    """
    n = len(images)
    if len(cams_trained) != n or len(cams_random) != n:
        raise ValueError(
            f"{n} images, {len(cams_trained)} trained and {len(cams_random)} random CAMs."
        )
    fig = Figure(figsize=(6.0, 2.0 * max(n, 1) + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(max(n, 1), 3, squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for i in range(n):
        axes[i, 0].imshow(images[i], interpolation="nearest")
        axes[i, 1].imshow(overlay(images[i], cams_trained[i]), interpolation="nearest")
        axes[i, 1].set_title("trained", fontsize=8)
        axes[i, 2].imshow(overlay(images[i], cams_random[i]), interpolation="nearest")
        rho = "" if rhos is None else f" (rho={rhos[i]:.2f})"
        axes[i, 2].set_title(f"randomized{rho}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ------------------------------------------------------------------------------- deletion


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run in eval mode (no batch-norm statistics updates), restoring the previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def deletion_report(
    model: nn.Module,
    images: torch.Tensor,
    cams: np.ndarray,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    *,
    removal_fractions: Sequence[float] = (0.2, 0.5, 0.8),
    seed: int = 0,
    road: bool = True,
) -> dict[str, float]:
    """Deletion-style faithfulness on a probe batch.

    For each fraction ``f``, ROAD MoRF removes the ``f`` most relevant pixels and LeRF the ``f``
    least relevant ones (noisy linear imputation); each reports the mean change of the target
    score (after - before). A faithful map has a strongly negative MoRF and a small LeRF;
    ``road_combined`` = mean over fractions of (LeRF - MoRF) / 2 (higher is better).
    ``confidence_change`` multiplies the input by the CAM (``CamMultImageConfidenceChange``).

    CAMs get a seeded tie-break of at most 1e-6 first: the package thresholds at a percentile
    with a strict ``<``, so a map whose lower half is exactly 0 would otherwise lose all pixels.
    The imputer's noise is seeded too (the global RNG state is restored afterwards).

    Args:
        model: the explained model (run in eval mode, previous mode restored).
        images: (B, 3, H, W) normalised inputs.
        cams: (B, H, W) CAMs in [0, 1].
        targets: one score function per image (see ``make_targets``; ``softmax=True`` makes
            the scores probabilities).
        removal_fractions: fractions of pixels removed, each in (0, 1).
        seed: seed of tie-breaking and imputation noise.
        road: skip ROAD (slow: one sparse solve per image and fraction) when False.

    Returns:
        Flat dict of floats: ``score_before``, ``confidence_change``, ``confidence_drop``,
        ``confidence_increase_rate`` and, with ROAD, ``road_morf_<pct>``, ``road_lerf_<pct>``,
        ``road_combined``, plus ``n_images``.
    """
    n = images.shape[0]
    cams = np.asarray(cams, dtype=np.float32)
    if images.ndim != 4 or cams.shape != (n, *images.shape[2:]):
        raise ValueError(
            f"Need images (B, 3, H, W) and cams (B, H, W) of the same B, H, W; got "
            f"{tuple(images.shape)} and {cams.shape}."
        )
    if len(targets) != n:
        raise ValueError(f"Got {len(targets)} targets for {n} images.")
    fractions = [float(f) for f in removal_fractions]
    if any(not 0.0 < f < 1.0 for f in fractions):
        raise ValueError(f"removal_fractions must lie in (0, 1), got {list(removal_fractions)}.")
    device = next(model.parameters()).device
    inputs = images.detach().to(device)
    targets = list(targets)
    rng = np.random.default_rng(seed)
    cams_tb = (np.clip(cams, 0.0, 1.0) + rng.uniform(0.0, 1e-6, size=cams.shape)).astype(np.float32)

    result: dict[str, float] = {"n_images": float(n)}
    with _eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        before = np.float32(
            [t(o).cpu().numpy() for t, o in zip(targets, model(inputs), strict=True)]
        )
        change = CamMultImageConfidenceChange()(inputs, cams, targets, model)
        result["score_before"] = float(np.mean(before))
        result["confidence_change"] = float(np.mean(change))
        result["confidence_drop"] = float(np.mean(np.maximum(-change, 0.0)))
        result["confidence_increase_rate"] = float(np.mean(change > 0))
        if road:
            combined = []
            for f in fractions:
                percentile = 100.0 * (1.0 - f)
                # MoRF(p) keeps pixels below the p-th percentile: removes the top (1 - p/100).
                morf = ROADMostRelevantFirst(percentile=percentile)(inputs, cams_tb, targets, model)
                # LeRF(p) works on 1 - cam: removes the bottom (1 - p/100).
                lerf = ROADLeastRelevantFirst(percentile=percentile)(
                    inputs, cams_tb, targets, model
                )
                pct = round(100 * f)
                result[f"road_morf_{pct}"] = float(np.mean(morf))
                result[f"road_lerf_{pct}"] = float(np.mean(lerf))
                combined.append(float(np.mean((lerf - morf) / 2.0)))
            result["road_combined"] = float(np.mean(combined))
    return result


# -------------------------------------------------------------------------------- summary


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"Cannot serialise {type(value).__name__} to JSON: {value!r}.")


def faithfulness_summary(
    *,
    localization: Mapping[str, Any] | None = None,
    sanity: Mapping[str, Any] | None = None,
    deletion: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Bundle the reports into one JSON-serialisable dict (NaN/inf become None).

    Args:
        localization: :func:`localization_report` output (or a method -> report mapping).
        sanity: :func:`sanity_check` output (or a method -> report mapping).
        deletion: :func:`deletion_report` output (or a method -> report mapping).
        meta: context such as method, layer, target kind, probe-set size, data version.

    Returns:
        ``{"meta": ..., "localization": ..., "sanity": ..., "deletion": ...}`` (absent parts
        omitted), safe for ``json.dump(..., allow_nan=False)``.
    """
    parts = {"meta": meta, "localization": localization, "sanity": sanity, "deletion": deletion}
    return {k: _jsonable(v) for k, v in parts.items() if v is not None}


def summary_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten the numeric leaves of a summary into ``a.b.c -> float`` (for MLflow metrics).

    Lists, strings and None are dropped; booleans become 0.0 / 1.0.
    """
    flat: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(summary_metrics(value, prefix=f"{name}."))
        elif isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
            v = float(value)
            if math.isfinite(v):
                flat[name] = v
    return flat
