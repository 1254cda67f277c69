"""Guided backpropagation (Springenberg et al. 2015), the pixel-level half of Guided Grad-CAM
(Selvaraju et al. 2017: Grad-CAM times guided backpropagation).

The backward rule is the package's own ``pytorch_grad_cam.guided_backprop.GuidedBackpropReLU``
(gradients pass where both the ReLU's input and the incoming gradient are positive). It is
applied through forward hooks on every ``nn.ReLU`` rather than with the package's
``GuidedBackpropReLUModel``, which swaps the model's ReLU modules for new ones and back (the
Grad-CAM target layer, itself a ReLU, would then be a stale object; ``inplace`` is lost; an
error leaves the swap in place) and explains one image for one class index at a time (no
signed attribute targets). Here the model's modules are untouched, the hooks are removed also
on error, whole batches go through at once, targets are any ``pytorch_grad_cam`` target
callables and the parameters' gradients are never written (``torch.autograd.grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLU
from torch import nn

from facelens.device import fp32, model_device

__all__ = ["guided_saliency", "normalise_maps"]


def _guided_relu(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
    # The ReLU's output is positive exactly where its input is (also for in-place ReLUs,
    # whose input tensor is the output): the package's rule masks on it.
    return GuidedBackpropReLU.apply(output)


def guided_saliency(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None,
    batch_size: int,
) -> np.ndarray:
    """Guided-backpropagation saliency of each image for its target, as a 2-D map.

    Args:
        model: the model (left in eval mode; its modules and parameter gradients unchanged).
        images: (B, 3, H, W), normalised for the model.
        targets: one target callable per image (applied to that image's output row, as in
            ``pytorch_grad_cam``); ``None`` = the predicted class.
        batch_size: images per forward/backward pass.

    Returns:
        (B, H, W) float32 >= 0: the largest absolute input gradient over the colour channels
        (unnormalised).
    """
    model.eval()
    device = model_device(model)
    hooks = [
        m.register_forward_hook(_guided_relu) for m in model.modules() if isinstance(m, nn.ReLU)
    ]
    out: list[np.ndarray] = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].detach().to(device).clone()
            chunk.requires_grad_(True)
            with torch.enable_grad(), fp32(device):
                outputs = model(chunk)
                if targets is None:
                    picked = outputs.gather(1, outputs.argmax(dim=1, keepdim=True))
                    score = picked.sum()
                else:
                    rows = targets[start : start + batch_size]
                    score = sum(t(o) for t, o in zip(rows, outputs, strict=True))
                (grad,) = torch.autograd.grad(score, chunk)
            out.append(grad.detach().abs().amax(dim=1).float().cpu().numpy())
    finally:
        for hook in hooks:
            hook.remove()
    return np.concatenate(out, axis=0).astype(np.float32)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Per-image min-max to [0, 1], as the package scales its CAMs (a flat map -> zeros)."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    # no additive epsilon: guided saliencies are tiny numbers (~1e-3), so flat maps only
    scaled = (maps - low) / np.where(span > 0, span, 1.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)
