"""Composite CAM images for MLflow's chart view (``mlflow.log_image(key=..., step=...)``).

MLflow's experiment chart view shows one image card per key, with every selected run's image
for that key side by side. So a key must mean the same picture in every run of a data
version: the probe set is fixed per data version (seeded by id hash, see
:func:`facelens.explain.report.select_probes`), and the keys name the method and the group of
probes, never a run-specific value (a predicted class, a probe's rank).

- expression task: ``cam/<method>/<true class>``: the class's probes (``explain.per_class``,
  3 by default) in columns, the images on top and the method's overlays below. 7 methods x 7
  classes = 49 keys at most.
- attributes task: ``cam/<method>/<attribute>``: the probes in columns, the images on top,
  then the ``+`` and ``-`` target overlays. 7 methods x 4 attributes = 28 keys.

ScoreCAM explains only ``explain.scorecam_images`` probes for the primary target: its images
hold those probes (a class or attribute without any has no ScoreCAM key).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from facelens.data.dataset import FaceDataset
from facelens.explain.cams.methods import method_slug
from facelens.explain.cams.overlays import overlay
from facelens.explain.maps import MethodMaps, hwc
from facelens.explain.plan import Plan

__all__ = ["cam_image_key", "chart_images", "tile"]

#: Each cell is upscaled (nearest) to at least this many pixels: probes are 64 px by default.
MIN_CELL_PX = 96
_GAP_PX = 2
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. ]")


def cam_image_key(method: str, group: str) -> str:
    """``cam/<method slug>/<group>`` with the characters MLflow refuses in image keys
    replaced by ``_`` (``gradcam++`` -> ``gradcampp``)."""
    return f"cam/{method_slug(method)}/{_KEY_BAD.sub('_', group)}"


def tile(rows: Sequence[Sequence[np.ndarray]], min_cell: int = MIN_CELL_PX) -> np.ndarray:
    """Rows of equally sized (H, W, 3) uint8 cells as one image, white gaps between cells,
    each cell upscaled by an integer factor to at least ``min_cell`` pixels high."""
    if not rows or not all(rows):
        raise ValueError("tile needs at least one row and one cell per row.")
    height, width = rows[0][0].shape[:2]
    scale = max(1, math.ceil(min_cell / height))
    cell_h, cell_w = height * scale, width * scale
    n_cols = max(len(r) for r in rows)
    canvas = np.full(
        (len(rows) * (cell_h + _GAP_PX) - _GAP_PX, n_cols * (cell_w + _GAP_PX) - _GAP_PX, 3),
        255,
        dtype=np.uint8,
    )
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            big = np.repeat(np.repeat(np.asarray(cell, dtype=np.uint8), scale, 0), scale, 1)
            top, left = i * (cell_h + _GAP_PX), j * (cell_w + _GAP_PX)
            canvas[top : top + cell_h, left : left + cell_w] = big
    return canvas


def chart_images(
    all_maps: Mapping[str, MethodMaps], plan: Plan, probes: FaceDataset
) -> dict[str, np.ndarray]:
    """Key -> (H, W, 3) uint8 composite (see the module docstring for the keys)."""
    shown = hwc(probes.images)
    out: dict[str, np.ndarray] = {}
    for method, maps in all_maps.items():
        idx = list(maps.idx)
        if plan.explained_class is not None:
            labels = np.asarray(probes.labels)[idx]
            for c in sorted({int(v) for v in labels if v >= 0}):
                pos = np.flatnonzero(labels == c)
                images = [shown[idx[p]] for p in pos]
                overlays = [overlay(shown[idx[p]], maps.primary[p]) for p in pos]
                key = cam_image_key(method, probes.target_names[c])
                out[key] = tile([images, overlays])
            continue
        groups: dict[str, list[str]] = {}
        for label in maps.cams:  # "trustworthy +", "trustworthy -", ...
            groups.setdefault(label.rsplit(" ", 1)[0], []).append(label)
        for attribute, labels in groups.items():
            rows = [[shown[i] for i in idx]]
            rows += [
                [overlay(shown[i], cam) for i, cam in zip(idx, maps.cams[t], strict=True)]
                for t in labels
            ]
            out[cam_image_key(method, attribute)] = tile(rows)
    return out
