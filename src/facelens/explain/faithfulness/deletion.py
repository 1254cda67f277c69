"""Deletion: ROAD (Rong et al. 2022) removes the most / least relevant pixels with a noisy
linear imputation and measures the change of the target score; plus the package's
``CamMultImageConfidenceChange``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from torch import nn

from facelens.device import model_device

__all__ = ["deletion_report"]


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
    device = model_device(model)
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
            result.update(_road(model, inputs, cams_tb, targets, fractions))
    return result


def _road(
    model: nn.Module,
    inputs: torch.Tensor,
    cams: np.ndarray,
    targets: list[Callable[[torch.Tensor], torch.Tensor]],
    fractions: Sequence[float],
) -> dict[str, float]:
    """ROAD MoRF / LeRF score changes per removal fraction and their combined score."""
    result: dict[str, float] = {}
    combined = []
    for f in fractions:
        percentile = 100.0 * (1.0 - f)
        # MoRF(p) keeps pixels below the p-th percentile: removes the top (1 - p/100).
        morf = ROADMostRelevantFirst(percentile=percentile)(inputs, cams, targets, model)
        # LeRF(p) works on 1 - cam: removes the bottom (1 - p/100).
        lerf = ROADLeastRelevantFirst(percentile=percentile)(inputs, cams, targets, model)
        pct = round(100 * f)
        result[f"road_morf_{pct}"] = float(np.mean(morf))
        result[f"road_lerf_{pct}"] = float(np.mean(lerf))
        combined.append(float(np.mean((lerf - morf) / 2.0)))
    result["road_combined"] = float(np.mean(combined))
    return result
