"""Batched CAM computation with hook release on error, parameter gradients restored, and the
raw (layer-resolution, unclipped, unnormalised) maps beside the normalised ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn

from facelens.device import fp32, model_device
from facelens.errors import CamError
from facelens.explain.cams.guided import guided_saliency, normalise_maps
from facelens.explain.cams.methods import (
    GUIDED_METHODS,
    METHODS,
    SCORECAM_MAX_IMAGES,
    resolve_method,
)

__all__ = ["CamBatch", "compute_cam_batch"]


@dataclass(frozen=True)
class CamBatch:
    """CAMs for a batch of images.

    Attributes:
        cams: (B, H, W) float32 in [0, 1]: the package's maps (ReLU, per-image min-max
            normalised, resized to the input size).
        raw: (B, H, W) float32: the same maps before ReLU and normalisation (the method's
            weighted activations at layer resolution), bilinearly upsampled to the input size.
            Use them where the clipping to zero would create ties (rank correlations).
        method: canonical method name.
    """

    cams: np.ndarray
    raw: np.ndarray
    method: str


class _RawCaptureMixin:
    """Records every ``get_cam_image`` result (the unclipped, unnormalised layer map)."""

    _facelens_raw: list[np.ndarray]

    def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
        cam = super().get_cam_image(*args, **kwargs)  # type: ignore[misc]
        self._facelens_raw.append(np.asarray(cam, dtype=np.float32))
        return cam


@cache
def _capturing_class(cls: type[BaseCAM]) -> type[BaseCAM]:
    return type(f"_Raw{cls.__name__}", (_RawCaptureMixin, cls), {})


def compute_cam_batch(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    method: str = "gradcam",
    batch_size: int = 16,
    *,
    score_batch_size: int = 16,
    max_scorecam_images: int = SCORECAM_MAX_IMAGES,
) -> CamBatch:
    """Compute CAMs (normalised and raw) for a batch of images.

    Hooks are registered once, through the package's context manager, and released when the
    block exits, also on error. The model is put in eval mode (and left there); the gradients
    of its parameters are restored to what they were before the call.

    Args:
        model: any module mapping (B, 3, H, W) to (B, K).
        layer: the target layer (a submodule of ``model``).
        images: (B, 3, H, W) float tensor, already normalised for the model.
        targets: one target per image (see :func:`make_targets`); None explains the
            predicted class.
        method: a key of :data:`METHODS`.
        batch_size: images per forward/backward pass.
        score_batch_size: ScoreCAM only: masked images per forward pass.
        max_scorecam_images: ScoreCAM only: refuse larger batches (it is slow, see
            :data:`SCORECAM_MAX_IMAGES`).

    Returns:
        A :class:`CamBatch` with ``cams`` and ``raw`` of shape (B, H, W).

    Raises:
        ValueError: bad shapes, sizes or method.
        CamError: the package failed on an index error (e.g. target index >= K).
    """
    method = resolve_method(method)
    _check_inputs(model, layer, images, targets, method, batch_size, score_batch_size)
    n_images = images.shape[0]
    if method == "scorecam" and n_images > max_scorecam_images:
        raise ValueError(
            f"ScoreCAM on {n_images} images exceeds max_scorecam_images={max_scorecam_images}: "
            "it needs one forward pass per layer channel per image. Use a smaller probe set or "
            "raise the cap explicitly."
        )
    saved_grads = {name: p.grad for name, p in model.named_parameters()}
    cam_cls = _capturing_class(METHODS[method])
    try:
        with torch.enable_grad(), cam_cls(model=model, target_layers=[layer]) as cam:
            if method == "scorecam":
                cam.batch_size = score_batch_size
            cams, raws = _run(cam, method, images.detach(), targets, batch_size)
    finally:
        for name, p in model.named_parameters():
            p.grad = saved_grads.get(name)
    out = np.nan_to_num(np.concatenate(cams, axis=0), nan=0.0, posinf=1.0, neginf=0.0)
    out, raw = np.clip(out, 0.0, 1.0), np.concatenate(raws, axis=0)
    if method in GUIDED_METHODS:  # the CAM times the guided-backpropagation saliency
        saliency = guided_saliency(model, images.detach(), targets, batch_size)
        out, raw = normalise_maps(out * saliency), raw * saliency
    return CamBatch(cams=out.astype(np.float32), raw=raw.astype(np.float32), method=method)


def _upsample(raw: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, h, w) -> (B, H, W) bilinear, half-pixel centres (as cv2.resize in the package)."""
    tensor = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))[:, None]
    up = torch.nn.functional.interpolate(
        tensor, size=(height, width), mode="bilinear", align_corners=False
    )
    return up[:, 0].numpy().astype(np.float32)


def _check_inputs(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None,
    method: str,
    batch_size: int,
    score_batch_size: int,
) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}.")
    n_images = images.shape[0]
    if targets is not None and len(targets) != n_images:
        raise ValueError(f"Got {len(targets)} targets for {n_images} images; pass one per image.")
    if batch_size < 1 or score_batch_size < 1:
        raise ValueError(
            f"batch_size and score_batch_size must be >= 1, got {batch_size}, {score_batch_size}."
        )
    if not any(m is layer for m in model.modules()):
        raise ValueError(
            f"layer {type(layer).__name__} is not a submodule of the model; pass one of its "
            "modules (e.g. a value of FaceVGG.gradcam_layers())."
        )


def _run(
    cam: BaseCAM,
    method: str,
    source: torch.Tensor,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None,
    batch_size: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The normalised and raw maps of ``source`` (B, 3, H, W), ``batch_size`` images at a time."""
    height, width = source.shape[2:]
    device = model_device(cam.model)
    cams: list[np.ndarray] = []
    raws: list[np.ndarray] = []
    for start in range(0, len(source), batch_size):
        # A fresh leaf that requires grad: the target layer's output then carries a graph
        # even when every parameter of the model is frozen.
        chunk = source[start : start + batch_size].to(device).clone()
        chunk.requires_grad_(cam.uses_gradients)
        chunk_targets = None if targets is None else list(targets[start : start + batch_size])
        cam._facelens_raw = []
        try:
            with fp32(device):  # maps never depend on the precision the caller runs in
                maps = cam(input_tensor=chunk, targets=chunk_targets)
        except IndexError as exc:
            raise CamError(
                f"{method} failed with IndexError: {exc}. Check that target indices are "
                "below the number of model outputs and that the layer is used in forward."
            ) from exc
        if not cam._facelens_raw:
            raise CamError(f"{method} produced no layer map; is the layer used in forward?")
        cams.append(np.asarray(maps, dtype=np.float32))
        raws.append(_upsample(cam._facelens_raw[0], height, width))
    return cams, raws
