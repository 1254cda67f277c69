"""One CAM method's maps on the probe set: every target, plus the primary target on the
randomised copy for the sanity check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facelens.explain.cams.compute import compute_cam_batch
from facelens.explain.params import ExplainParams
from facelens.explain.plan import Plan
from facelens.models.vgg import FaceVGG


@dataclass(frozen=True)
class MethodMaps:
    """One method's maps on the probes ``idx``."""

    idx: list[int]
    cams: dict[str, np.ndarray]  # target label -> (n, H, W) in [0, 1]; first = primary
    raw: np.ndarray  # (n, H, W) primary target, unnormalised
    random_cams: np.ndarray  # (n, H, W) primary target on the randomised model
    random_raw: np.ndarray

    @property
    def primary(self) -> np.ndarray:
        return next(iter(self.cams.values()))


def method_maps(
    method: str,
    model: FaceVGG,
    random_model: FaceVGG,
    x: torch.Tensor,
    plan: Plan,
    params: ExplainParams,
) -> MethodMaps:
    """CAMs of one method for every target, plus the primary target on the randomised copy."""
    # ScoreCAM needs one forward pass per layer channel: a few probes, primary target only.
    slow = method == "scorecam"
    idx = sorted(plan.order[: params.scorecam_images]) if slow else list(range(len(x)))
    targets = dict(list(plan.targets.items())[:1]) if slow else plan.targets
    kw = {"method": method, "batch_size": params.batch_size}
    layer = model.gradcam_layers()[params.layer]
    cams: dict[str, np.ndarray] = {}
    raw = None
    for label, target_list in targets.items():
        batch = compute_cam_batch(model, layer, x[idx], take(target_list, idx), **kw)
        cams[label] = batch.cams
        raw = batch.raw if raw is None else raw
    primary = next(iter(plan.targets.values()))
    random_layer = random_model.gradcam_layers()[params.layer]
    rand = compute_cam_batch(random_model, random_layer, x[idx], take(primary, idx), **kw)
    assert raw is not None  # targets is never empty
    return MethodMaps(idx=idx, cams=cams, raw=raw, random_cams=rand.cams, random_raw=rand.raw)


def take(items: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    return [items[i] for i in idx]


def hwc(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) uint8 -> (B, H, W, 3) uint8."""
    return images.permute(0, 2, 3, 1).contiguous().numpy()
