"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"):
a map that barely changes when the top layers are re-initialised (:func:`randomized_copy`)
does not explain the trained model. :func:`sanity_check` reports the Spearman rank
correlation between the maps of the trained and the randomised model.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy import stats
from torch import nn

from facelens.explain.cams.overlays import overlay

__all__ = [
    "DEFAULT_SANITY_THRESHOLD",
    "randomized_copy",
    "sanity_check",
    "sanity_figure",
    "top_layer_names",
]


#: Mean Spearman correlation (trained vs randomised maps) above which a method is flagged as
#: insensitive to the model's weights.
DEFAULT_SANITY_THRESHOLD: float = 0.3


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
