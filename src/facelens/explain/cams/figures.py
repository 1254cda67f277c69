"""CAM figure builders: each returns a ``Figure`` and never saves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from facelens.explain.cams.overlays import overlay

__all__ = ["attribute_grid", "cam_grid", "method_grid"]


def _new_figure(n_rows: int, n_cols: int, cell: float = 2.0) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(cell * n_cols, cell * n_rows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _name(names: Sequence[str], index: int | None) -> str:
    if index is None or not 0 <= int(index) < len(names):
        return "?"
    return names[int(index)]


def cam_grid(
    images: np.ndarray,
    cams: np.ndarray,
    labels: Sequence[int | None] | None,
    preds: Sequence[int],
    probs: Sequence[float],
    names: Sequence[str],
    title: str = "",
) -> Figure:
    """One row per image: image (true label), heatmap (prediction, probability), overlay.

    Args:
        images: (B, H, W, 3) uint8 RGB.
        cams: (B, H, W) in [0, 1].
        labels: true class per image (None entries or None for unknown).
        preds: predicted class per image.
        probs: probability of the predicted class per image.
        names: class names.
        title: figure title.

    Returns:
        A matplotlib Figure (not saved, not registered with pyplot).
    """
    images = np.asarray(images)
    cams = np.asarray(cams)
    n = len(images)
    if cams.shape[:1] != (n,) or len(preds) != n or len(probs) != n:
        raise ValueError(
            f"Need one cam, prediction and probability per image: {n} images, "
            f"{len(cams)} cams, {len(preds)} preds, {len(probs)} probs."
        )
    if labels is not None and len(labels) != n:
        raise ValueError(f"Got {len(labels)} labels for {n} images.")
    fig, axes = _new_figure(max(n, 1), 3)
    for i in range(n):
        true = "?" if labels is None else _name(names, labels[i])
        axes[i, 0].imshow(images[i], interpolation="nearest")
        axes[i, 0].set_title(f"true: {true}", fontsize=8)
        axes[i, 1].imshow(cams[i], cmap="jet", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes[i, 1].set_title(f"pred: {_name(names, preds[i])} ({float(probs[i]):.2f})", fontsize=8)
        axes[i, 2].imshow(overlay(images[i], cams[i]), interpolation="nearest")
        axes[i, 2].set_title("overlay", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def method_grid(
    image: np.ndarray, cams_by_method: Mapping[str, np.ndarray], title: str = ""
) -> Figure:
    """Compare methods on one image: heatmaps on top, overlays below, the image first.

    Args:
        image: (H, W, 3) uint8 RGB.
        cams_by_method: method name -> (H, W) CAM in [0, 1].
        title: figure title.

    Returns:
        A matplotlib Figure.
    """
    if not cams_by_method:
        raise ValueError("cams_by_method is empty; pass at least one method's CAM.")
    fig, axes = _new_figure(2, 1 + len(cams_by_method))
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].set_title("image", fontsize=8)
    axes[1, 0].axis("off")
    for j, (method, cam) in enumerate(cams_by_method.items(), start=1):
        axes[0, j].imshow(cam, cmap="jet", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes[0, j].set_title(method, fontsize=8)
        axes[1, j].imshow(overlay(image, cam), interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def attribute_grid(
    images: np.ndarray,
    cams_by_attribute: Mapping[str, np.ndarray],
    values: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
) -> Figure:
    """One row per image: the image, then one overlay per attribute target.

    Args:
        images: (B, H, W, 3) uint8 RGB.
        cams_by_attribute: column label (e.g. ``"trustworthy +"``) -> (B, H, W) CAMs.
        values: optional column label -> (B,) predicted scores shown in the titles.
        title: figure title.

    Returns:
        A matplotlib Figure.
    """
    images = np.asarray(images)
    n = len(images)
    if not cams_by_attribute:
        raise ValueError("cams_by_attribute is empty; pass at least one attribute's CAMs.")
    for key, cams in cams_by_attribute.items():
        if len(cams) != n:
            raise ValueError(f"{key!r}: {len(cams)} CAMs for {n} images.")
    fig, axes = _new_figure(max(n, 1), 1 + len(cams_by_attribute))
    for i in range(n):
        axes[i, 0].imshow(images[i], interpolation="nearest")
        for j, (key, cams) in enumerate(cams_by_attribute.items(), start=1):
            axes[i, j].imshow(overlay(images[i], np.asarray(cams)[i]), interpolation="nearest")
            label = key if values is None or key not in values else f"{key} {values[key][i]:.2f}"
            axes[i, j].set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
