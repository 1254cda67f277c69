"""The image transform presets: batched uint8 -> normalised float, with the train-time
augmentation (flip, affine, colour jitter) drawn from an optional ``torch.Generator``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from facelens.errors import ConfigError

__all__ = ["ImageTransform", "make_transform"]


class ImageTransform:
    """Batched uint8 -> normalised float transform with optional augmentation.

    Call with a uint8 (or float in 0..255) tensor ``(3, H, W)`` or ``(B, 3, H, W)`` and an
    optional ``torch.Generator``; returns float32 of the same rank at ``input_size``.
    Augmentation (``train=True`` and ``augment > 0``): horizontal flip (p=0.5), a random
    affine (rotation up to 12 deg, scale 1 +/- 0.15, shift up to 8 %, all times ``augment``:
    a random resized crop when it zooms in) and brightness/contrast/saturation jitter of up to
    ``0.3 * augment``.
    """

    def __init__(
        self,
        input_size: int,
        *,
        train: bool,
        augment: float,
        norm_mean: Sequence[float],
        norm_std: Sequence[float],
    ) -> None:
        if input_size < 8:
            raise ConfigError(f"input_size must be >= 8; got {input_size}")
        if not 0.0 <= augment <= 1.0:
            raise ConfigError(f"augment must be in [0, 1]; got {augment}")
        if len(norm_mean) != 3 or len(norm_std) != 3 or min(norm_std) <= 0:
            raise ConfigError(
                f"norm_mean/norm_std need 3 values each (std > 0); got {norm_mean}, {norm_std}"
            )
        self.input_size = int(input_size)
        self.train = bool(train)
        self.augment = float(augment) if train else 0.0
        self.norm_mean = tuple(float(v) for v in norm_mean)
        self.norm_std = tuple(float(v) for v in norm_std)
        self._mean = torch.tensor(self.norm_mean).view(1, 3, 1, 1)
        self._std = torch.tensor(self.norm_std).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return (
            f"ImageTransform(input_size={self.input_size}, train={self.train}, "
            f"augment={self.augment}, norm_mean={self.norm_mean}, norm_std={self.norm_std})"
        )

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (3, H, W) or (B, 3, H, W) images; got {tuple(x.shape)}")
        x = x.float().div_(255.0)  # (B, 3, H, W) in 0..1
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        if self.augment > 0:
            x = self._augment(x, generator)
        x = (x - self._mean.to(x.device)) / self._std.to(x.device)
        return x[0] if single else x

    def _augment(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        # The random draws come from ``gen`` on the CPU whatever device ``x`` is on, so the
        # same seed augments the same way on every device; only the pixel work runs there.
        b, s, dev = x.shape[0], self.augment, x.device

        def uniform(low: float, high: float, n: int = b) -> Tensor:
            return (torch.rand(n, generator=gen) * (high - low) + low).to(dev)

        flip = (torch.rand(b, generator=gen) < 0.5).to(dev)
        angle = uniform(-12.0, 12.0) * s * math.pi / 180.0
        scale = 1.0 + uniform(-0.15, 0.15) * s
        tx, ty = uniform(-0.08, 0.08) * s * 2, uniform(-0.08, 0.08) * s * 2
        # Output -> input sampling grid: rotate/scale, flip x, shift (normalised coordinates).
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        sign = torch.where(flip, -1.0, 1.0)
        theta = torch.stack(
            [torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1
        )  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        j = 0.3 * s
        bright = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        contrast = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        sat = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        x = x * bright
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(0, 1)
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(
            dim=(2, 3), keepdim=True
        )
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - gray) * sat + gray
        return x.clamp_(0.0, 1.0)


def make_transform(
    input_size: int,
    *,
    train: bool,
    augment: float,
    norm_mean: Sequence[float],
    norm_std: Sequence[float],
) -> ImageTransform:
    """Build the image transform preset.

    Args:
        input_size: output side in pixels.
        train: whether augmentation may apply.
        augment: augmentation strength in [0, 1]; 0 means none.
        norm_mean: per-channel mean for normalisation (0..1 scale).
        norm_std: per-channel standard deviation.

    Returns:
        An :class:`ImageTransform` taking ``(3, H, W)`` or ``(B, 3, H, W)`` uint8 tensors
        (and an optional ``torch.Generator``).
    """
    return ImageTransform(
        input_size, train=train, augment=augment, norm_mean=norm_mean, norm_std=norm_std
    )
